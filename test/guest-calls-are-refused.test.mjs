// A guest reaches the host's loopback through QEMU's user-mode network (10.0.2.2): its calls come
// out of the QEMU process's own sockets. The stand-in QEMU plays that guest here (the real guest
// does the same in guest-cannot-reach-the-manager.test.mjs): HTTP 403, gRPC PERMISSION_DENIED,
// the other VM untouched, one log line per VM per window; the host's own calls succeed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, isAlive, tmpDir, waitFor } from './daemon.mjs';

const daemons = [];
after(async () => {
  for (const d of daemons) await d.stop();
});

async function startWithModeFile(extra = {}) {
  const dir = tmpDir('cocos-guestcall-');
  const modeFile = path.join(dir, 'mode');
  fs.writeFileSync(modeFile, 'normal');
  const d = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), { FAKE_QEMU_MODE_FILE: modeFile, ...extra }));
  daemons.push(d);
  return { d, dir, modeFile };
}

async function hostileGuest({ d, dir, modeFile }, client, victim, calls, again) {
  const out = path.join(dir, `calls-${Date.now()}.json`);
  fs.writeFileSync(modeFile, `call-home ${JSON.stringify({ grpc: d.port, http: d.httpPort, victim, out, calls, again })}`);
  const vm = await call(client, 'CreateVm', {});
  fs.writeFileSync(modeFile, 'normal');
  assert.ok(await waitFor(() => fs.existsSync(out), 20_000, 50), 'the stand-in guest finished its calls');
  return { vm, results: JSON.parse(fs.readFileSync(out, 'utf8')) };
}

function status(d, id) {
  const admin = d.adminClient();
  return call(admin, 'GetVm', { id }).finally(() => admin.close());
}

test('calls through a VM\'s user-mode network are refused; the host\'s succeed; refusals logged per VM, rate-limited', async () => {
  const s = await startWithModeFile();
  const client = s.d.client();
  try {
    const victim = await call(client, 'CreateVm', {});
    const { vm: attacker, results } = await hostileGuest(s, client, victim.cvm_id, 10);

    assert.deepEqual(results.http.map((r) => r.status), Array(10).fill(403), JSON.stringify(results.http));
    assert.match(results.http[0].body, /does not answer guest VMs/);
    assert.deepEqual(results.grpc.map((r) => r.code), Array(11).fill(grpc.status.PERMISSION_DENIED), JSON.stringify(results.grpc));
    assert.match(results.grpc.at(-1).details, /calls from a guest VM are not accepted/);

    const v = await status(s.d, victim.cvm_id);
    assert.equal(v.state, 'running');
    assert.ok(isAlive(v.pid), 'the other VM\'s QEMU still runs');

    const refusals = s.d.logs.lines.filter((l) => l.msg === 'call from a guest refused');
    assert.ok(refusals.length >= 1, 'refusal logged');
    assert.ok(refusals.every((l) => l.cvm_id === attacker.cvm_id), JSON.stringify(refusals));
    // 21 refused calls inside one 10 s window: one line (a slow machine may cross into a second window).
    assert.ok(refusals.length <= 2, `rate-limited: ${refusals.length} lines`);

    // The same calls from the host: served.
    const health = await fetch(`http://127.0.0.1:${s.d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(health.status, 200);
    await call(client, 'RemoveVm', { cvm_id: victim.cvm_id });
    await call(client, 'RemoveVm', { cvm_id: attacker.cvm_id });
  } finally {
    client.close();
  }
});

test('a re-adopted VM\'s calls are refused too, after a daemon restart', async () => {
  const s = await startWithModeFile();
  let client = s.d.client();
  const again = path.join(s.dir, 'again');
  const victim = await call(client, 'CreateVm', {});
  const { vm: attacker } = await hostileGuest(s, client, victim.cvm_id, 1, again);
  client.close();
  // The same ports: the stand-in guest calls where it called before.
  const d2 = await s.d.restart({ signal: 'SIGTERM', samePorts: true });
  daemons.push(d2);
  assert.ok(d2.logs.lines.some((l) => l.msg === 're-adopted a running VM' && l.cvm_id === attacker.cvm_id));
  fs.writeFileSync(again, '');
  assert.ok(await waitFor(() => fs.existsSync(`${again}.out`), 20_000, 50), 'the re-adopted stand-in guest called again');
  const results = JSON.parse(fs.readFileSync(`${again}.out`, 'utf8'));
  assert.equal(results.http[0].status, 403);
  assert.deepEqual(results.grpc.map((r) => r.code), [grpc.status.PERMISSION_DENIED, grpc.status.PERMISSION_DENIED]);
  client = d2.client();
  try {
    const v = await status(d2, victim.cvm_id);
    assert.equal(v.state, 'running');
    assert.ok(d2.logs.lines.some((l) => l.msg === 'call from a guest refused' && l.cvm_id === attacker.cvm_id));
  } finally {
    client.close();
  }
});

test('MANAGER_REFUSE_GUEST_CALLS=false serves guests again (and the start-up log says so)', async () => {
  const s = await startWithModeFile({ MANAGER_REFUSE_GUEST_CALLS: 'false' });
  const client = s.d.client();
  try {
    assert.ok(s.d.logs.lines.some((l) => l.msg === 'calls from guests' && /^off/.test(l.mode)));
    const victim = await call(client, 'CreateVm', {});
    const { results } = await hostileGuest(s, client, victim.cvm_id, 1);
    assert.equal(results.http[0].status, 200);
    assert.deepEqual(results.grpc.map((r) => r.code), [0, 0], 'the guest removed the other VM: what the setting allows');
  } finally {
    client.close();
  }
});

test('the daemon warns once at start that ManagerService has no client authentication', async () => {
  const s = await startWithModeFile();
  const warnings = s.d.logs.lines.filter((l) => l.check === 'client authentication');
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].level, 'warn');
  assert.match(warnings[0].msg, /without client authentication: anyone who can reach 127\.0\.0\.1:\d+ can create and remove VMs/);
  assert.match(warnings[0].remedy, /mutual TLS.*MANAGER_GRPC_CLIENT_CA_CERTS/);
});
