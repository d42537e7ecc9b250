// Real QEMU refusing to start (a kernel that is not there) makes CreateVm fail with
// FAILED_PRECONDITION carrying QEMU's own message, and nothing is left behind: on each QEMU of
// qemu-versions.mjs (Debian 12's 7.2 and 11.1 from trixie-backports).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, tcgEnv, tmpDir } from './daemon.mjs';
import { QEMUS } from './qemu-versions.mjs';

for (const qemu of QEMUS) describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  test('a missing kernel: FAILED_PRECONDITION with QEMU\'s message, rolled back', async () => {
    const state = tmpDir();
    const daemon = await Daemon.start(tcgEnv(state, { ...qemu.env, MANAGER_QEMU_MEMORY_SIZE: '128M', MANAGER_QEMU_DISK_IMG_KERNEL_FILE: '/nonexistent/bzImage' }));
    const client = daemon.client();
    try {
      await assert.rejects(call(client, 'CreateVm', {}, 30_000), (e) => {
        assert.equal(e.code, 9, e.details);
        assert.match(e.details, /QEMU exited during start \(exit code 1\).*\/nonexistent\/bzImage/);
        return true;
      });
      assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
    } finally {
      client.close();
      await daemon.stop();
    }
  });
});
