// The daemon dies or restarts; the customers' VMs do not. A restarted daemon re-adopts every VM
// whose QEMU still runs (checked by start time and command line), keeps ports, slots and TTLs,
// cleans up the rest, and never adopts or signals a process that merely reused a PID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, readAgent, tmpDir, waitFor } from './daemon.mjs';

const recordPath = (state, id) => path.join(state, 'vms', id, 'record.json');
const readRecord = (state, id) => JSON.parse(fs.readFileSync(recordPath(state, id), 'utf8'));

test('daemon killed -9 with VMs up: restarted, it re-adopts all of them with ports, slots and TTLs', async () => {
  const state = tmpDir();
  const env = fakeQemuEnv(state, { MANAGER_MAX_VMS: '4' });
  const first = await Daemon.start(env);
  // The TTL: long enough to outlast the restart on a loaded machine, short enough to fire during the test.
  const [vm0, vm1, short] = await first.createVms({ agent_log_level: 'vm0' }, { agent_log_level: 'vm1' }, { ttl: '6s' });
  const vms = [vm0, vm1];
  const pids = [...vms, short].map((v) => readRecord(state, v.cvm_id).pid);
  const second = await first.restart({
    whileDown: () => { for (const pid of pids) assert.ok(isAlive(pid), 'QEMU survives the daemon'); },
  });
  const client = second.client();
  try {
    const adopted = second.logs.lines.filter((l) => l.msg === 're-adopted a running VM');
    assert.equal(adopted.length, 3);
    // The agents are still reachable on the same ports.
    for (const v of vms) assert.match((await readAgent(Number(v.forwarded_port))).environment, new RegExp(`AGENT_CVM_ID=${v.cvm_id}`));
    // Slots are counted once: 3 adopted + 1 new = MAX_VMS.
    const extra = await call(client, 'CreateVm', {});
    assert.equal(new Set([...vms, short, extra].map((v) => v.forwarded_port)).size, 4, 'no adopted port handed out again');
    await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 8);
    // The TTL set before the restart still fires.
    await second.waitForLog((l) => l.cvm_id === short.cvm_id && l.msg === 'VM removed', 20_000);
    assert.equal(isAlive(pids[2]), false);
    assert.equal(fs.existsSync(path.join(state, 'vms', short.cvm_id)), false);
    // Adopted VMs can be removed.
    await call(client, 'RemoveVm', { cvm_id: vms[0].cvm_id });
    assert.ok(await waitFor(() => !isAlive(pids[0]), 2_000));
    assert.ok(await portIsFree(Number(vms[0].forwarded_port)));
    // An adopted QEMU that dies is noticed (it is not our child: /proc is polled).
    process.kill(pids[1], 'SIGKILL');
    await second.waitForLog((l) => l.cvm_id === vms[1].cvm_id && /QEMU exited on its own/.test(l.msg ?? ''), 2_000);
    await call(client, 'RemoveVm', { cvm_id: vms[1].cvm_id });
    await call(client, 'RemoveVm', { cvm_id: extra.cvm_id });
  } finally {
    client.close();
    await second.stop();
  }
});

test('SIGTERM stops the daemon with exit 0 and leaves the VMs running', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state));
  const [vm] = await d.createVms({});
  const { pid } = readRecord(state, vm.cvm_id);
  const again = await d.restart({
    signal: 'SIGTERM',
    whileDown: (r) => {
      assert.deepEqual(r, { code: 0, signal: null });
      assert.ok(isAlive(pid));
    },
  });
  const c2 = again.client();
  await call(c2, 'RemoveVm', { cvm_id: vm.cvm_id });
  assert.ok(await waitFor(() => !isAlive(pid), 2_000));
  c2.close();
  await again.stop();
});

test('a PID reused by an unrelated process is never adopted nor signalled', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state));
  const [a, b] = await d.createVms({}, {});
  const strangers = [];
  const again = await d.restart({
    whileDown: async () => {
      // Both QEMUs die while the daemon is down; unrelated processes take "their" PIDs.
      for (const v of [a, b]) process.kill(readRecord(state, v.cvm_id).pid, 'SIGKILL');
      strangers.push(spawn('sleep', ['30']), spawn('sleep', ['30']));
      await waitFor(() => strangers.every((s) => s.pid), 1_000);
      const ra = readRecord(state, a.cvm_id);
      ra.pid = strangers[0].pid; // wrong start time
      fs.writeFileSync(recordPath(state, a.cvm_id), JSON.stringify(ra));
      const rb = readRecord(state, b.cvm_id);
      rb.pid = strangers[1].pid; // right start time, wrong command line
      rb.pidStartTime = fs.readFileSync(`/proc/${strangers[1].pid}/stat`, 'utf8').split(') ')[1].split(' ')[19];
      fs.writeFileSync(recordPath(state, b.cvm_id), JSON.stringify(rb));
    },
  });
  try {
    assert.equal(again.logs.lines.filter((l) => l.msg === 're-adopted a running VM').length, 0);
    for (const s of strangers) assert.ok(isAlive(s.pid), 'stranger untouched');
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), [], 'dead VMs cleaned up');
    const client = again.client();
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: a.cvm_id }), (e) => e.code === 5);
    client.close();
  } finally {
    for (const s of strangers) s.kill('SIGKILL');
    await again.stop();
  }
});

