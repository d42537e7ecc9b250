// Two daemons wrongly given one MANAGER_VM_UID_RANGE (root: a uid per VM): once a removed VM's
// QEMU is gone its uid looks free to the other daemon, whose next VM may take it. The first
// daemon's retirement of that uid (killing what still runs as it) must be over by then, or it
// kills the other daemon's new QEMU. Seen when retirement ran 50 ms after RemoveVm: the second
// daemon's CreateVm failed with "QEMU exited during start (killed by SIGKILL)".
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, nextUidRange, tmpDir } from './daemon.mjs';

const skip = process.getuid?.() === 0 ? false : 'needs root (a uid per VM)';
const daemons = [];
after(async () => {
  for (const d of daemons) await d.stop();
});

test('a uid removed by one daemon and taken at once by another: the other\'s VM is not killed', { skip }, async () => {
  const range = nextUidRange(2);
  const start = async (name) => {
    const d = await Daemon.start(fakeQemuEnv(path.join(tmpDir(`cocos-shared-uids-${name}-`), 'state'), { MANAGER_VM_UID_RANGE: range, MANAGER_MAX_VMS: '0' }));
    daemons.push(d);
    return d;
  };
  const a = await start('a');
  const b = await start('b');
  const ca = a.client();
  const cb = b.client();
  try {
    for (let i = 0; i < 8; i++) {
      const va = await call(ca, 'CreateVm', {});
      await call(ca, 'RemoveVm', { cvm_id: va.cvm_id });
      // At once: the uid a's VM had is free as far as b can see.
      const vb = await call(cb, 'CreateVm', {});
      await new Promise((r) => setTimeout(r, 100)); // what a retirement could still do, it has done by now
      const admin = b.adminClient();
      const got = await call(admin, 'GetVm', { id: vb.cvm_id }).finally(() => admin.close());
      assert.equal(got.state, 'running', `round ${i}: b's VM is ${got.state} (${got.exit_cause ?? ''})`);
      await call(cb, 'RemoveVm', { cvm_id: vb.cvm_id });
    }
  } finally {
    ca.close();
    cb.close();
  }
});
