// Which process holds the other end of a local connection, from /proc: over IPv4, IPv6 and
// IPv4-mapped addresses; below sudo while a start has not read QEMU's PID yet, and only then;
// and, for a daemon that is not root while QEMU runs as root (sudo), the honest answer "cannot
// tell" for root's sockets and "not a QEMU" for other users' sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES } from './helpers.mjs';
import { canonicalIp, ownerOfPeer } from '../dist/vm/socket-owner.js';

/** Accepts one connection from `connectTo` (made by this process) and attributes it. */
async function attribute(listenHost, connectHost, supervised, guestUids) {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, listenHost, r));
  const accepted = new Promise((r) => server.once('connection', r));
  const client = net.connect(server.address().port, connectHost);
  const s = await accepted;
  try {
    // As the daemon asks under sudo: sockets of QEMU's user are guests', whatever runs.
    const byUid = guestUids && { uidOwner: (uid) => ({ vmUser: guestUids.has(uid) }), anyVm: () => true };
    return await ownerOfPeer({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }, supervised, byUid);
  } finally {
    client.destroy();
    s.destroy();
    server.close();
  }
}

test('canonical addresses: IPv4-mapped IPv6 is IPv4, IPv6 is spelled out', () => {
  assert.equal(canonicalIp('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(canonicalIp('::1'), '0000:0000:0000:0000:0000:0000:0000:0001');
  assert.equal(canonicalIp('fe80::1:2'), 'fe80:0000:0000:0000:0000:0000:0001:0002');
});

test('a connection whose other end this process holds is attributed to it, over IPv4, IPv6 and IPv4-mapped', async () => {
  const me = () => [[process.pid, 'vm-self']];
  for (const [listen, connect] of [['127.0.0.1', '127.0.0.1'], ['::1', '::1'], ['::', '127.0.0.1']]) {
    const owner = await attribute(listen, connect, me);
    assert.deepEqual(owner, { kind: 'guest', vmId: 'vm-self', pid: process.pid }, `${listen} <- ${connect}`);
    assert.deepEqual(await attribute(listen, connect, () => []), { kind: 'host' }, `${listen} <- ${connect}, nothing supervised`);
  }
});

test('below a supervised PID (sudo\'s, during a start) is searched only while the PID of the QEMU below it is not known', async () => {
  // This process stands in for sudo, a child of it for QEMU: the child holds the peer's socket.
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise((r) => server.once('connection', r));
  const qemu = spawn(process.execPath, ['-e', `require('net').connect(${server.address().port}, '127.0.0.1').on('error', () => {}); setTimeout(() => {}, 20000)`], { stdio: 'ignore' });
  const s = await accepted;
  const ask = (supervised) => ownerOfPeer({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }, () => supervised);
  try {
    assert.deepEqual(await ask([[process.pid, 'vm-starting', true]]), { kind: 'guest', vmId: 'vm-starting', pid: qemu.pid });
    assert.deepEqual(await ask([[process.pid, 'vm-up', false]]), { kind: 'host' }, 'a known PID: nothing below it is searched');
    assert.deepEqual(await ask([[process.pid, 'vm-up', false], [qemu.pid, 'vm-up', false]]), { kind: 'guest', vmId: 'vm-up', pid: qemu.pid });
  } finally {
    qemu.kill();
    s.destroy();
    server.close();
  }
});

test('a peer socket of the user QEMU runs as under sudo is a guest\'s, even with no VM to name and nothing supervised', async () => {
  const me = process.getuid();
  // This process stands in for QEMU's user: its sockets are guests', whatever runs.
  assert.deepEqual(await attribute('127.0.0.1', '127.0.0.1', () => [], new Set([me])), { kind: 'guest-user', uid: me });
  assert.deepEqual(await attribute('::1', '::1', () => [[1, 'vm-other']], new Set([me])), { kind: 'guest-user', uid: me });
  // Another user's socket is not, and without such a user nothing changes.
  assert.deepEqual(await attribute('127.0.0.1', '127.0.0.1', () => [], new Set([me + 1])), { kind: 'host' });
  assert.deepEqual(await attribute('127.0.0.1', '127.0.0.1', () => []), { kind: 'host' });
});

test('a non-root daemon cannot read a root QEMU\'s descriptors: root\'s sockets are unattributed, other users\' are not QEMU\'s', { skip: process.getuid() !== 0 && 'needs root to run a child as nobody' }, async () => {
  const pidFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-peers-')), 'qemu.pid');
  fs.chmodSync(path.dirname(pidFile), 0o755);
  // A root process stands in for QEMU under sudo: it connects once told the port.
  const qemu = spawn(process.execPath, ['-e', `process.stdin.once('data', (p) => require('net').connect(Number(p), '127.0.0.1').on('error', () => {})); setTimeout(() => {}, 20000)`], { stdio: ['pipe', 'ignore', 'inherit'] });
  fs.writeFileSync(pidFile, String(qemu.pid));
  const child = spawn(process.execPath, [path.join(FIXTURES, 'attribute-peers.mjs'), pidFile], { uid: 65534, gid: 65534, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  let buf = '';
  const got = (n) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`child said: ${lines.join(' | ')}`)), 10_000);
    const check = () => { if (lines.length >= n) { clearTimeout(t); resolve(); } };
    child.stdout.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop();
      lines.push(...parts);
      check();
    });
    check();
  });
  try {
    await got(2); // its port, then its own connection
    const port = Number(lines[0]);
    const own = JSON.parse(lines[1]);
    assert.deepEqual(own.owner, { kind: 'host' }, 'a socket of another user than QEMU\'s is not a guest');
    // The root "QEMU" connects: its fds are what the child cannot read.
    qemu.stdin.write(String(port));
    await got(3);
    const fromRoot = JSON.parse(lines[2]);
    assert.equal(fromRoot.owner.kind, 'unattributed', JSON.stringify(fromRoot));
    assert.match(fromRoot.owner.reason, new RegExp(`descriptors of QEMU pid ${qemu.pid} are unreadable \\(EACCES\\).*same user \\(uid 0\\)`));
  } finally {
    qemu.kill();
    child.stdin.end();
    child.kill();
  }
});
