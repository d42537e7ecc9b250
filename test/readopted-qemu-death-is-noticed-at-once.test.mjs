// A QEMU that dies right after a daemon restart, before its QMP channel is back (nothing then
// tells of its exit but /proc), is noticed at once like any other exit, not at the next slow
// look. The stand-in here never reconnects its QMP, so /proc is all the daemon has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';

test('a re-adopted QEMU that dies before its QMP channel is back is noticed within a few seconds, not at the 5 s poll', async () => {
  const dir = tmpDir('cocos-readopt-death-');
  const modeFile = path.join(dir, 'mode');
  fs.writeFileSync(modeFile, 'no-qmp-reconnect');
  const first = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), { FAKE_QEMU_MODE_FILE: modeFile }));
  const [vm] = await first.createVms({});
  const second = await first.restart();
  try {
    await second.waitForLog((l) => l.msg === 're-adopted a running VM' && l.cvm_id === vm.cvm_id, 10_000);
    const admin = second.adminClient();
    const { pid } = await call(admin, 'GetVm', { id: vm.cvm_id }).finally(() => admin.close());
    process.kill(Number(pid), 'SIGKILL');
    // The slow poll is 5 s: within 2.5 s only the quick look can have seen it.
    const line = await second.waitForLog((l) => l.cvm_id === vm.cvm_id && /QEMU exited on its own/.test(l.msg ?? ''), 2_500);
    assert.ok(line);
  } finally {
    await second.stop();
  }
});
