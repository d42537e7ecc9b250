// Readiness comes from QEMU itself (QMP answers only after qemu_init), so a QEMU about to fail
// on a missing kernel is never taken for a started one, however loaded the machine is: 20 of 20
// CreateVm are FAILED_PRECONDITION with QEMU's message, and nothing is left behind.
// COCOS_BURNERS=N runs N CPU-burning processes beside it (checked by hand with 4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, isAlive, tcgEnv, tmpDir } from './daemon.mjs';
import { QEMUS } from './qemu-versions.mjs';

const RUNS = Number(process.env.COCOS_MISSING_KERNEL_RUNS ?? 20);

for (const qemu of QEMUS) test(`${qemu.name}: a missing kernel, ${RUNS} times: every CreateVm FAILED_PRECONDITION with QEMU's message, nothing left`, { skip: qemu.skip, timeout: 300_000 }, async () => {
  const burners = [];
  for (let i = 0; i < Number(process.env.COCOS_BURNERS ?? 0); i++) {
    burners.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  }
  const state = tmpDir();
  const daemon = await Daemon.start(tcgEnv(state, { ...qemu.env, MANAGER_QEMU_MEMORY_SIZE: '128M', MANAGER_QEMU_DISK_IMG_KERNEL_FILE: '/nonexistent/bzImage' }));
  const client = daemon.client();
  try {
    const outcomes = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await call(client, 'CreateVm', {}, 60_000).then(
        (res) => `OK ${res.cvm_id}`,
        (e) => (e.code === 9 && /QEMU exited during start \(exit code 1\).*\/nonexistent\/bzImage/.test(e.details) ? 'rejected' : `code ${e.code}: ${e.details}`),
      );
      outcomes.push(r);
    }
    assert.deepEqual(outcomes, Array(RUNS).fill('rejected'));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
    // Every QEMU the daemon started is gone.
    const qemus = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && isAlive(Number(e))).filter((e) => {
      try {
        return fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(path.join(path.resolve(state), 'vms')); // not the daemon's lock holder
      } catch {
        return false;
      }
    });
    assert.deepEqual(qemus, []);
  } finally {
    client.close();
    await daemon.stop();
    for (const b of burners) b.kill('SIGKILL');
  }
});
