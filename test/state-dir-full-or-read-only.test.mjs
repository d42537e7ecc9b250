// The state directory full (ENOSPC) or read-only (EROFS) during CreateVm and RemoveVm: a clean
// error, no partial VM, nothing leaked; once the disk is fixed, everything works again.
// The test mounts a small tmpfs (it runs as root, as CI does).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, tmpDir, waitFor } from './daemon.mjs';

const mnt = tmpDir('cocos-tmpfs-');
const sh = (...args) => execFileSync(args[0], args.slice(1), { stdio: 'pipe', timeout: 10_000 });
// Room for one VM (its 128 KiB firmware variables and a few small files), not two.
sh('mount', '-t', 'tmpfs', '-o', 'size=200k,mode=0711', 'tmpfs', mnt);
after(() => {
  try {
    sh('umount', '-l', mnt);
  } catch {
    /* already gone */
  }
});

test('ENOSPC and EROFS give clean errors and leave no partial VM; fixed disk, everything works', async () => {
  const state = path.join(mnt, 'state');
  const d = await Daemon.start(fakeQemuEnv(state, { MANAGER_MAX_VMS: '2' }));
  const client = d.client();
  const vmsDir = path.join(state, 'vms');
  try {
    const a = await call(client, 'CreateVm', {});
    await assert.rejects(call(client, 'CreateVm', {}), (e) => {
      assert.equal(e.code, 13, e.details);
      assert.match(e.details, /could not write the VM's files in .*: ENOSPC/);
      return true;
    });
    assert.deepEqual(fs.readdirSync(vmsDir), [a.cvm_id], 'no directory of the failed VM');

    // Read-only from now on for the daemon: a read-only bind mount over vms/ (QEMU's log files,
    // opened before, stay writable through the mount underneath, as they would on a real host).
    sh('mount', '--bind', vmsDir, vmsDir);
    sh('mount', '-o', 'remount,ro,bind', vmsDir);
    await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 13 && /EROFS/.test(e.details));
    const { pid } = JSON.parse(fs.readFileSync(path.join(vmsDir, a.cvm_id, 'record.json'), 'utf8'));
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: a.cvm_id }), (e) => e.code === 13 && /could not be removed \(EROFS\).*call RemoveVm again/.test(e.details));
    assert.ok(await waitFor(() => !isAlive(pid), 3_000), 'QEMU stopped anyway');
    assert.ok(await portIsFree(Number(a.forwarded_port)));

    sh('umount', vmsDir);
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    assert.deepEqual(fs.readdirSync(vmsDir), []);
    // Slots and ports were all given back (MAX_VMS=2).
    const b = await call(client, 'CreateVm', {});
    await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
    const info = await call(client, 'CVMInfo', { id: 'alive' });
    assert.equal(info.id, 'alive');
  } finally {
    client.close();
    await d.stop();
  }
});
