// MANAGER_GRPC_HOST and MANAGER_HTTP_HOST unset or empty mean localhost, as in the Go manager
// (magistrala's server config): the API is reachable from this host only. The daemon listens on
// every address localhost resolves to, so both 127.0.0.1 and ::1 where /etc/hosts names both
// (the Go manager takes the IPv4 one only), and `check` says where. The hosts file is faked for
// real: the daemon runs in a mount namespace where /etc/hosts is the test's (fake-host.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, managerPkg, tmpDir } from './daemon.mjs';
import { PLAIN_HOST, fakeHostUnavailable } from './fake-host.mjs';
import { runCli } from './helpers.mjs';

const BOTH = { ...PLAIN_HOST, hosts: '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' };
const V4_ONLY = { ...PLAIN_HOST, hosts: '127.0.0.1 localhost\n' };

/** Whether a TCP connection to host:port is accepted (bounded). */
function connects(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(3_000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** A non-loopback address of this machine, if it has one: the API must not answer there. */
const outside = Object.values(os.networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4')?.address;

async function answers(d, peer) {
  const client = new managerPkg.ManagerService(`${peer}:${d.port}`, grpc.credentials.createInsecure());
  try {
    assert.equal((await call(client, 'CVMInfo', { id: 'lo' }, 10_000)).id, 'lo', peer);
  } finally {
    client.close();
  }
  assert.equal((await fetch(`http://${peer}:${d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) })).status, 200, peer);
}

const unavailable = fakeHostUnavailable();

for (const [how, value] of [['unset', undefined], ['empty', '']]) {
  test(`hosts ${how}: localhost, both loopback addresses where /etc/hosts names both, nothing elsewhere`, { skip: unavailable }, async () => {
    const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_GRPC_HOST: value, MANAGER_HTTP_HOST: value }), { host: BOTH });
    try {
      const grpcLine = d.logs.lines.find((l) => l.msg === 'gRPC server listening');
      const httpLine = d.logs.lines.find((l) => l.msg === 'HTTP endpoint listening');
      assert.equal(grpcLine.host, 'localhost');
      assert.deepEqual(grpcLine.address.split(', ').sort(), [`127.0.0.1:${d.port}`, `[::1]:${d.port}`]);
      assert.deepEqual([...httpLine.addresses].sort(), [`127.0.0.1:${d.httpPort}`, `[::1]:${d.httpPort}`]);
      for (const peer of ['127.0.0.1', '[::1]']) await answers(d, peer);
      if (outside) {
        assert.equal(await connects(outside, d.port), false, `gRPC answers on ${outside}`);
        assert.equal(await connects(outside, d.httpPort), false, `HTTP answers on ${outside}`);
      }
    } finally {
      await d.stop();
    }
  });
}

test('where localhost is 127.0.0.1 alone, the daemon listens there alone', { skip: unavailable }, async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_GRPC_HOST: undefined, MANAGER_HTTP_HOST: undefined }), { host: V4_ONLY });
  try {
    assert.equal(d.logs.lines.find((l) => l.msg === 'gRPC server listening').address, `127.0.0.1:${d.port}`);
    await answers(d, '127.0.0.1');
    assert.equal(await connects('::1', d.port), false);
  } finally {
    await d.stop();
  }
});

test('check says where each endpoint listens, and that localhost is loopback only', { skip: unavailable }, () => {
  const r = runCli(['check'], { MANAGER_QEMU_ENABLE_KVM: 'false' }, { host: BOTH });
  // In the resolver's order.
  assert.match(r.stdout, /^PASS\s+gRPC API address\s+MANAGER_GRPC_HOST=localhost: listens on (127\.0\.0\.1:7001 and \[::1\]:7001|\[::1\]:7001 and 127\.0\.0\.1:7001) \(loopback only: reachable from this host alone\)$/m);
  assert.match(r.stdout, /^PASS\s+HTTP endpoint address\s+MANAGER_HTTP_HOST=localhost: listens on (127\.0\.0\.1:7003 and \[::1\]:7003|\[::1\]:7003 and 127\.0\.0\.1:7003) \(loopback only/m);
  const every = runCli(['check'], { MANAGER_QEMU_ENABLE_KVM: 'false', MANAGER_GRPC_HOST: '0.0.0.0' }, { host: BOTH });
  assert.match(every.stdout, /^PASS\s+gRPC API address\s+MANAGER_GRPC_HOST=0\.0\.0\.0: listens on every interface, IPv6 and IPv4 \(reachable from the network\)$/m);
  assert.match(every.stdout, /anyone who can reach 0\.0\.0\.0:7001 can create and remove VMs/);
});
