// Hostile values in every CreateReq field get INVALID_ARGUMENT naming the field (never echoing a
// secret), leave nothing behind, and never change what other VMs receive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, readAgent, tmpDir } from './daemon.mjs';
import { parseTtl, validateCreateReq } from '../dist/request/create-request.js';

let daemon;
let client;
let state;
before(async () => {
  state = tmpDir();
  daemon = await Daemon.start(fakeQemuEnv(state));
  client = daemon.client();
});
after(async () => {
  client?.close();
  await daemon?.stop();
});

const ENV_FIELDS = ['agent_log_level', 'agent_cvm_server_url', 'agent_cvm_ca_url', 'agent_certs_token', 'aws_access_key_id', 'aws_secret_access_key', 'aws_endpoint_url', 'aws_region'];

const cases = [];
for (const field of ENV_FIELDS) {
  cases.push([field, { [field]: 'x\nAGENT_CVM_ID=evil' }, /must not contain NUL, CR or LF/]);
  cases.push([field, { [field]: 'x\rAGENT_CVM_ID=evil' }, /must not contain NUL, CR or LF/]);
  cases.push([field, { [field]: 'a\0b' }, /must not contain NUL, CR or LF/]);
  cases.push([field, { [field]: 'y'.repeat(1 << 20) }, /longer than/]);
}
for (const bad of ['a init=/bin/sh', 'a\tb', 'a"b', "a'b", 'a\u0001b', 'x\ny', 'a\\b']) {
  cases.push(['aa_kbs_params', { aa_kbs_params: bad }, /whitespace, quotes/]);
}
cases.push(['aa_kbs_params', { aa_kbs_params: 'k'.repeat(5000) }, /longer than/]);
for (const field of ['agent_cvm_client_cert', 'agent_cvm_client_key', 'agent_cvm_server_ca_cert']) {
  cases.push([field, { [field]: Buffer.alloc(64 * 1024 + 1, 0x41) }, /larger than 65536 bytes/]);
}
for (const ttl of ['-1s', '0', '0s', '1e9h', '5', 'abc', '1h1x', '9999999999h', ' 1s']) {
  cases.push(['ttl', { ttl }, /ttl/]);
}

for (const [field, req, reason] of cases) {
  const shown = JSON.stringify(Object.values(req)[0]).slice(0, 40);
  test(`CreateVm rejects ${field}=${shown} with INVALID_ARGUMENT naming the field`, async () => {
    await assert.rejects(call(client, 'CreateVm', req), (e) => {
      assert.equal(e.code, 3, e.details);
      assert.ok(e.details.startsWith(`${field}:`), e.details);
      assert.match(e.details, reason);
      assert.ok(!e.details.includes('evil') && !e.details.includes('init=/bin/sh'), 'value not echoed');
      return true;
    });
  });
}

test('rejected requests leave no directory behind and take no slot', async () => {
  const vms = path.join(state, 'vms');
  assert.deepEqual(fs.readdirSync(vms), []);
  const ok = await call(client, 'CreateVm', { agent_log_level: 'info' });
  await call(client, 'RemoveVm', { cvm_id: ok.cvm_id });
});

test('shell metacharacters and QEMU separators are stored harmlessly, and one VM never sees another VM values', async () => {
  const nasty = '$(touch /tmp/pwned) `id` ; rm -rf / | & > x,id=evil,=';
  const a = await call(client, 'CreateVm', { agent_log_level: nasty, aws_region: 'r,egion=1', aa_kbs_params: 'a,b=c;$(x)' });
  const b = await call(client, 'CreateVm', { agent_log_level: 'info' });
  const ra = await readAgent(Number(a.forwarded_port));
  const rb = await readAgent(Number(b.forwarded_port));
  assert.ok(ra.environment.startsWith(`AGENT_LOG_LEVEL=${nasty}\n`));
  assert.ok(ra.environment.includes('AWS_REGION=r,egion=1\n'));
  assert.equal(ra.cmdline, 'quiet console=null agent.aa_kbc_params=a,b=c;$(x)');
  assert.equal(rb.environment, `AGENT_LOG_LEVEL=info\nAGENT_CVM_GRPC_URL=\nAGENT_CVM_ID=${b.cvm_id}\nAGENT_CERTS_TOKEN=\nAGENT_CVM_CA_URL=\n`);
  assert.equal(rb.cmdline, 'quiet console=null');
  assert.equal(fs.existsSync('/tmp/pwned'), false);
  await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
  await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
});

test('hostile ids for RemoveVm, CVMInfo and AttestationPolicy never reach the file system', async () => {
  const canary = path.join(state, 'canary');
  fs.writeFileSync(canary, 'x');
  for (const id of ['../../etc', '..', '%2e%2e', `../${path.basename(canary)}`, '/etc/passwd', 'a'.repeat(100)]) {
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: id }), (e) => e.code === 5, id);
    await assert.rejects(call(client, 'AttestationPolicy', { id }), (e) => e.code === 5, id);
  }
  for (const [id, why] of [['', /cvm_id: is empty/], ['x'.repeat(10_000), /cvm_id: longer than 128/], ['a\nb', /control characters/]]) {
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: id }), (e) => e.code === 3 && why.test(e.details));
  }
  await assert.rejects(call(client, 'CVMInfo', { id: '' }), (e) => e.code === 3 && /^id: is empty/.test(e.details));
  assert.ok(fs.existsSync(canary));
  assert.ok(fs.existsSync('/etc/passwd'));
});

test('a message over the receive limit is refused and the daemon stays up', async () => {
  await assert.rejects(call(client, 'CreateVm', { agent_cvm_client_cert: Buffer.alloc(5 * 1024 * 1024) }), (e) => e.code === 8);
  const info = await call(client, 'CVMInfo', { id: 'still-up' });
  assert.equal(info.id, 'still-up');
});

test('ttl follows Go duration syntax', () => {
  assert.equal(parseTtl(''), undefined);
  assert.equal(parseTtl('90s'), 90_000);
  assert.equal(parseTtl('1h30m'), 5_400_000);
  assert.equal(parseTtl('1.5h'), 5_400_000);
  assert.equal(parseTtl('300ms'), 300);
  assert.equal(parseTtl('1h1h'), 7_200_000);
  assert.equal(parseTtl('2562047h'), 2562047 * 3_600_000);
  for (const bad of ['-1s', '0', '5', '1e9h', '2562048h', 'h', '.s', '1.s.']) assert.throws(() => parseTtl(bad), /ttl/, bad);
});

test('validateCreateReq never puts a secret value into its error', () => {
  const base = { agent_log_level: '', agent_cvm_server_ca_cert: new Uint8Array(), agent_cvm_client_key: new Uint8Array(), agent_cvm_client_cert: new Uint8Array(), agent_cvm_server_url: '', agent_cvm_ca_url: '', ttl: '', agent_certs_token: '', aws_access_key_id: '', aws_secret_access_key: '', aws_endpoint_url: '', aws_region: '', aa_kbs_params: '' };
  for (const field of ['aws_secret_access_key', 'agent_certs_token']) {
    assert.throws(() => validateCreateReq({ ...base, [field]: 'TOPSECRET\n' }), (e) => !e.message.includes('TOPSECRET') && e.message.startsWith(field));
  }
});
