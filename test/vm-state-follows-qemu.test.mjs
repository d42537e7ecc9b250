// A VM's state and exit cause come from QEMU itself (QMP events and the process's exit), through
// one state machine: paused/resumed, guest power-off, guest panic, a signal from the host,
// RemoveVm with and without a graceful power-down. ListVms/GetVm/WatchVms and the metrics show it.
// Driven by the stand-in QEMU: SIGHUP pauses/resumes, SIGUSR1 powers the guest off, SIGUSR2 panics it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, baseEnv } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, tmpDir, waitFor } from './daemon.mjs';

let state;
let daemon;
let client;
let admin;
let modeFile;
const setMode = (m) => fs.writeFileSync(modeFile, m);
const getVm = (id) => call(admin, 'GetVm', { id });

/** Collects WatchVms events; `next(pred)` waits (bounded) for a matching one. */
function watch(c) {
  const events = [];
  const stream = c.WatchVms({});
  stream.on('data', (e) => events.push(e));
  stream.on('error', () => {});
  return {
    events,
    stream,
    async next(pred, timeoutMs = 5_000) {
      assert.ok(await waitFor(() => events.some(pred), timeoutMs), `event not seen; got ${JSON.stringify(events.map((e) => [e.id.slice(0, 8), e.from, e.to, e.reason]))}`);
      return events.find(pred);
    },
  };
}

