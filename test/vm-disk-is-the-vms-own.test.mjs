// A VM that boots from its disk (MANAGER_QEMU_ENABLE_DISK) gets a disk of its own, a resource
// like its port and uid: a qcow2 overlay on the pinned source, in the VM's directory, its user's
// alone (0600); QEMU gets Go's disk options and no kernel; the record and the VM's view name the
// disk and the source's SHA-384. It goes with the VM (RemoveVm, TTL), after QEMU; it survives a
// daemon restart and is re-adopted; another format is a whole copy, as Go makes it. In-process,
// with the fake driver and the real qemu-img.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { diskFiles } from '../dist/manager/vm-files.js';
import { QemuImg } from '../dist/vm/qemu-img.js';
import { waitFor } from './daemon.mjs';
import { FakeDriver } from './fake-driver.mjs';
import { createReq, startManager, vmDirs } from './manager-harness.mjs';

const asRoot = process.getuid?.() === 0;
const GIB = 1024 ** 3;
const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');
const imageInfo = (file) => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8', timeout: 20_000 }));

test('the disk is a qcow2 overlay on the source, in the VM\'s directory, its user\'s alone; QEMU gets Go\'s disk options and no kernel', { skip: !asRoot && 'VM users need root' }, async () => {
  const h = startManager({ disk: {}, isolation: true });
  const source = h.config.qemu.disk.srcFile;
  const digest = sha384(source);
  const vm = await h.manager.create(createReq());
  const record = await h.manager.get(vm.id);
  const disk = record.disk;
  const dir = path.join(h.stateDir, 'vms', vm.id);
  assert.equal(disk.file, path.join(dir, 'disk.qcow2'));
  assert.equal(disk.kind, 'overlay');
  const st = fs.statSync(disk.file);
  assert.equal(st.mode & 0o777, 0o600, 'mode 0600');
  assert.equal(st.uid, record.runAs.uid, "the VM's user owns it");
  assert.equal(st.gid, record.runAs.gid);
  const info = imageInfo(disk.file);
  assert.equal(info.format, 'qcow2');
  assert.equal(info['backing-filename'], source, 'its backing file is the source');
  assert.equal(info['backing-filename-format'], 'qcow2');
  // Go's size: the source's virtual size in whole GiB, plus 1 GiB (64 MiB -> 2 GiB).
  assert.equal(info['virtual-size'], 2 * GIB);
  assert.equal(disk.virtualSize, 2 * GIB);
  assert.ok(st.size < 1024 * 1024, `a few hundred KiB, whatever the source holds (${st.size})`);
  assert.deepEqual({ path: disk.source.path, sha384: disk.source.sha384 }, { path: source, sha384: digest });

  const argv = record.command;
  const nic = argv.findIndex((a) => a.startsWith('virtio-net-pci,'));
  assert.deepEqual(argv.slice(nic + 1, nic + 7), [
    '-drive', `file=${disk.file},if=none,id=disk0,format=qcow2`,
    '-device', 'virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true',
    '-device', 'scsi-hd,drive=disk0,bus=scsi0.0',
  ]);
  for (const opt of ['-kernel', '-append', '-initrd']) assert.ok(!argv.includes(opt), opt);
  assert.equal(record.kernelCmdline, '', 'no kernel command line of the manager\'s');
  assert.deepEqual((await h.manager.status(vm.id)).disk, disk, 'the VM\'s view names its disk');

  await h.manager.remove(vm.id);
  assert.equal(fs.existsSync(disk.file), false, 'removed with the VM');
  assert.equal(sha384(source), digest, 'the source is unchanged');
});

test('RemoveVm deletes the disk only once QEMU has exited; the TTL removes it too', async () => {
  const driver = new FakeDriver();
  const seen = [];
  const files = {
    ...diskFiles,
    async remove(dir) {
      const file = path.join(dir, 'disk.qcow2');
      seen.push({ qemuExited: driver.calls.some(([c]) => c === 'exited'), diskThere: fs.existsSync(file) });
      return diskFiles.remove(dir);
    },
  };
  const h = startManager({ driver, files, disk: {} });
  const vm = await h.manager.create(createReq());
  const { disk } = await h.manager.get(vm.id);
  await h.manager.remove(vm.id);
  assert.deepEqual(seen, [{ qemuExited: true, diskThere: true }], 'QEMU exits, then the directory and its disk go');
  assert.equal(fs.existsSync(disk.file), false);

  const ttl = await h.manager.create(createReq('300ms'));
  const ttlDisk = (await h.manager.get(ttl.id)).disk;
  assert.ok(fs.existsSync(ttlDisk.file));
  assert.ok(await waitFor(() => h.events.some((e) => e.id === ttl.id && e.to === 'removed'), 5_000), 'removed at its TTL');
  assert.equal(fs.existsSync(ttlDisk.file), false, 'its disk with it');
  assert.deepEqual(vmDirs(h.stateDir), []);
  assert.deepEqual(h.disks.source.dependentVms, [], 'nothing depends on the source any more');
});

