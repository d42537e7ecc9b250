// A VM holds its GPU while its QEMU runs, and no longer: the GPU (and, with a uid per VM, its
// /dev/vfio node, back to root) is freed once QEMU has exited, whether by RemoveVm, TTL or on
// its own, before the VM's files and uid go; the next VM gets it. A restarted daemon holds the
// GPU of every VM an earlier run left until recovery has decided it: an adopted VM keeps it,
// a cleaned one gives it (and its node) back. In-process, with the fake driver.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { diskFiles } from '../dist/manager/vm-files.js';
import { waitFor } from './daemon.mjs';
import { createReq, GPUS, startManager } from './manager-harness.mjs';

const asRoot = process.getuid?.() === 0;
const env = { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: '46001-46010', MANAGER_VM_UID_RANGE: '1900990001-1900990010' };
const holders = (h) => GPUS.map((g) => h.gpus.holderOf(g.bdf) ?? null);
const record = (h, id) => JSON.parse(fs.readFileSync(path.join(h.stateDir, 'vms', id, 'record.json'), 'utf8'));

test('each VM gets a GPU of its own, recorded; with none free CreateVm names every GPU and its VM', async () => {
  const h = startManager({ env, gpus: GPUS });
  const a = await h.manager.create(createReq());
  const b = await h.manager.create(createReq());
  assert.deepEqual(holders(h), [a.id, b.id]);
  assert.deepEqual(record(h, a.id).gpu, GPUS[0]);
  assert.deepEqual(record(h, b.id).gpu, GPUS[1]);
  assert.ok(h.driver.processes.table.get((await h.manager.status(a.id)).pid).cmdline.includes('vfio-pci,host=0000:01:00.0,bus=pci.1'));
  await assert.rejects(h.manager.create(createReq()), (err) => {
    assert.equal(err.kind, 'resource-exhausted');
    assert.equal(err.message, `no free GPU: every GPU of this host (MANAGER_QEMU_GPU_BDF) is held: 0000:01:00.0 held by VM ${a.id}, 0000:02:00.0 held by VM ${b.id}`);
    return true;
  });
  // A host without GPUs: VMs get none and the argv has no VFIO device.
  const plain = startManager({ env });
  const p = await plain.manager.create(createReq());
  assert.equal(record(plain, p.id).gpu, null);
  assert.ok(!plain.driver.processes.table.get((await plain.manager.status(p.id)).pid).cmdline.some((a) => a.startsWith('vfio-pci')));
});

test('a QEMU that dies on its own gives its GPU back at once, though its VM stays listed', async () => {
  const h = startManager({ env, gpus: [GPUS[0]] });
  const { id } = await h.manager.create(createReq());
  assert.equal((await h.manager.status(id)).gpu, GPUS[0].bdf);
  h.driver.handles.get(id).exit({ code: null, signal: 'SIGKILL' });
  assert.ok(await waitFor(() => h.manager.listNow()[0]?.state === 'crashed', 2_000));
  assert.deepEqual(holders(h), [null, null]);
  assert.equal((await h.manager.status(id)).gpu, null, 'a crashed VM holds no GPU');
  const next = await h.manager.create(createReq());
  assert.equal(h.gpus.holderOf(GPUS[0].bdf), next.id, 'the next VM gets it');
});

test('RemoveVm frees the GPU once QEMU has exited, its /dev/vfio node back to root before the files and the uid go', { skip: !asRoot && 'VM users need root' }, async () => {
  const h0 = startManager();
  const calls = h0.driver.calls;
  const files = { ...diskFiles, remove: async (dir) => { calls.push(['remove-dir']); await diskFiles.remove(dir); } };
  const h = startManager({ driver: h0.driver, env, isolation: true, gpus: [GPUS[1]], files });
  const { id } = await h.manager.create(createReq());
  const uid = record(h, id).runAs.uid;
  assert.deepEqual(calls.filter(([c]) => c === 'give-vfio'), [['give-vfio', '11', uid]], "the node is the VM's user's");
  calls.length = 0;
  await h.manager.remove(id);
  assert.ok(await waitFor(() => calls.some(([c]) => c === 'retire-uid'), 2_000));
  const order = calls.map(([c]) => c).filter((c) => ['exited', 'take-back-vfio', 'remove-dir', 'retire-uid'].includes(c));
  assert.deepEqual(order, ['exited', 'take-back-vfio', 'remove-dir', 'retire-uid']);
  assert.deepEqual(holders(h), [null, null]);
});

test('after a restart each GPU stays with the VM an earlier run left with it until recovery decides that VM', { skip: !asRoot && 'VM users need root' }, async () => {
  const before = startManager({ env, isolation: true, gpus: GPUS });
  const alive = await before.manager.create(createReq());
  const gone = await before.manager.create(createReq());
  const { driver } = before;
  driver.processes.table.delete(driver.handles.get(gone.id).pid); // its QEMU exited while no daemon ran
  driver.calls.length = 0;

  const after = startManager({ driver, stateDir: path.dirname(before.stateDir), env, isolation: true, gpus: GPUS });
  const leftovers = await after.manager.expectLeftovers();
  assert.deepEqual(holders(after), [alive.id, gone.id], 'reserved from the records, before /proc is looked at');
  // A CreateVm served meanwhile cannot take either.
  await assert.rejects(after.manager.create(createReq()), (err) => err.kind === 'resource-exhausted' && err.message.includes(`0000:02:00.0 held by VM ${gone.id}`));
  await after.manager.recover(leftovers);
  assert.deepEqual(holders(after), [alive.id, null], 'the adopted VM keeps its GPU; the cleaned one gives it back');
  assert.deepEqual(driver.calls.filter(([c]) => c === 'take-back-vfio'), [['take-back-vfio', '11']], "and the cleaned VM's node goes back to root");
  assert.equal((await after.manager.status(alive.id)).gpu, GPUS[0].bdf);
  const next = await after.manager.create(createReq());
  assert.equal(after.gpus.holderOf(GPUS[1].bdf), next.id);
  // The adopted VM's GPU, and its node, are given back when it goes.
  await after.manager.remove(alive.id);
  assert.equal(after.gpus.holderOf(GPUS[0].bdf), undefined);
  assert.deepEqual(driver.calls.filter(([c]) => c === 'take-back-vfio').map(([, g]) => g), ['11', '10']);
});
