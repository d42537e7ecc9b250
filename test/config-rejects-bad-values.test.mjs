// A bad setting stops the daemon with exit status 2 and one line naming the variable,
// the value given and what is expected: no stack trace, no silent default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers.mjs';

const cases = [
  ['non-numeric port', { MANAGER_GRPC_PORT: 'abc' }, 'MANAGER_GRPC_PORT', 'abc', /port number in 0\.\.65535/],
  ['forwarded port zero', { MANAGER_QEMU_HOST_FWD_AGENT: '0' }, 'MANAGER_QEMU_HOST_FWD_AGENT', '0', /1\.\.65535/],
  ['port too big', { MANAGER_GRPC_PORT: '65536' }, 'MANAGER_GRPC_PORT', '65536', /0\.\.65535/],
  ['negative port', { MANAGER_QEMU_HOST_FWD_AGENT: '-5' }, 'MANAGER_QEMU_HOST_FWD_AGENT', '-5', /1\.\.65535/],
  ['non-numeric count', { MANAGER_MAX_VMS: 'ten' }, 'MANAGER_MAX_VMS', 'ten', /non-negative integer/],
  ['fractional cpu count', { MANAGER_QEMU_SMP_COUNT: '2.5' }, 'MANAGER_QEMU_SMP_COUNT', '2.5', /positive integer/],
  ['memory with a fraction but no unit', { MANAGER_QEMU_MEMORY_SIZE: '1.5' }, 'MANAGER_QEMU_MEMORY_SIZE', '1.5', /like 2048M, 4G/],
  ['memory with bad unit', { MANAGER_QEMU_MAX_MEMORY: '30GB' }, 'MANAGER_QEMU_MAX_MEMORY', '30GB', /like 2048M/],
  ['memory with a space', { MANAGER_QEMU_MEMORY_SIZE: '2048 M' }, 'MANAGER_QEMU_MEMORY_SIZE', '2048 M', /like 2048M/],
  ['memory of zero', { MANAGER_QEMU_MEMORY_SIZE: '0G' }, 'MANAGER_QEMU_MEMORY_SIZE', '0G', /like 2048M/],
  ['maxmem as bare bytes below memory', { MANAGER_QEMU_MAX_MEMORY: '30720' }, 'MANAGER_QEMU_MAX_MEMORY', '30720', /as bytes/],
  ['range not A-B', { MANAGER_QEMU_HOST_FWD_RANGE: '6100' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '6100', /first-last/],
  ['range reversed', { MANAGER_QEMU_HOST_FWD_RANGE: '6200-6100' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '6200-6100', /first <= last/],
  ['range beyond 65535', { MANAGER_QEMU_HOST_FWD_RANGE: '65000-70000' }, 'MANAGER_QEMU_HOST_FWD_RANGE', '65000-70000', /65535/],
  ['boolean word', { MANAGER_QEMU_ENABLE_KVM: 'maybe' }, 'MANAGER_QEMU_ENABLE_KVM', 'maybe', /true or false/],
  ['boolean in mixed case', { MANAGER_QEMU_ENABLE_KVM: 'tRUE' }, 'MANAGER_QEMU_ENABLE_KVM', 'tRUE', /true or false/],
  ['read-only switch not a boolean', { MANAGER_QEMU_OVMF_CODE_READONLY: 'ro' }, 'MANAGER_QEMU_OVMF_CODE_READONLY', 'ro', /true or false/],
  ['trace ratio above 1', { COCOS_JAEGER_TRACE_RATIO: '1.5' }, 'COCOS_JAEGER_TRACE_RATIO', '1.5', /0\.\.1/],
  ['trace ratio negative', { COCOS_JAEGER_TRACE_RATIO: '-0.1' }, 'COCOS_JAEGER_TRACE_RATIO', '-0.1', /0\.\.1/],
  ['trace ratio not a number', { COCOS_JAEGER_TRACE_RATIO: 'half' }, 'COCOS_JAEGER_TRACE_RATIO', 'half', /0\.\.1/],
  ['trace URL not absolute', { COCOS_JAEGER_URL: 'localhost:4318' }, 'COCOS_JAEGER_URL', 'localhost:4318', /http or https URL/],
  // The OpenTelemetry SDK would replace these by its default and go on; here they stop the start.
  ['OTLP endpoint not a URL', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http//collector' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', 'http//collector', /absolute URL/],
  ['OTLP over gRPC', { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 'OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc', /http\/protobuf or http\/json/],
  ['sampler unknown', { OTEL_TRACES_SAMPLER: 'jaeger_remote' }, 'OTEL_TRACES_SAMPLER', 'jaeger_remote', /parentbased_traceidratio/],
  ['sampler ratio above 1', { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }, 'OTEL_TRACES_SAMPLER_ARG', '1.5', /0\.\.1/],
  ['resource attribute with a bare =', { OTEL_RESOURCE_ATTRIBUTES: 'site=a=b' }, 'OTEL_RESOURCE_ATTRIBUTES', 'site=a=b', /percent-encoded/],
  ['trace exporter other than OTLP', { OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER', 'zipkin', /otlp or none/],
  ['SDK switch not a boolean', { OTEL_SDK_DISABLED: 'yes' }, 'OTEL_SDK_DISABLED', 'yes', /true or false/],
  ['SEV-SNP and TDX both on', { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_ENABLE_TDX: 'true' }, 'MANAGER_QEMU_ENABLE_TDX', 'true', /SEV-SNP and TDX cannot both be on/],
  ['SEV-SNP neither boolean nor auto', { MANAGER_QEMU_ENABLE_SEV_SNP: 'AUTO' }, 'MANAGER_QEMU_ENABLE_SEV_SNP', 'AUTO', /true or false.*, or auto/],
  ['the opt-out not a boolean', { MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: 'please' }, 'MANAGER_ALLOW_NON_CONFIDENTIAL_VMS', 'please', /true or false/],
  ['host data not base64', { MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: 'not base64!' }, 'MANAGER_QEMU_HOST_DATA', 'not base64!', /base64 of exactly 32 bytes/],
  ['host data of 16 bytes', { MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: Buffer.alloc(16, 1).toString('base64') }, 'MANAGER_QEMU_HOST_DATA', Buffer.alloc(16, 1).toString('base64'), /32 bytes/],
  ['host data enabled but empty', { MANAGER_QEMU_ENABLE_HOST_DATA: 'yes' }, 'MANAGER_QEMU_HOST_DATA', '', /32 bytes/],
  ['log level unknown', { MANAGER_LOG_LEVEL: 'verbose' }, 'MANAGER_LOG_LEVEL', 'verbose', /debug, info, warn or error in any case/],
  ['log level offset not a number', { MANAGER_LOG_LEVEL: 'INFO+x' }, 'MANAGER_LOG_LEVEL', 'INFO+x', /INFO\+2, DEBUG-4/],
  ['start timeout not a Go duration', { MANAGER_QEMU_START_TIMEOUT: '10' }, 'MANAGER_QEMU_START_TIMEOUT', '10', /Go duration/],
  ['policy format unknown', { MANAGER_ATTESTATION_POLICY_FORMAT: 'xml' }, 'MANAGER_ATTESTATION_POLICY_FORMAT', 'xml', /corim, json/],
  ['maxcpus below count', { MANAGER_QEMU_SMP_COUNT: '8', MANAGER_QEMU_SMP_MAXCPUS: '4' }, 'MANAGER_QEMU_SMP_MAXCPUS', '4', /SMP_COUNT/],
  ['TLS cert without key', { MANAGER_GRPC_SERVER_CERT: '/etc/c.pem' }, 'MANAGER_GRPC_SERVER_KEY', '', /turn TLS on together/],
  // sudo is there to run QEMU unprivileged: root, by name or id, would undo it.
  ['QEMU sudo user root', { MANAGER_QEMU_SUDO_USER: 'root' }, 'MANAGER_QEMU_SUDO_USER', 'root', /unprivileged user \(not root\)/],
  ['QEMU sudo user uid 0', { MANAGER_QEMU_SUDO_USER: '00' }, 'MANAGER_QEMU_SUDO_USER', '00', /not root/],
  ['QEMU sudo user blank', { MANAGER_QEMU_SUDO_USER: ' ' }, 'MANAGER_QEMU_SUDO_USER', ' ', /name or numeric id/],
  ['QEMU sudo user in sudo\'s #uid form', { MANAGER_QEMU_SUDO_USER: '#1000' }, 'MANAGER_QEMU_SUDO_USER', '#1000', /name or numeric id/],
  ['QEMU sudo user with a space', { MANAGER_QEMU_SUDO_USER: 'cocos qemu' }, 'MANAGER_QEMU_SUDO_USER', 'cocos qemu', /name or numeric id/],
  ['no connections at all', { MANAGER_MAX_CONNECTIONS: '0' }, 'MANAGER_MAX_CONNECTIONS', '0', /positive integer/],
  ['per-peer cap above the total', { MANAGER_MAX_CONNECTIONS: '100', MANAGER_MAX_CONNECTIONS_PER_PEER: '200' }, 'MANAGER_MAX_CONNECTIONS_PER_PEER', '200', /at most MANAGER_MAX_CONNECTIONS \(100\)/],
  ['verdict deadline of zero', { MANAGER_CONNECTION_VERDICT_TIMEOUT: '0' }, 'MANAGER_CONNECTION_VERDICT_TIMEOUT', '0', /at most 1m/],
  ['idle timeout beyond a day', { MANAGER_CONNECTION_IDLE_TIMEOUT: '25h' }, 'MANAGER_CONNECTION_IDLE_TIMEOUT', '25h', /at most 24h/],
  ['headers timeout not a duration', { MANAGER_HTTP_HEADERS_TIMEOUT: '10' }, 'MANAGER_HTTP_HEADERS_TIMEOUT', '10', /Go duration/],
  // Go's 0 means no limit there; this daemon keeps one.
  ['HTTP read timeout of zero', { MANAGER_HTTP_SERVER_READ_TIMEOUT: '0' }, 'MANAGER_HTTP_SERVER_READ_TIMEOUT', '0', /positive Go duration of at most 5m/],
  ['HTTP write timeout beyond 5m', { MANAGER_HTTP_SERVER_WRITE_TIMEOUT: '6m' }, 'MANAGER_HTTP_SERVER_WRITE_TIMEOUT', '6m', /at most 5m/],
  ['HTTP header bytes not a number', { MANAGER_HTTP_SERVER_MAX_HEADER_BYTES: '1MiB' }, 'MANAGER_HTTP_SERVER_MAX_HEADER_BYTES', '1MiB', /0: 1048576, as in Go/],
  ['HTTP header timeout under both names, different', { MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT: '5s', MANAGER_HTTP_HEADERS_TIMEOUT: '10s' }, 'MANAGER_HTTP_HEADERS_TIMEOUT', '10s', /two names of one setting/],
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

// Every spelling Go's strconv.ParseBool accepts (the Go manager's parser), and QEMU's own words.
const GO_BOOLEANS = [
  ['1', true], ['t', true], ['T', true], ['TRUE', true], ['true', true], ['True', true],
  ['0', false], ['f', false], ['F', false], ['FALSE', false], ['false', false], ['False', false],
  ['on', true], ['yes', true], ['off', false], ['no', false],
];

test('config accepts every boolean spelling Go and QEMU accept', () => {
  for (const [word, kvm] of GO_BOOLEANS) {
    const r = runCli(['qemu-args'], { MANAGER_QEMU_ENABLE_KVM: word });
    assert.equal(r.status, 0, `${word}: ${r.stderr}`);
    assert.equal(JSON.parse(r.stdout).includes('-enable-kvm'), kvm, word);
  }
});

test('OVMF code read-only takes true/false as QEMU does, and the vector says on/off', () => {
  for (const [word, want] of [['true', 'on'], ['false', 'off'], ['on', 'on'], ['off', 'off'], ['0', 'off']]) {
    const r = runCli(['qemu-args'], { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_OVMF_CODE_READONLY: word });
    assert.equal(r.status, 0, `${word}: ${r.stderr}`);
    const drive = JSON.parse(r.stdout).find((a) => a.includes('OVMF_CODE'));
    assert.ok(drive.endsWith(`readonly=${want}`), `${word}: ${drive}`);
  }
});

// Sizes as QEMU reads them: a bare -m number is MiB, suffixes in either case, fractions with a suffix.
const QEMU_SIZES = [
  ['4096', '4096M'], ['4g', '4g'], ['4G', '4G'], ['1.5G', '1.5G'], ['2048m', '2048m'], ['1048576k', '1048576k'],
];

test('config accepts every memory size QEMU accepts, and the memory object means the same size', () => {
  for (const [size, objectSize] of QEMU_SIZES) {
    const r = runCli(['qemu-args'], { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_MEMORY_SIZE: size });
    assert.equal(r.status, 0, `${size}: ${r.stderr}`);
    const args = JSON.parse(r.stdout);
    assert.equal(args[args.indexOf('-m') + 1], `${size},slots=5,maxmem=30G`, size);
    assert.ok(args.includes(`memory-backend-memfd,id=ram1,size=${objectSize},share=true,prealloc=false`), `${size}: ${args.join(' ')}`);
  }
});

test('a maximum below the memory size is refused once units are taken into account', () => {
  assert.equal(runCli(['qemu-args'], { MANAGER_QEMU_MEMORY_SIZE: '1.5G', MANAGER_QEMU_MAX_MEMORY: '1536M' }).status, 0);
  const r = runCli(['qemu-args'], { MANAGER_QEMU_MEMORY_SIZE: '1.5G', MANAGER_QEMU_MAX_MEMORY: '1535m' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /MANAGER_QEMU_MAX_MEMORY="1535m": expected at least MANAGER_QEMU_MEMORY_SIZE/);
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
