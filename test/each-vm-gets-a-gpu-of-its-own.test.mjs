// On a host with GPUs (faked: PCI sysfs, IOMMU groups and /dev/vfio in a namespace of the
// test's, where the daemon and its stand-in QEMUs run), each VM gets a GPU of its own: its QEMU
// is given the device (Go's argv), opens the group's /dev/vfio node as the VM's own user (the
// node is that user's while the VM runs, root's again after) and may lock its guest memory; a
// VM with no GPU free is refused, naming every GPU and the VM that holds it; a removed VM's GPU
// goes to the next; after a daemon restart every GPU stays with its VM. Root only (a uid per VM).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FakeHost, fakeHostUnavailable, pciDevice } from './fake-host.mjs';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { runCli } from './helpers.mjs';

const skip = fakeHostUnavailable({ pci: true });
const daemons = [];
const hosts = [];
after(async () => {
  for (const d of daemons) await d.stop();
  for (const h of hosts) h.dispose();
});

const GPU_A = { bdf: '0000:01:00.0', group: '10' };
const GPU_B = { bdf: '0000:02:00.0', group: '11' };

function getVm(d, id) {
  const admin = d.adminClient();
  return call(admin, 'GetVm', { id }).finally(() => admin.close());
}

/** What the daemon gives a GPU VM's QEMU to lock here: 4M of guest memory and 1 GiB, as far as this process's limit allows. */
function expectedMemlock() {
  const hard = /^Max locked memory\s+\S+\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))[1];
  const capEff = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]}`);
  const needed = (4n << 20n) + (1n << 30n);
  return hard === 'unlimited' || (capEff >> 24n) & 1n || BigInt(hard) >= needed ? needed : BigInt(hard);
}

/** The GPU a VM's QEMU was given, as its command line shows it, and whether it holds the group's node open. */
function qemuGpu(pid) {
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const device = argv.find((a) => a.startsWith('vfio-pci,'));
  const fds = fs.readdirSync(`/proc/${pid}/fd`).map((fd) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ''; } });
  const memlock = /^Max locked memory\s+(\d+|unlimited)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))[1];
  return { device, fds, memlock };
}

test('each VM gets a GPU of its own, used by its own user; none free is refused naming the holders; removal and restart keep each GPU with one VM', { skip }, async () => {
  const host = FakeHost.create({
    pci: {
      devices: [
        pciDevice(GPU_A.bdf, GPU_A.group),
        pciDevice('0000:01:00.1', GPU_A.group, { device: '0x22a3', cls: '0x040300' }),
        pciDevice(GPU_B.bdf, GPU_B.group, { device: '0x2684', cls: '0x030000' }),
        pciDevice('0000:00:03.1', GPU_B.group, { vendor: '0x1022', device: '0x1483', cls: '0x060400', driver: 'pcieport' }),
      ],
    },
  });
  hosts.push(host);
  const env = fakeQemuEnv(path.join(tmpDir('cocos-gpu-'), 'state'), { MANAGER_QEMU_MEMORY_SIZE: '4M', MANAGER_QEMU_MAX_MEMORY: '64M', MANAGER_MAX_VMS: '0' });
  let d = await Daemon.start(env, { wrap: host.prefix });
  daemons.push(d);
  assert.deepEqual(d.logs.lines.find((l) => l.msg === '2 GPU(s) for VMs, one each')?.gpus, [GPU_A.bdf, GPU_B.bdf]);

  const [a, b] = await d.createVms({}, {});
  const va = await getVm(d, a.cvm_id);
  const vb = await getVm(d, b.cvm_id);
  assert.deepEqual([va.gpu, vb.gpu], [GPU_A.bdf, GPU_B.bdf], 'two VMs, two GPUs');
  const info = runCli(['vm', 'info', va.id, '--admin-socket', d.adminSocket]);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, new RegExp(`^gpu +${GPU_A.bdf}$`, 'm'), 'vm info shows it');
  for (const [v, gpu] of [[va, GPU_A], [vb, GPU_B]]) {
    const record = JSON.parse(fs.readFileSync(path.join(d.stateDir, 'vms', v.id, 'record.json'), 'utf8'));
    assert.deepEqual(record.gpu, { bdf: gpu.bdf, iommuGroup: gpu.group });
    const uid = record.runAs.uid;
    const q = qemuGpu(v.pid);
    assert.equal(q.device, `vfio-pci,host=${gpu.bdf},bus=pci.1`);
    assert.ok(q.fds.includes(`/dev/vfio/${gpu.group}`), `QEMU (uid ${uid}) holds /dev/vfio/${gpu.group} open: ${q.fds}`);
    assert.deepEqual(host.stat(`/dev/vfio/${gpu.group}`), { owner: `${uid}:${uid}`, mode: '600', type: 'character special file' }, "the node is the VM's user's while it runs");
    assert.equal(q.memlock, String(expectedMemlock()), 'its locked-memory limit');
  }

  const client = d.client();
  let c;
  try {
    await assert.rejects(call(client, 'CreateVm', {}), (err) => {
      assert.equal(err.code, 8, err.details); // RESOURCE_EXHAUSTED
      assert.equal(err.details, `no free GPU: every GPU of this host (MANAGER_QEMU_GPU_BDF) is held: ${GPU_A.bdf} held by VM ${a.cvm_id}, ${GPU_B.bdf} held by VM ${b.cvm_id}`);
      return true;
    });
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    assert.deepEqual(host.stat(`/dev/vfio/${GPU_A.group}`).owner, '0:0', "root's again once its VM is gone");
    c = await call(client, 'CreateVm', {});
    const vc = await getVm(d, c.cvm_id);
    assert.equal(vc.gpu, GPU_A.bdf, "the removed VM's GPU goes to the next");
    assert.equal(host.stat(`/dev/vfio/${GPU_A.group}`).owner, `${fs.statSync(`/proc/${vc.pid}`).uid}:${fs.statSync(`/proc/${vc.pid}`).uid}`);
  } finally {
    client.close();
  }

  // A crash of the daemon: the VMs run on, and the next daemon finds each GPU with its VM.
  d = await d.restart();
  daemons.push(d);
  const admin = d.adminClient();
  const { vms } = await call(admin, 'ListVms', {}).finally(() => admin.close());
  assert.deepEqual(Object.fromEntries(vms.map((v) => [v.id, [v.state, v.gpu]])), { [b.cvm_id]: ['running', GPU_B.bdf], [c.cvm_id]: ['running', GPU_A.bdf] });
  const client2 = d.client();
  try {
    await assert.rejects(call(client2, 'CreateVm', {}), (err) => err.code === 8 && err.details.includes(`${GPU_B.bdf} held by VM ${b.cvm_id}`));
    await call(client2, 'RemoveVm', { cvm_id: b.cvm_id });
    assert.equal(host.stat(`/dev/vfio/${GPU_B.group}`).owner, '0:0', "an adopted VM's node goes back to root too");
    const e = await call(client2, 'CreateVm', {});
    assert.equal((await getVm(d, e.cvm_id)).gpu, GPU_B.bdf);
  } finally {
    client2.close();
  }
});

test('a list gives VMs exactly its GPUs, in its order; none gives VMs no GPU on a host that has some', { skip }, async () => {
  const host = FakeHost.create({ pci: { devices: [pciDevice(GPU_A.bdf, GPU_A.group), pciDevice(GPU_B.bdf, GPU_B.group), pciDevice('0000:03:00.0', '12')] } });
  hosts.push(host);
  const start = async (bdf) => {
    const d = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-gpu-'), 'state'), { MANAGER_QEMU_MEMORY_SIZE: '4M', MANAGER_MAX_VMS: '0', MANAGER_QEMU_GPU_BDF: bdf }), { wrap: host.prefix });
    daemons.push(d);
    return d;
  };
  const listed = await start('0000:02:00.0,01:00.0');
  assert.deepEqual(listed.logs.lines.find((l) => l.msg === '2 GPU(s) for VMs, one each')?.gpus, [GPU_B.bdf, GPU_A.bdf]);
  const [x, y] = await listed.createVms({}, {});
  assert.deepEqual([(await getVm(listed, x.cvm_id)).gpu, (await getVm(listed, y.cvm_id)).gpu], [GPU_B.bdf, GPU_A.bdf]);
  await assert.rejects(listed.createVms({}), (err) => err.code === 8 && !err.details.includes('0000:03:00.0'), 'a GPU left out of the list is never given');
  await listed.stop();

  const none = await start('none');
  assert.ok(none.logs.lines.some((l) => l.msg === 'GPU passthrough is off (MANAGER_QEMU_GPU_BDF=none)'));
  const [z] = await none.createVms({});
  const vz = await getVm(none, z.cvm_id);
  assert.equal(vz.gpu, '');
  assert.ok(!fs.readFileSync(`/proc/${vz.pid}/cmdline`, 'utf8').includes('vfio-pci'), 'the argv has no GPU');
  const memlock = (pid) => /^Max locked memory.*$/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))[0];
  assert.equal(memlock(vz.pid), memlock('self'), 'no prlimit: QEMU keeps the limit it inherits');
});