async function metrics() {
  const text = await (await fetch(`http://127.0.0.1:${daemon.httpPort}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/^cocos_manager_vms\{state="(\w+)"\} (-?\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

before(async () => {
  state = tmpDir();
  modeFile = path.join(state, 'mode');
  setMode('normal');
  daemon = await Daemon.start(fakeQemuEnv(state, { FAKE_QEMU_MODE_FILE: modeFile, MANAGER_QEMU_STOP_TIMEOUT: '1s' }));
  client = daemon.client();
  admin = daemon.adminClient();
});

after(async () => {
  client.close();
  admin.close();
  await daemon.stop();
});

test('paused and resumed by QEMU: the state follows STOP and RESUME; WatchVms sends the list, then each transition', async () => {
  const vm = await call(client, 'CreateVm', {});
  const w = watch(admin);
  try {
    await w.next((e) => e.id === vm.cvm_id && e.from === 'new' && e.to === 'running' && e.reason === 'current');
    const { pid } = await getVm(vm.cvm_id);
    process.kill(pid, 'SIGHUP');
    await w.next((e) => e.id === vm.cvm_id && e.from === 'running' && e.to === 'paused' && /STOP/.test(e.reason));
    assert.equal((await getVm(vm.cvm_id)).state, 'paused');
    assert.equal((await metrics()).paused, 1);
    process.kill(pid, 'SIGHUP');
    await w.next((e) => e.id === vm.cvm_id && e.from === 'paused' && e.to === 'running');
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    await w.next((e) => e.id === vm.cvm_id && e.to === 'stopping');
    const stopped = await w.next((e) => e.id === vm.cvm_id && e.to === 'stopped');
    assert.equal(stopped.vm.state, 'stopped');
    await w.next((e) => e.id === vm.cvm_id && e.to === 'removed' && e.reason === 'RemoveVm');
  } finally {
    w.stream.cancel();
  }
});

for (const [name, signal, want] of [
  ['the guest powers itself off', 'SIGUSR1', { state: 'stopped', cause: 'guest shutdown' }],
  ['the guest panics', 'SIGUSR2', { state: 'crashed', cause: 'guest panic' }],
  ['QEMU is sent SIGTERM by someone on the host', 'SIGTERM', { state: 'stopped', cause: 'host signal' }],
  ['QEMU is killed -9 by someone on the host', 'SIGKILL', { state: 'crashed', cause: 'host signal' }],
]) {
  test(`${name}: ${want.state}, exit cause "${want.cause}", port and slot freed, listed until RemoveVm`, async () => {
    const vm = await call(client, 'CreateVm', {});
    const { pid } = await getVm(vm.cvm_id);
    process.kill(pid, signal);
    assert.ok(await waitFor(async () => (await getVm(vm.cvm_id)).state === want.state, 3_000), JSON.stringify(await getVm(vm.cvm_id)));
    const s = await getVm(vm.cvm_id);
    assert.equal(s.exit_cause, want.cause);
    assert.equal(s.has_exit, true);
    assert.ok(await portIsFree(Number(vm.forwarded_port)));
    const listed = (await call(admin, 'ListVms', {})).vms.find((v) => v.id === vm.cvm_id);
    assert.equal(listed.exit_cause, want.cause);
    const m = await metrics();
    assert.equal(m[want.state], 1);
    for (const [st, n] of Object.entries(m)) assert.ok(n >= 0, `${st}=${n}`);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    assert.equal(isAlive(pid), false);
  });
}

test('a watcher that does not read is dropped with RESOURCE_EXHAUSTED; the daemon keeps serving', async () => {
  setMode('flap:1000');
  const vm = await call(client, 'CreateVm', {});
  setMode('normal');
  const stream = admin.WatchVms({});
  stream.pause(); // never reads
  let status;
  stream.on('error', (e) => { status = e.code; });
  stream.on('status', (s) => { status ??= s.code; });
  try {
    const { pid } = await getVm(vm.cvm_id);
    // Wait until the first event has been sent, then flood.
    await new Promise((r) => setTimeout(r, 200));
    process.kill(pid, 'SIGHUP');
    assert.ok(await waitFor(() => daemon.logs.lines.some((l) => /does not keep up: dropped/.test(l.msg ?? '')), 20_000), 'dropped');
    // The daemon answers meanwhile (bounded by the call's deadline, not timed: the machine is loaded).
    await call(admin, 'ListVms', {}, 10_000);
    stream.resume();
    assert.ok(await waitFor(() => status !== undefined, 20_000), 'the stream ended with a status');
    assert.equal(status, 8);
  } finally {
    stream.cancel();
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  }
});

test('RemoveVm with MANAGER_QEMU_POWERDOWN_TIMEOUT: the guest gets the power button and shuts down; a guest that ignores it is stopped after the timeout', async () => {
  const s2 = tmpDir();
  const mf = path.join(s2, 'mode');
  fs.writeFileSync(mf, 'normal');
  const d = await Daemon.start(fakeQemuEnv(s2, { FAKE_QEMU_MODE_FILE: mf, MANAGER_QEMU_POWERDOWN_TIMEOUT: '1500ms', MANAGER_QEMU_STOP_TIMEOUT: '1s' }));
  const c = d.client();
  const a = d.adminClient();
  const w = watch(a);
  try {
    const vm = await call(c, 'CreateVm', {});
    await call(c, 'RemoveVm', { cvm_id: vm.cvm_id });
    const stopped = await w.next((e) => e.id === vm.cvm_id && e.to === 'stopped');
    assert.equal(stopped.vm.exit_cause, 'guest shutdown');
    assert.ok(d.logs.lines.some((l) => l.cvm_id === vm.cvm_id && /power button: shutting down/.test(l.msg ?? '')), 'the guest saw the power button');

    fs.writeFileSync(mf, 'ignore-powerdown');
    const stubborn = await call(c, 'CreateVm', {});
    const t0 = Date.now();
    await call(c, 'RemoveVm', { cvm_id: stubborn.cvm_id });
    assert.ok(Date.now() - t0 >= 1_400, 'waited for the power-down timeout');
    const gone = await w.next((e) => e.id === stubborn.cvm_id && (e.to === 'stopped' || e.to === 'crashed'));
    assert.equal(gone.vm.exit_cause, 'killed by the manager');
    assert.ok(d.logs.lines.some((l) => l.cvm_id === stubborn.cvm_id && /did not shut down within MANAGER_QEMU_POWERDOWN_TIMEOUT/.test(l.msg ?? '')));
  } finally {
    w.stream.cancel();
    c.close();
    a.close();
    await d.stop();
  }
});

test('`cocos-manager vm events` prints the current VMs, then transitions as they happen; `vm ls` and `vm info` show state and exit cause', async () => {
  const vm = await call(client, 'CreateVm', {});
  const p = spawn(process.execPath, [CLI, 'vm', 'events', '--admin-socket', daemon.adminSocket, '--count', '3'], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  const exited = new Promise((resolve) => p.on('exit', resolve));
  const killer = setTimeout(() => p.kill('SIGKILL'), 15_000);
  try {
    assert.ok(await waitFor(() => out.includes(vm.cvm_id), 10_000), 'current list printed');
    const { pid } = await getVm(vm.cvm_id);
    process.kill(pid, 'SIGUSR1');
    assert.equal(await exited, 0);
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 3, out);
    assert.match(lines[0], new RegExp(`${vm.cvm_id}  new -> running  current`));
    assert.match(lines[1], /running -> stopping {2}QMP SHUTDOWN \(guest-shutdown\)/);
    assert.match(lines[2], /stopping -> stopped \(guest shutdown\)/);
    const cli = (...args) => new Promise((resolve) => {
      const c = spawn(process.execPath, [CLI, 'vm', ...args, '--admin-socket', daemon.adminSocket], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '';
      c.stdout.on('data', (d) => { o += d; });
      c.on('exit', () => resolve(o));
    });
    assert.match(await cli('ls'), new RegExp(`${vm.cvm_id}\\s+stopped\\s.*guest shutdown`));
    assert.match(await cli('info', vm.cvm_id), /exit\s+guest shutdown \(code 0\)/);
  } finally {
    clearTimeout(killer);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  }
});

test('a watcher never holds up a stopping daemon: SIGTERM ends its stream with UNAVAILABLE and the daemon exits at once', async () => {
  const s2 = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(s2, { MANAGER_QEMU_START_TIMEOUT: '10s' }));
  const a = d.adminClient();
  const stream = a.WatchVms({});
  let code;
  stream.on('data', () => {});
  stream.on('error', (e) => { code = e.code; });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    assert.deepEqual(await d.exited, { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 5_000, `stopped in ${Date.now() - t0} ms (the grace is 15 s)`);
    assert.ok(await waitFor(() => code !== undefined, 5_000));
    assert.ok(code === 14, `status ${code}`);
  } finally {
    a.close();
    await d.stop();
  }
});
