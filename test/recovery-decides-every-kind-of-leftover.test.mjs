// A restarted daemon decides each VM directory an earlier run left: re-adopt a VM whose QEMU
// still runs; clean up one whose QEMU is gone, whose PID now belongs to another process, or
// whose start was cut short (its QEMU killed); leave alone what it cannot read. In-process: the
// "earlier run" is a manager on the same state directory and fake process table.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { createReq, startManager, vmDirs } from './manager-harness.mjs';

const env = { MANAGER_MAX_VMS: '10', MANAGER_QEMU_HOST_FWD_RANGE: '46001-46010', MANAGER_VM_UID_RANGE: '1900990001-1900990010' };

test('recovery re-adopts, cleans or skips each leftover, and kills only QEMUs of unfinished starts', async () => {
  const before = startManager({ env });
  const { driver, stateDir } = before;
  const vms = {};
  for (const name of ['alive', 'gone', 'reused', 'starting']) vms[name] = await before.manager.create(createReq());
  const pidOf = (name) => driver.handles.get(vms[name].id).pid;
  const vmDir = (id) => path.join(stateDir, 'vms', id);
  const record = (id) => JSON.parse(fs.readFileSync(path.join(vmDir(id), 'record.json'), 'utf8'));

  // The earlier run dies (nothing of it runs on). Meanwhile, on the host:
  driver.processes.table.delete(pidOf('gone')); // this QEMU exited
  driver.processes.table.set(pidOf('reused'), { startTime: '99', cmdline: ['sleep', '1000'] }); // its PID is another process's now
  // A record still 'starting' (as an earlier version wrote): its caller never got an answer.
  fs.writeFileSync(path.join(vmDir(vms.starting.id), 'record.json'), JSON.stringify({ ...record(vms.starting.id), state: 'starting' }));
  // A start cut short before any record: its QEMU names the directory.
  const orphanId = randomUUID();
  fs.mkdirSync(path.join(vmDir(orphanId), 'certs'), { recursive: true });
  const orphan = driver.processes.add(['qemu-system-x86_64', '-fsdev', `local,id=cert_fs,path=${vmDir(orphanId)}/certs,security_model=mapped`]);
  // What cannot be read is left for the operator.
  const corruptId = randomUUID();
  fs.mkdirSync(vmDir(corruptId));
  fs.writeFileSync(path.join(vmDir(corruptId), 'record.json'), '{"version": 1, "id": ');
  const strayId = randomUUID();
  fs.mkdirSync(vmDir(strayId));
  fs.writeFileSync(path.join(vmDir(strayId), 'record.json'), JSON.stringify(record(vms.alive.id)));

  const after = startManager({ driver, stateDir: path.dirname(stateDir), env });
  const leftovers = await after.manager.expectLeftovers();
  assert.equal(leftovers.length, 7);
  // Until decided, the ports of the VMs whose records say they run are held: none is handed out twice.
  assert.equal(after.ports.heldCount, 3);
  const result = await after.manager.recover(leftovers);
  assert.deepEqual(result, { adopted: 1, cleaned: 4, skipped: 2, failed: 0, deferred: 0 });

  // Re-adopted: the same VM, port and PID, running, followed again.
  const [adopted] = after.manager.listNow();
  assert.equal(adopted.id, vms.alive.id);
  assert.equal(adopted.state, 'running');
  assert.equal(adopted.hostPort, vms.alive.port);
  assert.equal(adopted.pid, pidOf('alive'));
  assert.equal(after.ports.heldCount, 1, 'only the adopted VM holds a port now');
  // Killed: the QEMUs of unfinished starts, and nothing else (the reused PID's process lives).
  const killed = driver.calls.filter(([c]) => c === 'kill-pid').map(([, pid]) => pid).sort();
  assert.deepEqual(killed, [orphan.pid, pidOf('starting')].sort());
  assert.ok(driver.processes.table.has(pidOf('reused')));
  // Cleaned directories are gone; unreadable ones stay, untouched.
  assert.deepEqual(vmDirs(stateDir).sort(), [vms.alive.id, corruptId, strayId].sort());
  const skips = after.lines.filter((l) => /VM record unreadable, VM skipped/.test(l.msg)).map((l) => l.cvm_id).sort();
  assert.deepEqual(skips, [corruptId, strayId].sort());
  assert.match(after.lines.find((l) => l.cvm_id === strayId && l.msg.includes('skipped')).msg, /names another id/);

  // The adopted VM is the new manager's to remove.
  await after.manager.remove(vms.alive.id);
  assert.ok(driver.calls.some(([c, id]) => c === 'stop' && id === vms.alive.id));
  assert.equal(after.ports.heldCount, 0);
});

test('a VM whose QEMU exits while it is being re-adopted is not left running', async () => {
  const before = startManager({ env });
  const { id } = await before.manager.create(createReq());
  const pid = before.driver.handles.get(id).pid;
  const after = startManager({ driver: before.driver, stateDir: path.dirname(before.stateDir), env });
  const leftovers = await after.manager.expectLeftovers();
  // Found alive when planned; gone by the time it is adopted.
  const adopt = before.driver.adopt.bind(before.driver);
  before.driver.adopt = async (spec, log) => {
    before.driver.processes.table.delete(pid);
    return adopt(spec, log);
  };
  await after.manager.recover(leftovers);
  const [vm] = after.manager.listNow();
  assert.notEqual(vm.state, 'running');
  assert.equal(after.ports.heldCount, 0);
});
