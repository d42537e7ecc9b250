// Requests are parsed once, where they come in: the parse functions name each bad field (the
// proto field the caller filled), a VmId cannot be had from a raw string, and the manager's port
// takes only parsed values (checked by the TypeScript compiler). Over the wire, a VM not found
// is named by the field the caller used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { MAX_VM_ID_LENGTH, parseVmId } from '../dist/request/vm-id.js';
import { RequestError, validateCreateReq } from '../dist/request/create-request.js';

/** CreateReq as grpc-js hands it over: every field present (proto3 defaults). */
const EMPTY = {
  agent_log_level: '', agent_cvm_server_ca_cert: Buffer.alloc(0), agent_cvm_client_key: Buffer.alloc(0), agent_cvm_client_cert: Buffer.alloc(0),
  agent_cvm_server_url: '', agent_cvm_ca_url: '', ttl: '', agent_certs_token: '', aws_access_key_id: '', aws_secret_access_key: '',
  aws_endpoint_url: '', aws_region: '', aa_kbs_params: '',
};

test('a VmId is the string given when it is well formed', () => {
  for (const raw of ['6f1c2a52-8f0e-4c3b-9d7e-0a1b2c3d4e5f', 'x', 'a'.repeat(MAX_VM_ID_LENGTH), '../../etc', 'é€😀']) {
    assert.equal(parseVmId('cvm_id', raw), raw);
  }
});

test('a bad id is refused with the field the caller filled, never echoed', () => {
  const bad = [
    ['', /is empty/],
    ['a'.repeat(MAX_VM_ID_LENGTH + 1), /longer than 128 characters/],
    ['evil\nid', /must not contain control characters/],
    ['evil\0', /must not contain control characters/],
    ['\u0085evil', /must not contain control characters/],
  ];
  for (const field of ['cvm_id', 'id']) {
    for (const [raw, why] of bad) {
      assert.throws(() => parseVmId(field, raw), (e) => {
        assert.ok(e instanceof RequestError, String(e));
        assert.equal(e.field, field);
        assert.ok(e.message.startsWith(`${field}: `), e.message);
        assert.match(e.message, why);
        assert.ok(!e.message.includes('evil'), 'value not echoed');
        return true;
      });
    }
  }
});

test('each bad CreateReq field is named in its error, and a good request becomes a VmRequest', () => {
  const bad = {
    agent_log_level: 'a\nb', agent_cvm_server_url: 'a\rb', agent_cvm_ca_url: 'a\0b', agent_certs_token: 'x'.repeat(8193),
    aws_access_key_id: 'a\nb', aws_secret_access_key: 'a\nb', aws_endpoint_url: 'a\nb', aws_region: 'a\nb',
    aa_kbs_params: 'a b', ttl: '-1s',
    agent_cvm_client_cert: Buffer.alloc(65537), agent_cvm_client_key: Buffer.alloc(65537), agent_cvm_server_ca_cert: Buffer.alloc(65537),
  };
  assert.deepEqual(Object.keys(bad).sort(), Object.keys(EMPTY).sort(), 'every field of CreateReq is tried');
  for (const [field, value] of Object.entries(bad)) {
    assert.throws(() => validateCreateReq({ ...EMPTY, [field]: value }), (e) => e instanceof RequestError && e.field === field && e.message.startsWith(`${field}: `), field);
  }
  const req = validateCreateReq({ ...EMPTY, agent_log_level: 'info', ttl: '90s', aws_region: 'eu', agent_cvm_client_key: Buffer.from('k') });
  assert.equal(req.agentLogLevel, 'info');
  assert.equal(req.ttlMs, 90_000);
  assert.equal(req.aws.region, 'eu');
  assert.equal(Buffer.from(req.clientKey).toString(), 'k');
  assert.equal(validateCreateReq(EMPTY).ttlMs, undefined);
});

test('the manager takes only parsed values: a raw string or a proto message does not compile', () => {
  // Each @ts-expect-error must meet an error, or tsc fails ("unused directive"): if a raw string
  // became a VmId, or the manager took the proto message, this file would stop compiling.
  const dir = fs.mkdtempSync(path.join(ROOT, 'test', '.typecheck-'));
  try {
    const src = (p) => JSON.stringify(path.join(ROOT, 'src', p));
    fs.writeFileSync(
      path.join(dir, 'uses.mts'),
      `import type { ManagerService } from ${src('manager/manager-service.port.js')};
import type { VmManager } from ${src('manager/vm-manager.js')};
import { parseVmId, type VmId } from ${src('request/vm-id.js')};
import { validateCreateReq } from ${src('request/create-request.js')};
import type { CreateReq__Output } from ${src('api/grpc/generated/manager/CreateReq.js')};
declare const port: ManagerService;
declare const manager: VmManager;
declare const wire: CreateReq__Output;
const id = parseVmId('cvm_id', 'abc');
void port.remove(id); void manager.remove(id); void manager.get(id); void port.status(id); void port.info(id); void port.attestationPolicy(id);
void port.create(validateCreateReq(wire)); void manager.create(validateCreateReq(wire));
// @ts-expect-error a raw string is no VmId
const raw: VmId = 'abc';
// @ts-expect-error
void port.remove('abc');
// @ts-expect-error
void manager.remove('abc');
// @ts-expect-error
void manager.get('abc');
// @ts-expect-error
void port.status('abc');
// @ts-expect-error
void port.info('abc');
// @ts-expect-error
void port.attestationPolicy('abc');
// @ts-expect-error the proto message is parsed first
void port.create(wire);
// @ts-expect-error
void manager.create(wire);
void raw;
`,
    );
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(
      process.execPath,
      [tsc, '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', path.join(dir, 'uses.mts')],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.signal, null, 'tsc finished in time');
    assert.equal(r.status, 0, r.stdout + r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('over the wire, a VM not found is named by the field the caller filled', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir()));
  const client = d.client();
  const admin = d.adminClient();
  try {
    const missing = '0d7a4c1e-0000-4000-8000-000000000000';
    const notFound = (field) => (e) => e.code === 5 && e.details === `no VM with ${field} "${missing}" on this manager`;
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: missing }), notFound('cvm_id'));
    await assert.rejects(call(client, 'AttestationPolicy', { id: missing }), notFound('id'));
    await assert.rejects(call(admin, 'GetVm', { id: missing }), notFound('id'));
    await assert.rejects(call(admin, 'GetVm', { id: '' }), (e) => e.code === 3 && e.details === 'id: is empty');
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: '' }), (e) => e.code === 3 && e.details === 'cvm_id: is empty');
  } finally {
    client.close();
    admin.close();
    await d.stop();
  }
});
