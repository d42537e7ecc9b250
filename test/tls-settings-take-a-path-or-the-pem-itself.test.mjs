// Each TLS setting takes a file's path or the PEM text itself, as Go's ReadFileOrData (a path
// that exists is read, anything else is the text); a value that is neither, or holds the wrong
// PEM, stops the start with one line naming the setting, and never repeats a key's text.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, managerPkg, tmpDir } from './daemon.mjs';
import { runCli } from './helpers.mjs';
import { makePki } from './pki.mjs';
import { probeBoth } from './tls-probes.mjs';

let pki;
let text;
before(() => {
  pki = makePki(tmpDir('cocos-pki-'));
  text = (n) => pki.read(n).toString('utf8');
});

const client = (id) => ({ tls: true, ca: pki.read('ca.pem'), ...(id ? { key: pki.read(`${id}.key`), cert: pki.read(`${id}.pem`) } : {}) });

async function assertMutualTls(d) {
  assert.deepEqual(await probeBoth(d, client('client')), { grpc: 'served', http: 'served' });
  for (const [port, got] of Object.entries(await probeBoth(d, client()))) assert.match(got, /^refused/, `${port}, no client certificate`);
  for (const [port, got] of Object.entries(await probeBoth(d, client('stranger')))) assert.match(got, /^refused/, `${port}, a certificate from another CA`);
}

test('all four settings as PEM text, on both ports: mutual TLS as with files', async () => {
  const pem = (prefix) => ({
    [`${prefix}SERVER_CERT`]: text('server.pem'),
    [`${prefix}SERVER_KEY`]: text('server.key'),
    [`${prefix}SERVER_CA_CERTS`]: text('ca.pem'),
    [`${prefix}CLIENT_CA_CERTS`]: text('ca.pem'),
  });
  const d = await Daemon.listening(fakeQemuEnv(tmpDir(), { ...pem('MANAGER_GRPC_'), ...pem('MANAGER_HTTP_') }));
  try {
    await assertMutualTls(d);
    // The key's text went into no log line.
    assert.equal(d.allLogText().includes(text('server.key').split('\n')[1]), false);
  } finally {
    await d.stop();
  }
});

test('paths and texts mixed, a relative path read from the working directory, a bundle with text around its blocks', async () => {
  const bundle = path.join(tmpDir(), 'bundle.pem');
  fs.writeFileSync(bundle, `# the test CA, then an unrelated key block Go would skip too\n${text('ca.pem')}\n${text('otherca.key')}trailing words\n`);
  const settings = (prefix) => ({
    [`${prefix}SERVER_CERT`]: 'server.pem',
    [`${prefix}SERVER_KEY`]: text('server.key'),
    [`${prefix}CLIENT_CA_CERTS`]: bundle,
  });
  const d = await Daemon.listening(fakeQemuEnv(tmpDir(), { ...settings('MANAGER_GRPC_'), ...settings('MANAGER_HTTP_') }), { cwd: pki.dir });
  try {
    await assertMutualTls(d);
  } finally {
    await d.stop();
  }
});

/** `serve` with TLS from files on the gRPC port and `extra` on top: exit 2, and its one line. */
function refusal(extra) {
  const r = runCli(['serve'], fakeQemuEnv(tmpDir(), { MANAGER_GRPC_SERVER_CERT: pki.file('server.pem'), MANAGER_GRPC_SERVER_KEY: pki.file('server.key'), ...extra }));
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  return lines[0];
}

test('a value that is neither a file nor PEM is named; a path is shown, what may be a key is not', () => {
  const nowhere = path.join(tmpDir(), 'nowhere.pem');
  assert.equal(refusal({ MANAGER_GRPC_SERVER_CA_CERTS: nowhere }), `cocos-manager: MANAGER_GRPC_SERVER_CA_CERTS=${JSON.stringify(nowhere)} is neither a readable file (ENOENT) nor PEM text`);
  const der = fs.readFileSync(pki.file('client.key'), 'utf8').split('\n').slice(1, -2).join('');
  const line = refusal({ MANAGER_GRPC_SERVER_KEY: der });
  assert.equal(line, `cocos-manager: MANAGER_GRPC_SERVER_KEY (${der.length} characters, not shown) is neither a readable file (ENOENT) nor PEM text`);
  assert.equal(refusal({ MANAGER_HTTP_SERVER_CERT: pki.file('server.pem'), MANAGER_HTTP_SERVER_KEY: './server.key' }), 'cocos-manager: MANAGER_HTTP_SERVER_KEY="./server.key" is neither a readable file (ENOENT) nor PEM text');
});

test('PEM text of the wrong kind, or a key that is not the certificate\'s, is named without repeating the text', () => {
  assert.equal(refusal({ MANAGER_GRPC_CLIENT_CA_CERTS: text('client.key') }), 'cocos-manager: MANAGER_GRPC_CLIENT_CA_CERTS (PEM text) holds no PEM certificate');
  assert.equal(refusal({ MANAGER_GRPC_SERVER_KEY: text('server.pem') }), 'cocos-manager: MANAGER_GRPC_SERVER_KEY (PEM text) holds no PEM private key');
  const line = refusal({ MANAGER_GRPC_SERVER_KEY: text('client.key') });
  assert.match(line, /^cocos-manager: MANAGER_GRPC_SERVER_CERT="[^"]+server.pem" and MANAGER_GRPC_SERVER_KEY \(PEM text\) do not form a usable TLS identity: /);
  assert.equal(line.includes(text('client.key').split('\n')[1]), false, 'the key text was repeated');
});

test('a file that cannot be read, and a certificate block that does not parse, are named', () => {
  assert.equal(refusal({ MANAGER_GRPC_SERVER_CERT: pki.dir }), `cocos-manager: cannot read MANAGER_GRPC_SERVER_CERT=${JSON.stringify(pki.dir)}: EISDIR`);
  const broken = text('ca.pem').replace(/\n[A-Za-z0-9+/]{16}/, '\nAAAAAAAAAAAAAAAA');
  assert.equal(
    refusal({ MANAGER_GRPC_SERVER_CA_CERTS: `${text('otherca.pem')}${broken}` }),
    'cocos-manager: MANAGER_GRPC_SERVER_CA_CERTS (PEM text) holds 1 PEM CERTIFICATE block(s) that do not parse as X.509 certificates',
  );
});

test("a key given as PEM text is not in a VM's QEMU's environment (which it would inherit)", async () => {
  const records = tmpDir('cocos-records-');
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_GRPC_SERVER_CERT: pki.file('server.pem'), MANAGER_GRPC_SERVER_KEY: text('server.key'), FAKE_QEMU_RECORD_DIR: records }));
  // ManagerService on the admin socket: no TLS client needed to create a VM.
  const client = new managerPkg.ManagerService(`unix:${d.adminSocket}`, grpc.credentials.createInsecure());
  try {
    await call(client, 'CreateVm', { ttl: '1h' });
    const [record] = fs.readdirSync(records);
    const { pid } = JSON.parse(fs.readFileSync(path.join(records, record), 'utf8'));
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    assert.match(environ, /\0FAKE_QEMU_RECORD_DIR=|^FAKE_QEMU_RECORD_DIR=/, 'the environment QEMU inherited was read');
    assert.equal(environ.includes('PRIVATE KEY'), false, 'the key reached QEMU');
    assert.match(environ, /MANAGER_GRPC_SERVER_CERT=\//, 'a path stays');
  } finally {
    client.close();
    await d.stop();
  }
});
