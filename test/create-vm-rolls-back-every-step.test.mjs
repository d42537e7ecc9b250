// A CreateVm that fails at any step of the launch leaves nothing: no directory, no port, no
// slot, no uid, no GPU (its /dev/vfio node back to root), no QEMU; the caller gets the step's
// error; watchers see the VM fail and go. In-process, with the fake driver and a host of one
// GPU: each step is made to fail where a real process could not.
import assert from 'node:assert/strict';
import test from 'node:test';
import { diskFiles } from '../dist/manager/vm-files.js';
import { waitFor } from './daemon.mjs';
import { createReq, GPUS, startManager, vmDirs } from './manager-harness.mjs';

const asRoot = process.getuid?.() === 0;
const [GPU] = GPUS;

const failingFiles = (what) => ({
  ...diskFiles,
  async create(paths, ...rest) {
    if (what !== 'create') return diskFiles.create(paths, ...rest);
    await diskFiles.create(paths, ...rest); // made, then the disk fills up
    throw Object.assign(new Error(`ENOSPC: no space left on device, write '${paths.envDir}/environment'`), { code: 'ENOSPC' });
  },
  async writeRecord(dir, record) {
    if (what === 'record') throw Object.assign(new Error(`ENOSPC: no space left on device, open '${dir}/record.json.tmp'`), { code: 'ENOSPC' });
    return diskFiles.writeRecord(dir, record);
  },
});

