// TLS and mutual TLS on the gRPC API, with certificates made by openssl; bad TLS files stop the start.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { runCli } from './helpers.mjs';
import { makePki } from './pki.mjs';

let pki;
before(() => {
  pki = makePki(tmpDir('cocos-pki-'));
});

const tlsEnv = (extra = {}) => fakeQemuEnv(tmpDir(), {
  MANAGER_GRPC_SERVER_CERT: pki.file('server.pem'),
  MANAGER_GRPC_SERVER_KEY: pki.file('server.key'),
  ...extra,
});

async function probe(daemon, creds) {
  const client = daemon.client(creds, { 'grpc.ssl_target_name_override': 'localhost' });
  try {
    return await call(client, 'CVMInfo', { id: 'probe' }, 5_000);
  } finally {
    client.close();
  }
}

test('TLS: a client trusting the CA is served; a plain-text client is not', async () => {
  const d = await Daemon.start(tlsEnv());
  try {
    const res = await probe(d, grpc.credentials.createSsl(pki.read('ca.pem')));
    assert.equal(res.id, 'probe');
    await assert.rejects(probe(d, grpc.credentials.createInsecure()), (e) => e.code === 14);
  } finally {
    await d.stop();
  }
});

test('mutual TLS: only clients with a valid certificate from MANAGER_GRPC_CLIENT_CA_CERTS get in', async () => {
  const d = await Daemon.start(tlsEnv({ MANAGER_GRPC_CLIENT_CA_CERTS: pki.file('ca.pem') }));
  try {
    const ca = pki.read('ca.pem');
    const ok = await probe(d, grpc.credentials.createSsl(ca, pki.read('client.key'), pki.read('client.pem')));
    assert.equal(ok.id, 'probe');
    await assert.rejects(probe(d, grpc.credentials.createSsl(ca)), (e) => e.code === 14, 'no client certificate');
    await assert.rejects(probe(d, grpc.credentials.createSsl(ca, pki.read('stranger.key'), pki.read('stranger.pem'))), (e) => e.code === 14, 'other CA');
    await assert.rejects(probe(d, grpc.credentials.createSsl(ca, pki.read('expired.key'), pki.read('expired.pem'))), (e) => e.code === 14, 'expired');
    await assert.rejects(probe(d, grpc.credentials.createInsecure()), (e) => e.code === 14, 'plain text');
  } finally {
    await d.stop();
  }
});

test('a certificate path that leads nowhere stops the start with exit 2 and one line', () => {
  const r = runCli(['serve'], { ...tlsEnv(), MANAGER_GRPC_SERVER_CERT: '/nonexistent/server.pem' });
  assert.equal(r.status, 2);
  assert.match(r.stderr.trim(), /^cocos-manager: MANAGER_GRPC_SERVER_CERT="\/nonexistent\/server.pem" is neither a readable file \(ENOENT\) nor PEM text$/);
});

test('a key that does not match the certificate stops the start with exit 2 and one line', () => {
  const r = runCli(['serve'], { ...tlsEnv(), MANAGER_GRPC_SERVER_KEY: pki.file('client.key') });
  assert.equal(r.status, 2);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /MANAGER_GRPC_SERVER_CERT=.* and MANAGER_GRPC_SERVER_KEY=.* do not form a usable TLS identity/);
});

test('a file that is not PEM stops the start with exit 2', () => {
  const bogus = `${pki.dir}/bogus.pem`;
  fs.writeFileSync(bogus, 'hello');
  const r = runCli(['serve'], { ...tlsEnv(), MANAGER_GRPC_CLIENT_CA_CERTS: bogus });
  assert.equal(r.status, 2);
  assert.match(r.stderr.trim(), /^cocos-manager: MANAGER_GRPC_CLIENT_CA_CERTS=".*bogus.pem" holds no PEM certificate$/);
});
