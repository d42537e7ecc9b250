// A bad setting stops the daemon with exit status 2 and one line naming the variable,
// the value given and what is expected: no stack trace, no silent default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers.mjs';

const cases = [
  ['non-numeric port', { MANAGER_GRPC_PORT: 'abc' }, 'MANAGER_GRPC_PORT', 'abc', /port number in 1\.\.65535/],
  ['port zero', { MANAGER_HTTP_PORT: '0' }, 'MANAGER_HTTP_PORT', '0', /1\.\.65535/],
  ['port too big', { MANAGER_GRPC_PORT: '65536' }, 'MANAGER_GRPC_PORT', '65536', /1\.\.65535/],
  ['negative port', { MANAGER_QEMU_HOST_FWD_AGENT: '-5' }, 'MANAGER_QEMU_HOST_FWD_AGENT', '-5', /1\.\.65535/],
  ['non-numeric count', { MANAGER_MAX_VMS: 'ten' }, 'MANAGER_MAX_VMS', 'ten', /non-negative integer/],
  ['fractional cpu count', { MANAGER_QEMU_SMP_COUNT: '2.5' }, 'MANAGER_QEMU_SMP_COUNT', '2.5', /positive integer/],
  ['memory without unit', { MANAGER_QEMU_MEMORY_SIZE: '2048' }, 'MANAGER_QEMU_MEMORY_SIZE', '2048', /like 2048M, 4G or 30G/],
  ['memory with bad unit', { MANAGER_QEMU_MAX_MEMORY: '30GB' }, 'MANAGER_QEMU_MAX_MEMORY', '30GB', /like 2048M/],
  ['range not A-B', { MANAGER_QEMU_HOST_FWD_RANGE: '6100' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '6100', /first-last/],
  ['range reversed', { MANAGER_QEMU_HOST_FWD_RANGE: '6200-6100' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '6200-6100', /first <= last/],
  ['range beyond 65535', { MANAGER_QEMU_HOST_FWD_RANGE: '65000-70000' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '65000-70000', /65535/],
  ['boolean word', { MANAGER_QEMU_ENABLE_KVM: 'maybe' }, 'MANAGER_QEMU_ENABLE_KVM', 'maybe', /true or false/],
  ['trace ratio above 1', { COCOS_JAEGER_TRACE_RATIO: '1.5' }, 'COCOS_JAEGER_TRACE_RATIO', '1.5', /0\.\.1/],
  ['trace ratio negative', { COCOS_JAEGER_TRACE_RATIO: '-0.1' }, 'COCOS_JAEGER_TRACE_RATIO', '-0.1', /0\.\.1/],
  ['trace ratio not a number', { COCOS_JAEGER_TRACE_RATIO: 'half' }, 'COCOS_JAEGER_TRACE_RATIO', 'half', /0\.\.1/],
  ['SEV-SNP and TDX both on', { MANAGER_QEMU_ENABLE_TDX: 'true' }, 'MANAGER_QEMU_ENABLE_TDX', 'true', /cannot both be enabled/],
  ['host data not base64', { MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: 'not base64!' }, 'MANAGER_QEMU_HOST_DATA', 'not base64!', /base64 of exactly 32 bytes/],
  ['host data of 16 bytes', { MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: Buffer.alloc(16, 1).toString('base64') }, 'MANAGER_QEMU_HOST_DATA', Buffer.alloc(16, 1).toString('base64'), /32 bytes/],
  ['host data enabled but empty', { MANAGER_QEMU_ENABLE_HOST_DATA: 'yes' }, 'MANAGER_QEMU_HOST_DATA', '', /32 bytes/],
  ['log level unknown', { MANAGER_LOG_LEVEL: 'verbose' }, 'MANAGER_LOG_LEVEL', 'verbose', /debug, info, warn, error/],
  ['start timeout not a Go duration', { MANAGER_QEMU_START_TIMEOUT: '10' }, 'MANAGER_QEMU_START_TIMEOUT', '10', /Go duration/],
  ['policy format unknown', { MANAGER_ATTESTATION_POLICY_FORMAT: 'xml' }, 'MANAGER_ATTESTATION_POLICY_FORMAT', 'xml', /corim, json/],
  ['maxcpus below count', { MANAGER_QEMU_SMP_COUNT: '8', MANAGER_QEMU_SMP_MAXCPUS: '4' }, 'MANAGER_QEMU_SMP_MAXCPUS', '4', /SMP_COUNT/],
  ['TLS cert without key', { MANAGER_GRPC_SERVER_CERT: '/etc/c.pem' }, 'MANAGER_GRPC_SERVER_KEY', '', /turn TLS on together/],
];

for (const [name, env, variable, value, expected] of cases) {
  test(`config rejects ${name} with exit 2 and one line naming ${variable}`, () => {
    const r = runCli(['qemu-args'], env);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
    const line = lines[0];
    assert.ok(line.includes(variable), line);
    assert.ok(line.includes(JSON.stringify(value)), `value ${JSON.stringify(value)} missing from: ${line}`);
    assert.match(line, expected);
    assert.doesNotMatch(line, /\bat .*\.js:\d+/);
  });
}

test('config accepts every boolean spelling', () => {
  for (const [word, kvm] of [['true', true], ['1', true], ['on', true], ['YES', true], ['false', false], ['0', false], ['off', false], ['no', false]]) {
    const r = runCli(['qemu-args'], { MANAGER_QEMU_ENABLE_KVM: word });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).includes('-enable-kvm'), kvm, word);
  }
});

test('an empty typed variable takes its default, as in the Go manager', () => {
  const r = runCli(['qemu-args'], { MANAGER_QEMU_SMP_COUNT: '', MANAGER_QEMU_ENABLE_KVM: '' });
  assert.equal(r.status, 0, r.stderr);
  const args = JSON.parse(r.stdout);
  assert.equal(args[0], '-enable-kvm');
  assert.equal(args[args.indexOf('-smp') + 1], '4,maxcpus=64');
});

test('unknown command exits 2 with one line', () => {
  const r = runCli(['frobnicate']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});

test('--help is printed for each command', () => {
  for (const args of [['--help'], ['serve', '--help'], ['qemu-args', '--help']]) {
    const r = runCli(args);
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout, /^Usage: cocos-manager/, args.join(' '));
  }
});
