// The source of the VM disks (MANAGER_QEMU_SRC_DISK_FILE) is pinned: its identity and SHA-384
// are taken at start and again when it changes, never per CreateVm. Written in place while
// overlays depend on it, every such overlay is corrupt: that is reported at error, and CreateVm
// refuses (FAILED_PRECONDITION, saying what to do) until it is settled, i.e. none of those VMs is
// left, whatever restarts come between. A source replaced by a new file, or touched without a
// change, is simply pinned again. In-process, with the fake driver and the real qemu-img; the
// source is watched, and polled every 100 ms here.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { tmpDir, waitFor } from './daemon.mjs';
import { FakeDriver } from './fake-driver.mjs';
import { createReq, makeDiskSource, startManager } from './manager-harness.mjs';

const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');
const FAST = { pollMs: 100 };
const RANGE = { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: '46001-46009' };

/** Writes into the source's own inode, as `qemu-io` or `dd conv=notrunc` would. */
function writeInPlace(file, pattern = 0x11) {
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -q -P ${pattern} 0 64k`, file], { timeout: 20_000 });
}

/** The pin settles (bounded): a digest other than `than`. */
async function repinned(h, than) {
  assert.ok(await waitFor(() => h.disks.source.pinned && h.disks.source.pinned.sha384 !== than, 10_000), 'the source is pinned again');
  return h.disks.source.pinned.sha384;
}

async function refused(h, message) {
  await assert.rejects(h.manager.create(createReq()), (err) => {
    assert.equal(err.kind, 'failed-precondition', err.message);
    assert.match(err.message, message);
    return true;
  });
}

test('written in place under an overlay: reported at error, CreateVm refused saying what to do, until that VM is removed', async () => {
  const h = startManager({ disk: FAST, env: RANGE });
  const source = h.config.qemu.disk.srcFile;
  const a = await h.manager.create(createReq());
  const before = (await h.manager.get(a.id)).disk.source.sha384;

  writeInPlace(source);
  assert.ok(await waitFor(() => h.lines.some((l) => l.level === 50 && /written in place while VM disks were overlays on it/.test(l.msg)), 10_000), 'reported at error');
  const error = h.lines.find((l) => l.level === 50 && /written in place/.test(l.msg));
  assert.deepEqual(error.vms, [a.id], 'naming the VM whose disk is corrupt');
  assert.match(error.msg, /now corrupt; remove them \(RemoveVm\)/);
  await refused(h, new RegExp(`MANAGER_QEMU_SRC_DISK_FILE\\) was written in place .* the disks of VMs ${a.id} are corrupt: remove those VMs \\(RemoveVm\\); CreateVm accepts again once none is left`));
  assert.equal(h.driver.calls.filter(([c]) => c === 'spawn').length, 1, 'no QEMU was started for it');
  assert.equal(fs.readdirSync(path.join(h.stateDir, 'vms')).length, 1, 'nor a directory left');

  // Settled: the one VM on the earlier content is gone.
  await h.manager.remove(a.id);
  assert.ok(h.lines.some((l) => /disk source settled/.test(l.msg)));
  const b = await h.manager.create(createReq());
  const after = (await h.manager.get(b.id)).disk.source.sha384;
  assert.notEqual(after, before);
  assert.equal(after, sha384(source), 'the new VM\'s disk is made on the new content, pinned');
  await h.manager.remove(b.id);
});

test('a source replaced by a new file, or touched, is pinned again; running VMs keep what they were made on', async () => {
  const h = startManager({ disk: FAST, env: RANGE });
  const source = h.config.qemu.disk.srcFile;
  const a = await h.manager.create(createReq());
  const first = (await h.manager.get(a.id)).disk.source.sha384;

  // Touched: the same content at a new time is no change.
  const later = new Date(Date.now() + 60_000);
  fs.utimesSync(source, later, later);
  assert.ok(await waitFor(() => h.lines.some((l) => /same content/.test(l.msg ?? '')), 10_000));
  const b = await h.manager.create(createReq());
  assert.equal((await h.manager.get(b.id)).disk.source.sha384, first);

  // Replaced by rename: the running QEMUs keep the file they opened; new VMs get the new one.
  const next = makeDiskSource(path.dirname(source), { name: 'next.qcow2', pattern: 0x77 });
  fs.renameSync(next, source);
  const second = await repinned(h, first);
  assert.equal(second, sha384(source));
  const c = await h.manager.create(createReq());
  assert.equal((await h.manager.get(c.id)).disk.source.sha384, second);
  assert.equal((await h.manager.get(a.id)).disk.source.sha384, first, 'the running VM keeps its pin');
  const templates = fs.readdirSync(h.stateDir).filter((n) => n.startsWith('disk-template-'));
  assert.deepEqual(templates, [`disk-template-${second.slice(0, 16)}.qcow2`], 'the empty overlay disks are copied from follows the pin');
  assert.ok(!h.lines.some((l) => l.level >= 50), JSON.stringify(h.lines.filter((l) => l.level >= 50)));
  for (const vm of [a, b, c]) await h.manager.remove(vm.id);
});

test('written in place while the daemon was down: the restarted daemon finds the re-adopted overlay corrupt', async () => {
  const driver = new FakeDriver();
  const first = startManager({ driver, disk: FAST, env: RANGE });
  const source = first.config.qemu.disk.srcFile;
  const vm = await first.manager.create(createReq());
  first.manager.beginShutdown();
  first.disks.source.stop();
  writeInPlace(first.config.qemu.disk.srcFile, 0x22);

  const second = startManager({ driver, stateDir: first.stateDir.replace(/\/state$/, ''), disk: FAST, env: RANGE });
  await second.manager.recover(await second.manager.expectLeftovers());
  await refused(second, new RegExp(`the disks of VMs ${vm.id} are corrupt`));
  assert.ok(second.lines.some((l) => l.level === 50 && l.vms?.includes(vm.id)));
  await second.manager.remove(vm.id);
  const b = await second.manager.create(createReq());
  assert.equal((await second.manager.get(b.id)).disk.source.sha384, sha384(source));
  await second.manager.remove(b.id);
});

test('a missing or wrong source refuses CreateVm naming the setting; put right, it is pinned without a restart', async () => {
  const dir = tmpDir('cocos-src-');
  const source = path.join(dir, 'later.qcow2');
  const h = startManager({ disk: { ...FAST, source }, env: RANGE });
  await refused(h, /the disk source .*later\.qcow2 \(MANAGER_QEMU_SRC_DISK_FILE\) cannot be read: ENOENT/);

  fs.writeFileSync(source, Buffer.alloc(1024 * 1024, 1)); // a raw image
  await refused(h, /later\.qcow2 \(MANAGER_QEMU_SRC_DISK_FILE\) is a raw image, not qcow2/);

  fs.rmSync(source);
  const made = makeDiskSource(dir, { name: 'made.qcow2' });
  fs.renameSync(made, source);
  const vm = await h.manager.create(createReq());
  assert.equal((await h.manager.get(vm.id)).disk.source.sha384, sha384(source));
  await h.manager.remove(vm.id);
});

test('an overlay as the source is refused: its own backing file would be unpinned', async () => {
  const dir = tmpDir('cocos-src-');
  const base = makeDiskSource(dir);
  const overlay = path.join(dir, 'overlay.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay], { timeout: 20_000 });
  const h = startManager({ disk: { source: overlay } });
  await refused(h, /overlay\.qcow2 \(MANAGER_QEMU_SRC_DISK_FILE\) is itself an overlay on .*source\.qcow2: give the whole image/);
});
