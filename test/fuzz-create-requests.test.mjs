// A seeded random fuzz over CreateReq. Pure part: thousands of requests through validation and
// the guest-file renderers, checking that nothing accepted can add a line to the env file or a
// parameter to the kernel command line, and that no rejection echoes the value. Wire part: a few
// hundred through the daemon, checking that another VM's env file and command line never change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RequestError, validateCreateReq } from '../dist/request/create-request.js';
import { renderEnvironmentFile } from '../dist/request/guest-files.js';
import { kernelCommandLine } from '../dist/qemu/args.js';
import { loadConfig } from '../dist/config/load.js';
import { Daemon, call, fakeQemuEnv, readAgent, tmpDir } from './daemon.mjs';
import { FACTS } from './fake-host.mjs';

const SEED = Number(process.env.FUZZ_SEED ?? 20261129);

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ['a', 'Z', '0', ' ', '\t', '\n', '\r', '\0', '"', "'", '`', '\\', ',', '=', ';', '$(id)', '|', '&', '>', '%2e%2e', '../', 'é', '€', '\u2028', '\u0085', '\ud83d\ude00', 'AGENT_CVM_ID=evil', 'init=/bin/sh', '-append', '\x1b[31m'];
const STRING_FIELDS = ['agent_log_level', 'agent_cvm_server_url', 'agent_cvm_ca_url', 'agent_certs_token', 'aws_access_key_id', 'aws_secret_access_key', 'aws_endpoint_url', 'aws_region', 'aa_kbs_params', 'ttl'];
const BYTES_FIELDS = ['agent_cvm_server_ca_cert', 'agent_cvm_client_key', 'agent_cvm_client_cert'];
const TTLS = ['', '90s', '1h30m', '-1s', '0', '5', '1e9h', '1h1h', '300ms', '9999999999999h', 'soon', '1.5h'];

function generator(rand) {
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const str = () => {
    const roll = rand();
    if (roll < 0.3) return '';
    if (roll < 0.35) return 'x'.repeat(Math.floor(rand() * 20_000));
    let s = '';
    const n = Math.floor(rand() * 6);
    for (let i = 0; i < n; i++) s += rand() < 0.6 ? pick(PIECES.slice(0, 3)) + Math.floor(rand() * 1000) : pick(PIECES);
    return s;
  };
  return () => {
    const req = {};
    for (const f of STRING_FIELDS) req[f] = str();
    req.ttl = rand() < 0.7 ? pick(TTLS) : str();
    for (const f of BYTES_FIELDS) req[f] = rand() < 0.5 ? new Uint8Array(0) : new Uint8Array(Math.floor(rand() < 0.05 ? 70_000 : rand() * 3000)).fill(0x41);
    return req;
  };
}

const KNOWN_FIELDS = new Set([...STRING_FIELDS, ...BYTES_FIELDS]);
const config = loadConfig({ MANAGER_QEMU_KERNEL_CMDLINE: 'quiet console=null' }, FACTS.plain);

test(`5000 seeded requests (seed ${SEED}): what is accepted cannot inject, what is rejected names its field`, () => {
  const next = generator(mulberry32(SEED));
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    const req = next();
    let vm;
    try {
      vm = validateCreateReq(req);
    } catch (err) {
      assert.ok(err instanceof RequestError, String(err));
      assert.ok(KNOWN_FIELDS.has(err.field), err.message);
      const value = String(req[err.field] ?? '');
      if (value.length >= 6) assert.ok(!err.message.includes(value), `value echoed: ${err.message}`);
      continue;
    }
    accepted++;
    const env = renderEnvironmentFile('11111111-2222-4333-8444-555555555555', vm);
    const lines = env.split('\n');
    assert.equal(lines.pop(), '', 'ends with a newline');
    const keys = lines.map((l) => l.slice(0, l.indexOf('=')));
    assert.deepEqual(keys.slice(0, 5), ['AGENT_LOG_LEVEL', 'AGENT_CVM_GRPC_URL', 'AGENT_CVM_ID', 'AGENT_CERTS_TOKEN', 'AGENT_CVM_CA_URL']);
    assert.equal(new Set(keys).size, keys.length, 'no key twice');
    assert.equal(lines.filter((l) => l.startsWith('AGENT_CVM_ID=')).length, 1);
    assert.equal(lines[2], 'AGENT_CVM_ID=11111111-2222-4333-8444-555555555555');
    assert.ok(lines.length <= 12);
    const cmd = kernelCommandLine(config.qemu, vm.aaKbsParams);
    const tokens = cmd.split(/\s+/);
    assert.deepEqual(tokens.slice(0, 2), ['quiet', 'console=null']);
    assert.ok(tokens.length === 2 || (tokens.length === 3 && tokens[2] === `agent.aa_kbc_params=${vm.aaKbsParams}`), cmd);
  }
  assert.ok(accepted > 100, `only ${accepted} accepted: the generator is too hostile to test acceptance`);
});

test('300 seeded requests over the wire: the daemon stays up and a bystander VM never changes', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state, { MANAGER_MAX_VMS: '0', MANAGER_LOG_LEVEL: 'info' }));
  const client = d.client();
  try {
    const bystander = await call(client, 'CreateVm', { agent_log_level: 'info', aa_kbs_params: 'bystander' });
    const before = await readAgent(Number(bystander.forwarded_port));
    const next = generator(mulberry32(SEED + 1));
    let ok = 0;
    let rejected = 0;
    for (let i = 0; i < 300; i++) {
      const req = next();
      try {
        const vm = await call(client, 'CreateVm', req, 30_000);
        ok++;
        await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
      } catch (err) {
        assert.equal(err.code, 3, `${err.code} ${err.details}`);
        rejected++;
      }
    }
    const after = await readAgent(Number(bystander.forwarded_port));
    assert.deepEqual(after, before);
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), [bystander.cvm_id]);
    assert.ok(ok > 10 && rejected > 10, `accepted ${ok}, rejected ${rejected}`);
    await call(client, 'RemoveVm', { cvm_id: bystander.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});