test('the disk is kept across a daemon restart, re-adopted with its VM, and removed with it then', async () => {
  const driver = new FakeDriver();
  const first = startManager({ driver, disk: {} });
  const vm = await first.manager.create(createReq());
  const { disk } = await first.manager.get(vm.id);
  first.manager.beginShutdown();

  // The next daemon, on the same state directory: the QEMU still runs.
  const second = startManager({ driver, stateDir: first.stateDir.replace(/\/state$/, ''), disk: {} });
  await second.manager.recover(await second.manager.expectLeftovers());
  const adopted = await second.manager.get(vm.id);
  assert.deepEqual(adopted.disk, disk, 'the record names the same disk');
  assert.ok(fs.existsSync(disk.file), 'the disk is still there');
  assert.deepEqual(second.disks.source.dependentVms, [vm.id], 'the re-adopted overlay depends on the source again');
  await second.manager.remove(vm.id);
  assert.equal(fs.existsSync(disk.file), false);
  assert.deepEqual(second.disks.source.dependentVms, []);
});

test('a VM paused by QEMU on its disk (a full state directory) says so, naming the disk', async () => {
  const h = startManager({ disk: {} });
  const vm = await h.manager.create(createReq());
  const qemu = h.driver.handles.get(vm.id);
  qemu.emit('BLOCK_IO_ERROR', { device: 'disk0', 'node-name': '#block391', operation: 'write', action: 'stop', nospace: true, reason: 'No space left on device' });
  qemu.emit('STOP');
  const v = await h.manager.status(vm.id);
  assert.equal(v.state, 'paused');
  assert.equal(v.pauseReason, "I/O error on the VM's disk disk0 (write, no space left)");
  await h.manager.remove(vm.id);
});

test('aa_kbs_params on a disk VM is warned about, naming the field (as in Go it does not reach the guest)', async () => {
  const h = startManager({ disk: {} });
  const req = { ...createReq(), aaKbsParams: 'cc_kbc::http://10.0.2.2:8080' };
  const vm = await h.manager.create(req);
  const warning = h.lines.find((l) => l.level === 40 && l.field === 'aa_kbs_params');
  assert.ok(warning, JSON.stringify(h.lines.filter((l) => l.level >= 40)));
  assert.equal(warning.cvm_id, vm.id);
  assert.match(warning.msg, /aa_kbs_params is not passed to a VM that boots from its disk/);
  assert.ok(!(await h.manager.get(vm.id)).command.some((a) => a.includes('aa_kbc_params')));
  await h.manager.remove(vm.id);
  // A kernel boot takes it on -append, as ever: no warning there.
  const k = startManager();
  const kvm = await k.manager.create(req);
  assert.match((await k.manager.get(kvm.id)).kernelCmdline, /agent\.aa_kbc_params=cc_kbc::http:\/\/10\.0\.2\.2:8080$/);
  assert.ok(!k.lines.some((l) => l.field === 'aa_kbs_params'));
});

test('CreateVm neither hashes the source nor runs qemu-img: the digest and the empty overlay made when the source was pinned serve every VM', async () => {
  const images = new QemuImg();
  const made = [];
  const createOverlay = images.createOverlay.bind(images);
  images.createOverlay = (file, ...rest) => (made.push(file), createOverlay(file, ...rest));
  const h = startManager({ disk: { images }, env: { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: '46001-46003' } });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await h.manager.create(createReq())).id);
  assert.equal(h.disks.source.hashRuns, 1, 'hashed once, at start');
  assert.equal(made.length, 1, 'one overlay made by qemu-img, when the source was pinned');
  assert.equal(path.dirname(made[0]), h.stateDir, 'in the state directory, not a temporary one');
  for (const id of ids) assert.equal(imageInfo((await h.manager.get(id)).disk.file)['backing-filename'], h.config.qemu.disk.srcFile, 'each disk an overlay of its own on the source');
  const digests = await Promise.all(ids.map(async (id) => (await h.manager.get(id)).disk.source.sha384));
  assert.deepEqual(new Set(digests), new Set([sha384(h.config.qemu.disk.srcFile)]));
  for (const id of ids) await h.manager.remove(id);
});

test('MANAGER_QEMU_DISK_FORMAT=raw: a whole copy in that format, as Go makes it, logged with its cost; the source is no base of it', async () => {
  const h = startManager({ disk: {}, env: { MANAGER_QEMU_DISK_FORMAT: 'raw' } });
  const source = h.config.qemu.disk.srcFile;
  const digest = sha384(source);
  const vm = await h.manager.create(createReq());
  const { disk, command } = await h.manager.get(vm.id);
  assert.equal(disk.kind, 'copy');
  assert.equal(disk.file, path.join(h.stateDir, 'vms', vm.id, 'disk.raw'));
  const info = imageInfo(disk.file);
  assert.equal(info.format, 'raw');
  assert.equal(info['backing-filename'], undefined, 'no backing file');
  assert.equal(info['virtual-size'], 2 * GIB);
  assert.ok(command.includes(`file=${disk.file},if=none,id=disk0,format=raw`));
  const cost = h.lines.find((l) => /whole copy of the source/.test(l.msg ?? ''));
  assert.ok(cost && cost.ms >= 0 && cost.bytes_written > 0 && cost.source_bytes > 0, JSON.stringify(cost));
  // Its bytes: the source's first MiB as written (qemu-io's pattern 0x5a).
  const fd = fs.openSync(disk.file, 'r');
  const head = Buffer.alloc(16);
  fs.readSync(fd, head, 0, 16, 0);
  fs.closeSync(fd);
  assert.deepEqual(head, Buffer.alloc(16, 0x5a));
  assert.deepEqual(h.disks.source.dependentVms, [], 'a copy does not depend on the source');
  assert.equal(sha384(source), digest);
  await h.manager.remove(vm.id);
  assert.equal(fs.existsSync(disk.file), false);
});
