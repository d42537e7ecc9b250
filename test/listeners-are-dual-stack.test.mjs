// 0.0.0.0 and :: mean every interface, IPv6 and IPv4 alike, as they do for the Go manager (whose
// cocos-manager.env sets MANAGER_GRPC_HOST=0.0.0.0; Go's listener on an unspecified address is
// dual-stack): IPv6 and IPv4 clients alike reach both endpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, managerPkg, tmpDir } from './daemon.mjs';

for (const host of ['0.0.0.0', '::']) {
  test(`with host ${host}, gRPC and HTTP listen on [::] and answer over ::1 and over 127.0.0.1`, async () => {
    const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_GRPC_HOST: host, MANAGER_HTTP_HOST: host }));
    try {
      assert.equal(d.logs.lines.find((l) => l.msg === 'gRPC server listening').address, `[::]:${d.port}`);
      assert.deepEqual(d.logs.lines.find((l) => l.msg === 'HTTP endpoint listening').addresses, [`[::]:${d.httpPort}`]);
      for (const peer of ['[::1]', '127.0.0.1']) {
        const client = new managerPkg.ManagerService(`${peer}:${d.port}`, grpc.credentials.createInsecure());
        try {
          const info = await call(client, 'CVMInfo', { id: 'dual' }, 10_000);
          assert.equal(info.id, 'dual', peer);
        } finally {
          client.close();
        }
        const res = await fetch(`http://${peer}:${d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
        assert.equal(res.status, 200, peer);
      }
    } finally {
      await d.stop();
    }
  });
}
