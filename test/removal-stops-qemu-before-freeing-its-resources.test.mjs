// RemoveVm and TTL take a VM down in one order: the power button (if configured), QMP quit, the
// exit through the state machine, then the port, the directory, and the uid last (QEMU ran as
// it and owned files). In-process, with the fake driver; the order is read from one log.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { diskFiles } from '../dist/manager/vm-files.js';
import { waitFor } from './daemon.mjs';
import { createReq, startManager, vmDirs } from './manager-harness.mjs';

const asRoot = process.getuid?.() === 0;

/** Files whose removal is logged in the driver's call log, beside QEMU's steps. */
const loggedFiles = (calls) => ({ ...diskFiles, remove: async (dir) => { calls.push(['remove-dir', path.basename(dir)]); await diskFiles.remove(dir); } });

test('RemoveVm presses the power button, quits QEMU, then frees the port, the files and the uid, in that order', { skip: !asRoot && 'VM users need root' }, async () => {
  const h0 = startManager();
  const h = startManager({ driver: h0.driver, isolation: true, files: loggedFiles(h0.driver.calls), env: { MANAGER_QEMU_POWERDOWN_TIMEOUT: '200ms' } });
  const { id, port } = await h.manager.create(createReq());
  assert.equal(port, 46001);
  assert.deepEqual(h.manager.listNow().map((v) => v.state), ['running']);
  h.driver.calls.length = 0;
  await h.manager.remove(id);
  const order = h.driver.calls.map(([what]) => what);
  // The guest ignores the button here: QEMU is quit once MANAGER_QEMU_POWERDOWN_TIMEOUT has passed.
  assert.deepEqual(order.slice(0, 5), ['powerdown', 'stop', 'exited', 'close', 'remove-dir']);
  assert.ok(await waitFor(() => h.driver.calls.some(([c]) => c === 'retire-uid'), 2_000), 'the uid is retired after the files are gone');
  assert.ok(h.driver.calls.findIndex(([c]) => c === 'retire-uid') > order.indexOf('remove-dir'));
  assert.equal(h.ports.heldCount, 0);
  assert.deepEqual(vmDirs(h.stateDir), []);
  assert.deepEqual(h.events.map((e) => e.to), ['starting', 'running', 'stopping', 'stopped', 'removed']);
  assert.equal(h.events.at(-1).reason, 'RemoveVm');
  assert.equal(h.events.at(-2).vm.exit.cause, 'killed by the manager');
  assert.deepEqual(h.observed, ['started', 'removed']);
});

test('a guest that obeys the power button shuts down without a quit', async () => {
  const h = startManager({ env: { MANAGER_QEMU_POWERDOWN_TIMEOUT: '5s' } });
  h.driver.guestObeysPowerdown = true;
  const { id } = await h.manager.create(createReq());
  h.driver.calls.length = 0;
  await h.manager.remove(id);
  assert.deepEqual(h.driver.calls.map(([c]) => c).slice(0, 2), ['powerdown', 'exited']);
  assert.ok(!h.driver.calls.some(([c]) => c === 'stop'), 'QEMU was not quit');
  assert.equal(h.events.find((e) => e.to === 'stopped').vm.exit.cause, 'guest shutdown');
});

test('a VM whose TTL ends is removed like a RemoveVm, and counted as a TTL removal', async () => {
  const h = startManager();
  const { id } = await h.manager.create(createReq('300ms'));
  const [vm] = h.manager.listNow();
  assert.ok(vm.expiresAt, 'the VM says when it expires');
  assert.ok(await waitFor(() => h.events.some((e) => e.to === 'removed'), 10_000), 'removed once its TTL ended');
  const removed = h.events.at(-1);
  assert.equal(removed.id, id);
  assert.equal(removed.reason, 'TTL expired');
  assert.ok(Date.parse(removed.at) >= Date.parse(vm.expiresAt), 'never before its deadline');
  assert.deepEqual(h.observed, ['started', 'ttl']);
  assert.deepEqual(vmDirs(h.stateDir), []);
  assert.equal(h.ports.heldCount, 0);
});

test('a QEMU that dies on its own leaves a crashed VM that keeps its record and gives its port back', async () => {
  const h = startManager();
  const { id } = await h.manager.create(createReq());
  h.driver.handles.get(id).exit({ code: null, signal: 'SIGKILL' });
  assert.ok(await waitFor(() => h.manager.listNow()[0]?.state === 'crashed', 2_000));
  assert.equal(h.ports.heldCount, 0, 'the port is free for the next VM');
  assert.deepEqual(h.observed, ['started', 'crashed']);
  // The record says so, for the operator and for a restarted daemon.
  assert.ok(await waitFor(() => JSON.parse(fs.readFileSync(path.join(h.stateDir, 'vms', id, 'record.json'), 'utf8')).state === 'crashed', 2_000));
  // The slot is free too (MANAGER_MAX_VMS=1): a crashed VM does not block the next one.
  const next = await h.manager.create(createReq());
  assert.equal(next.port, 46001);
  await h.manager.remove(id);
  await h.manager.remove(next.id);
});

test('RemoveVm of a VM still starting is refused and does not disturb the start', async () => {
  const h = startManager();
  let release;
  const gate = new Promise((r) => (release = r));
  const waitReady = h.driver.spawn.bind(h.driver);
  h.driver.spawn = async (spec, log) => {
    const handle = await waitReady(spec, log);
    const ready = handle.waitReady.bind(handle);
    handle.waitReady = async (ms) => (await gate, ready(ms));
    return handle;
  };
  const creating = h.manager.create(createReq());
  assert.ok(await waitFor(() => h.manager.listNow().length === 1, 2_000));
  const [starting] = h.manager.listNow();
  await assert.rejects(h.manager.remove(starting.id), (err) => err.kind === 'failed-precondition' && /still starting/.test(err.message));
  release();
  const { id } = await creating;
  assert.equal(id, starting.id);
  await h.manager.remove(id);
});
