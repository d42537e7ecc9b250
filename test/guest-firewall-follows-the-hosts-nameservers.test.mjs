// Slirp forwards a guest's DNS to the host's nameservers, so the guest firewall leaves port 53 of
// those open, and follows /etc/resolv.conf when it changes (DHCP, a VPN, systemd-resolved). The
// daemon runs in a mount namespace of its own whose /etc/resolv.conf is a file of the test's
// (bind-mounted over it); the table it installs is the host's, where the test lists it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, baseEnv } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, firewallTable, nextUidRange, tmpDir, waitFor } from './daemon.mjs';

const isRoot = process.getuid?.() === 0;

const listing = (stateDir) => spawnSync('nft', ['list', 'table', 'inet', firewallTable(stateDir)], { encoding: 'utf8' }).stdout ?? '';

test('the guest firewall opens port 53 of the host\'s nameservers only, and follows resolv.conf when it changes', { skip: isRoot ? false : 'needs root (a mount namespace, nftables)' }, async () => {
  const dir = tmpDir('cocos-resolv-');
  const resolv = path.join(dir, 'resolv.conf');
  fs.writeFileSync(resolv, '# test\nnameserver 127.0.0.53\noptions edns0\n');
  const state = path.join(dir, 'state');
  const env = fakeQemuEnv(state, { MANAGER_VM_UID_RANGE: nextUidRange() });
  const proc = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv, process.execPath, CLI, 'serve'], {
    env: baseEnv({ MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: '0', MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: '0', MANAGER_ADMIN_SOCKET: '', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = { lines: [], stderr: '' };
  let buf = '';
  proc.stdout.on('data', (d) => {
    const parts = (buf + d).split('\n');
    buf = parts.pop();
    for (const l of parts) try { logs.lines.push(JSON.parse(l)); } catch { /* not JSON */ }
  });
  proc.stderr.on('data', (d) => { logs.stderr += d; });
  const d = new Daemon(proc, 0, logs);
  d.stateDir = state;
  try {
    d.port = (await d.waitForLog((l) => l.msg === 'gRPC server listening', 20_000)).port;
    const client = d.client();
    try {
      await call(client, 'CreateVm', {});
      assert.match(listing(state), /ip daddr 127\.0\.0\.53 udp dport 53 accept/);
      assert.match(listing(state), /ip daddr 127\.0\.0\.53 tcp dport 53 accept/);
      assert.doesNotMatch(listing(state), /dport 53 accept[\s\S]*dport 53 accept[\s\S]*dport 53 accept/, 'one nameserver, two rules');

      // The file is rewritten in place (the bind mount shows the same inode), as resolvconf does.
      fs.writeFileSync(resolv, 'nameserver 127.0.0.99\nnameserver ::1\n');
      assert.ok(await waitFor(() => /ip daddr 127\.0\.0\.99 udp dport 53 accept/.test(listing(state)), 15_000, 100), listing(state));
      const now = listing(state);
      assert.match(now, /ip6 daddr ::1 udp dport 53 accept/);
      assert.doesNotMatch(now, /127\.0\.0\.53/, 'the old nameserver is closed again');
      await d.waitForLog((l) => /the host's nameservers changed/.test(l.msg ?? ''), 5_000);
    } finally {
      client.close();
    }
  } finally {
    await d.stop();
  }
});
