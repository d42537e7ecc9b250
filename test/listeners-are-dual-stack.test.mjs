// An empty MANAGER_GRPC_HOST / MANAGER_HTTP_HOST means every interface, as Go's ":7001" does:
// IPv6 and IPv4 clients alike reach both endpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, managerPkg, tmpDir } from './daemon.mjs';

test('with an empty host, gRPC and HTTP answer over ::1 and over 127.0.0.1', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_GRPC_HOST: '', MANAGER_HTTP_HOST: '' }));
  try {
    const listening = d.logs.lines.find((l) => l.msg === 'gRPC server listening');
    assert.equal(listening.address, `[::]:${d.port}`);
    for (const host of ['[::1]', '127.0.0.1']) {
      const client = new managerPkg.ManagerService(`${host}:${d.port}`, grpc.credentials.createInsecure());
      try {
        const info = await call(client, 'CVMInfo', { id: 'dual' }, 10_000);
        assert.equal(info.id, 'dual', host);
      } finally {
        client.close();
      }
      const res = await fetch(`http://${host}:${d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
      assert.equal(res.status, 200, host);
    }
  } finally {
    await d.stop();
  }
});