const STEPS = [
  { step: 'no host port is free', setup: (h) => h.ports.hold(46001), teardown: (h) => h.ports.release(46001), kind: 'resource-exhausted', message: /no free host port left in MANAGER_QEMU_HOST_FWD_RANGE=46001-46001/ },
  { step: 'no VM uid is free', isolation: true, setup: (h) => h.uids.hold(1_900_990_001), teardown: (h) => h.uids.release(1_900_990_001), kind: 'resource-exhausted', message: /no free uid left in MANAGER_VM_UID_RANGE/ },
  { step: 'no GPU is free', setup: (h) => h.gpus.hold(GPU, 'another-vm', false), teardown: (h) => h.gpus.release(GPU.bdf, 'another-vm'), kind: 'resource-exhausted', message: /^no free GPU: every GPU of this host \(MANAGER_QEMU_GPU_BDF\) is held: 0000:01:00\.0 held by VM another-vm$/ },
  { step: 'the guest memory cannot be locked for VFIO', lockedMemory: { hard: 8n << 20n, mayRaise: false }, kind: 'failed-precondition', message: /a VM with a GPU locks its guest memory \(2 GiB\) for VFIO, but the daemon's RLIMIT_MEMLOCK hard limit is 8 MiB and it lacks CAP_SYS_RESOURCE: give the daemon LimitMEMLOCK=infinity/ },
  { step: "the GPU's /dev/vfio node cannot be given to the VM's user", isolation: true, vfio: { taken: [], give() { throw new Error("EPERM: operation not permitted, chown '/dev/vfio/10'"); }, takeBack(group) { this.taken.push(group); } }, kind: 'internal', message: /could not give \/dev\/vfio\/10 \(GPU 0000:01:00\.0\) to the VM's user 1900990001: EPERM/ },
  { step: 'the shares cannot be written', files: failingFiles('create'), kind: 'internal', message: /could not write the VM's files in .*ENOSPC/ },
  { step: 'the firmware variables template is missing', env: { MANAGER_QEMU_OVMF_VARS_FILE: '/nonexistent/OVMF_VARS.fd' }, kind: 'failed-precondition', message: /MANAGER_QEMU_OVMF_VARS_FILE="\/nonexistent\/OVMF_VARS.fd" cannot be read \(no such file\)/ },
  { step: 'the QEMU binary cannot be probed', setup: (h) => (h.driver.fail.flavor = new Error('`qemu-system-x86_64 --version`: spawn ENOENT')), kind: 'failed-precondition', message: /QEMU could not be started: `qemu-system-x86_64 --version`: spawn ENOENT/ },
  { step: 'the guest firewall cannot be installed', isolation: true, firewall: { table: 'cocos_manager_t', ensure: async () => { throw new Error('nft: Operation not permitted'); }, removeIf: async () => false }, kind: 'failed-precondition', message: /guest firewall \(nftables table cocos_manager_t\) could not be installed, so no VM is started: nft: Operation not permitted/ },
  { step: 'the QMP socket cannot be opened', setup: (h) => (h.driver.fail.qmp = 'EADDRINUSE'), kind: 'internal', message: /could not open the VM's QMP socket: EADDRINUSE/ },
  { step: 'QEMU cannot be executed', setup: (h) => (h.driver.fail.spawn = 'permission denied'), kind: 'failed-precondition', message: /QEMU could not be started: cannot run .*permission denied/ },
  { step: 'QEMU exits while starting', setup: (h) => (h.driver.startAs = 'exited'), spawned: true, kind: 'failed-precondition', message: /QEMU exited during start \(exit code 1\); last output: qemu-system-x86_64: -kernel \/nonexistent: could not open/ },
  { step: 'QEMU does not finish starting', setup: (h) => (h.driver.startAs = 'timeout'), spawned: true, kind: 'unavailable', message: /did not finish starting .* within MANAGER_QEMU_START_TIMEOUT/ },
  { step: 'the VM is not running once QEMU is up', setup: (h) => (h.driver.startAs = 'paused'), spawned: true, kind: 'failed-precondition', message: /QEMU started but its VM is "paused", not running/ },
  { step: "QEMU's forward is not listening", setup: (h) => (h.driver.bindsForward = false), spawned: true, kind: 'unavailable', message: /nothing listens on host port 46001/ },
  { step: 'the record cannot be written', files: failingFiles('record'), spawned: true, kind: 'internal', message: /could not write the VM's files in .*ENOSPC/ },
];

for (const s of STEPS) {
  test(`CreateVm rolls back everything when ${s.step}`, { skip: s.isolation && !asRoot && 'VM users need root' }, async () => {
    const h = startManager({ isolation: s.isolation, files: s.files, env: s.env, firewall: s.firewall, gpus: [GPU], vfio: s.vfio, lockedMemory: s.lockedMemory });
    s.setup?.(h);
    await assert.rejects(h.manager.create(createReq()), (err) => {
      assert.equal(err.kind, s.kind, err.message);
      assert.match(err.message, s.message);
      return true;
    });
    // Nothing left: files, port, slot, the VM itself.
    assert.deepEqual(vmDirs(h.stateDir), [], 'no VM directory is left');
    assert.equal(h.ports.heldCount, s.step === 'no host port is free' ? 1 : 0, 'the port is given back');
    assert.equal(h.gpus.holderOf(GPU.bdf), s.step === 'no GPU is free' ? 'another-vm' : undefined, 'the GPU is given back');
    const given = h.driver.calls.filter(([c]) => c === 'give-vfio').length;
    assert.equal(h.driver.calls.filter(([c]) => c === 'take-back-vfio').length, given, "each /dev/vfio node given to the VM's user is back to root");
    if (s.step === 'the guest firewall cannot be installed') assert.equal(given, 1, 'its node was given before');
    if (s.vfio) assert.deepEqual(s.vfio.taken, ['10'], 'a node whose give failed half-way is taken back too');
    assert.deepEqual(h.manager.listNow(), [], 'the VM is gone');
    const seen = h.events.map((e) => e.to);
    assert.deepEqual(seen, ['starting', 'failed', 'removed'], 'watchers saw it start, fail and go');
    if (s.spawned) {
      const qemu = h.driver.handles.values().next().value;
      assert.ok(qemu.hasExited, 'the QEMU it spawned is ended');
      assert.equal(h.driver.processes.table.size, 0, 'no QEMU process is left');
      assert.ok(h.observed.includes('start-failed'), 'counted as a failed start');
    } else {
      assert.equal(h.driver.processes.table.size, 0, 'no QEMU was started');
    }
    // The same manager launches the next VM with the one port, slot and uid it has.
    s.teardown?.(h);
    h.driver.fail = {};
    h.driver.startAs = 'ready';
    h.driver.bindsForward = true;
    const h2 = s.files || s.env || s.firewall || s.vfio || s.lockedMemory ? startManager({ isolation: s.isolation, stateDir: h.stateDir.replace(/\/state$/, ''), gpus: [GPU] }) : h;
    // A uid is retired (its processes killed) off the call's path, then free.
    if (s.isolation && h2 === h) assert.ok(await waitFor(() => h.driver.calls.some(([c]) => c === 'retire-uid'), 2_000), 'the uid is retired');
    const vm = await h2.manager.create(createReq());
    assert.equal(vm.port, 46001);
    assert.equal(h2.manager.listNow()[0].gpu, GPU.bdf, 'the one GPU too');
    await h2.manager.remove(vm.id);
    assert.deepEqual(vmDirs(h2.stateDir), []);
  });
}
