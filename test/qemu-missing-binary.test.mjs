// A QEMU binary that does not exist: FAILED_PRECONDITION that says so, nothing left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';

test('CreateVm with a missing QEMU binary fails with FAILED_PRECONDITION and rolls back', async () => {
  const state = tmpDir();
  const daemon = await Daemon.start(fakeQemuEnv(state, { MANAGER_QEMU_BIN_PATH: '/nonexistent/qemu-system-x86_64' }));
  const client = daemon.client();
  try {
    await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 9 && /ENOENT|not found|No such file/i.test(e.details));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
  } finally {
    client.close();
    await daemon.stop();
  }
});
