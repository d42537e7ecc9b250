// ManagerAdmin lives on a Unix socket (mode 0660, a configurable group), not on the TCP port;
// on TCP only when asked for, and then only behind mutual TLS. Bad admin settings stop the start
// with exit status 2 and one line.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CLI, baseEnv, runCli } from './helpers.mjs';
import { Daemon, adminPkg, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { makePki } from './pki.mjs';

let pki;
before(() => {
  pki = makePki(tmpDir('cocos-admin-pki-'));
});

test('the admin socket is 0660, in the configured group, and serves ListVms; TCP does not', async () => {
  const dir = fs.mkdtempSync('/tmp/cocos-adm-');
  const socket = path.join(dir, 'run', 'admin.sock'); // its directory is made if missing
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_ADMIN_SOCKET: socket, MANAGER_ADMIN_SOCKET_GROUP: 'daemon' }));
  try {
    const st = fs.statSync(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    const daemonGid = Number(fs.readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith('daemon:')).split(':')[2]);
    assert.equal(st.gid, daemonGid);
    const local = d.adminClient();
    assert.deepEqual((await call(local, 'ListVms', {}).finally(() => local.close())).vms, []);
    const tcp = new adminPkg.ManagerAdmin(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
    await assert.rejects(call(tcp, 'ListVms', {}, 5_000).finally(() => tcp.close()), (e) => e.code === grpc.status.UNIMPLEMENTED);
  } finally {
    await d.stop();
  }
  assert.equal(fs.existsSync(socket), false, 'the socket is removed at stop');
});

test('a socket left by a daemon that died is replaced; one in use stops a second daemon with exit 2', async () => {
  const socket = path.join(fs.mkdtempSync('/tmp/cocos-adm-'), 'admin.sock');
  const first = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_ADMIN_SOCKET: socket }));
  try {
    const r = await new Promise((resolve) => {
      const p = spawn(process.execPath, [CLI, 'serve'], { env: baseEnv(fakeQemuEnv(tmpDir(), { MANAGER_ADMIN_SOCKET: socket, MANAGER_GRPC_PORT: '0', MANAGER_HTTP_PORT: '0', MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_HTTP_HOST: '127.0.0.1' })), stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (b) => { stderr += b; });
      const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
      p.on('exit', (status) => { clearTimeout(t); resolve({ status, stderr }); });
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^cocos-manager: cannot serve on MANAGER_ADMIN_SOCKET=".*admin\.sock": another process serves on it/);
  } finally {
    await first.stop('SIGKILL'); // leaves its socket behind
  }
  assert.ok(fs.existsSync(socket));
  const next = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_ADMIN_SOCKET: socket }));
  await next.stop();
});

test('ManagerAdmin on the TCP port when asked for, behind mutual TLS only', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), {
    MANAGER_ADMIN_ON_GRPC_PORT: 'true',
    MANAGER_GRPC_SERVER_CERT: pki.file('server.pem'),
    MANAGER_GRPC_SERVER_KEY: pki.file('server.key'),
    MANAGER_GRPC_CLIENT_CA_CERTS: pki.file('ca.pem'),
  }));
  const admin = (creds) => new adminPkg.ManagerAdmin(`127.0.0.1:${d.port}`, creds, { 'grpc.ssl_target_name_override': 'localhost' });
  try {
    const ca = pki.read('ca.pem');
    const ok = admin(grpc.credentials.createSsl(ca, pki.read('client.key'), pki.read('client.pem')));
    assert.deepEqual((await call(ok, 'ListVms', {}, 5_000).finally(() => ok.close())).vms, []);
    const anon = admin(grpc.credentials.createSsl(ca));
    await assert.rejects(call(anon, 'ListVms', {}, 5_000).finally(() => anon.close()), (e) => e.code === grpc.status.UNAVAILABLE);
  } finally {
    await d.stop();
  }
});

const oneLine = (r) => {
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, r.stderr);
  return lines[0];
};

test('admin settings that cannot work stop the start with exit 2 and one line', async () => {
  assert.match(oneLine(runCli(['qemu-args'], { MANAGER_ADMIN_ON_GRPC_PORT: 'true' })),
    /^cocos-manager: invalid MANAGER_ADMIN_ON_GRPC_PORT="true": ManagerAdmin on the TCP port needs mutual TLS: set MANAGER_GRPC_CLIENT_CA_CERTS/);
  const long = `/tmp/${'a'.repeat(110)}/admin.sock`;
  assert.match(oneLine(runCli(['qemu-args'], { MANAGER_ADMIN_SOCKET: long })),
    /^cocos-manager: invalid MANAGER_ADMIN_SOCKET=".*": expected a path of at most 107 bytes \(a Unix socket's limit\)$/);
  assert.match(oneLine(runCli(['qemu-args'], { MANAGER_ADMIN_SOCKET_GROUP: 'no such group' })),
    /^cocos-manager: invalid MANAGER_ADMIN_SOCKET_GROUP="no such group": expected a group name or numeric id$/);
  assert.match(oneLine(runCli(['serve'], fakeQemuEnv(tmpDir(), { MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: '0', MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: '0', MANAGER_ADMIN_SOCKET: path.join(fs.mkdtempSync('/tmp/cocos-adm-'), 'a.sock'), MANAGER_ADMIN_SOCKET_GROUP: 'cocosnosuchgroup' }))),
    /^cocos-manager: invalid MANAGER_ADMIN_SOCKET_GROUP="cocosnosuchgroup": no such group in \/etc\/group$/);
});