test('a corrupt record is reported and skipped; the other VMs load and nothing of it is deleted', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state));
  const [good, bad] = await d.createVms({}, {});
  const badPid = readRecord(state, bad.cvm_id).pid;
  const again = await d.restart({
    signal: 'SIGTERM',
    whileDown: () => {
      const text = fs.readFileSync(recordPath(state, bad.cvm_id), 'utf8');
      fs.writeFileSync(recordPath(state, bad.cvm_id), text.slice(0, text.length / 2));
    },
  });
  const client = again.client();
  try {
    const err = again.logs.lines.find((l) => l.cvm_id === bad.cvm_id && /record unreadable/.test(l.msg ?? ''));
    assert.ok(err, 'reported');
    assert.equal(err.level, 'error');
    assert.ok(fs.existsSync(path.join(state, 'vms', bad.cvm_id, 'certs')), 'not deleted');
    assert.ok(isAlive(badPid), 'its QEMU untouched');
    await call(client, 'RemoveVm', { cvm_id: good.cvm_id });
  } finally {
    client.close();
    process.kill(badPid, 'SIGKILL');
    await again.stop();
  }
});

test('a VM caught mid-CreateVm (record "starting") has its QEMU killed and its files removed at start', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state));
  const [vm] = await d.createVms({});
  const rec = readRecord(state, vm.cvm_id);
  // And a directory with no record at all whose QEMU was already spawned is treated the same way.
  const again = await d.restart({
    whileDown: () => {
      rec.state = 'starting';
      fs.writeFileSync(recordPath(state, vm.cvm_id), JSON.stringify(rec));
    },
  });
  try {
    assert.ok(await waitFor(() => !isAlive(rec.pid), 2_000), 'orphan QEMU killed');
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
    assert.ok(await portIsFree(Number(vm.forwarded_port)));
  } finally {
    await again.stop();
  }
});

test('a restarted daemon serves before its VMs are re-adopted: calls about them wait for them, their slots stay taken', async () => {
  const state = tmpDir();
  const env = fakeQemuEnv(state, { MANAGER_MAX_VMS: '3' });
  const first = await Daemon.start(env);
  let client = first.client();
  const vms = [];
  for (let i = 0; i < 3; i++) vms.push(await call(client, 'CreateVm', {}));
  client.close();
  await first.stop('SIGKILL', { keepVms: true });
  // Leftovers to clean besides: recovery takes a while after the port opens.
  for (let i = 0; i < 300; i++) fs.mkdirSync(path.join(state, 'vms', randomUUID()), { recursive: true });

  // The same VM uids: a daemon refuses to start with VMs running outside its range.
  const second = await Daemon.start(first.env, { recovered: false });
  client = second.client();
  const admin = second.adminClient();
  try {
    // Asked at once: every slot is held by a VM of the earlier run, adopted yet or not.
    const refused = call(client, 'CreateVm', {}).then(() => 'created', (e) => e.code);
    const [listed, info] = await Promise.all([call(admin, 'ListVms', {}), call(admin, 'GetVm', { id: vms[2].cvm_id })]);
    assert.equal(await refused, 8, 'CreateVm during recovery: RESOURCE_EXHAUSTED (MANAGER_MAX_VMS=3, 3 VMs to re-adopt)');
    // ListVms waited for the whole recovery; GetVm for its VM.
    assert.deepEqual(listed.vms.map((v) => [v.id, v.state]).sort(), vms.map((v) => [v.cvm_id, 'running']).sort());
    assert.equal(info.state, 'running');
    assert.equal(info.forwarded_port, vms[2].forwarded_port);
    await second.waitForLog((l) => l.msg === 'state recovered');
    const msgs = second.logs.lines.map((l) => l.msg);
    assert.ok(msgs.indexOf('gRPC server listening') < msgs.indexOf('state recovered'), 'the port opened before recovery ended');
    assert.equal(second.logs.lines.find((l) => l.msg === 'state recovered').adopted, 3);
    // Once recovery is over, removing one frees its slot.
    await call(client, 'RemoveVm', { cvm_id: vms[0].cvm_id });
    await call(client, 'CreateVm', {});
  } finally {
    client.close();
    admin.close();
    await second.stop();
  }
});
