// A guest reaches the host's loopback through QEMU's user-mode network (10.0.2.2): its calls come
// out of the QEMU process's own sockets. The stand-in QEMU plays that guest here (the real guest
// does the same in guest-cannot-reach-the-manager.test.mjs).
// With guest isolation (a root daemon: each QEMU runs as a uid of its own, and the daemon's
// nftables table refuses those uids' connections to local addresses), every attempt fails at
// connect(): plain calls, and the send-then-reset attack that beat the /proc check. With it off,
// the /proc check is what is left, and it fails closed: a peer gone before it could be attributed
// is refused too.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, firewallTablePresent, isAlive, tmpDir, waitFor } from './daemon.mjs';
import { rawGrpcCall } from './h2-raw.mjs';

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

/** A VM whose stand-in guest attacks the daemon as it starts; what each attempt got. */
async function hostileGuest({ d, dir, modeFile }, client, victim, calls, { again, bursts = 0 } = {}) {
  const out = path.join(dir, `calls-${Date.now()}.json`);
  const burst = bursts > 0 ? rawGrpcCall(`10.0.2.2:${d.port}`, '/manager.ManagerService/RemoveVm', victim).toString('base64') : undefined;
  fs.writeFileSync(modeFile, `call-home ${JSON.stringify({ grpc: d.port, http: d.httpPort, victim, out, calls, again, burst, bursts })}`);
  const vm = await call(client, 'CreateVm', {});
  fs.writeFileSync(modeFile, 'normal');
  assert.ok(await waitFor(() => fs.existsSync(out), 30_000, 50), 'the stand-in guest finished its calls');
  return { vm, results: JSON.parse(fs.readFileSync(out, 'utf8')) };
}

function status(d, id) {
  const admin = d.adminClient();
  return call(admin, 'GetVm', { id }).finally(() => admin.close());
}

test('a guest cannot even connect to the manager: its calls and 40 send-then-reset RemoveVm calls are refused at connect(); the other VM runs on', async () => {
  const s = await startWithModeFile();
  const client = s.d.client();
  try {
    const victim = await call(client, 'CreateVm', {});
    const { results } = await hostileGuest(s, client, victim.cvm_id, 3, { bursts: 40 });

    assert.deepEqual(results.connect, { grpc: 'ECONNREFUSED', http: 'ECONNREFUSED' }, 'refused by the kernel, before any byte');
    assert.deepEqual(results.burst, Array(40).fill('ECONNREFUSED'), 'no send-then-reset burst got through');
    assert.deepEqual(results.http.map((r) => r.code), Array(3).fill('ECONNREFUSED'), JSON.stringify(results.http));
    assert.deepEqual(results.grpc.map((r) => r.code), Array(4).fill(grpc.status.UNAVAILABLE), JSON.stringify(results.grpc));

    const v = await status(s.d, victim.cvm_id);
    assert.equal(v.state, 'running');
    assert.ok(isAlive(v.pid), 'the other VM\'s QEMU still runs');
    // Nothing reached the daemon, so nothing was refused there either.
    assert.equal(s.d.logs.lines.filter((l) => l.msg === 'call from a guest refused').length, 0);

    // The same calls from the host: served.
    const health = await fetch(`http://127.0.0.1:${s.d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(health.status, 200);
    const admin = s.d.adminClient();
    const listed = await call(admin, 'ListVms', {}).finally(() => admin.close());
    assert.equal(listed.vms.length, 2, 'no VM was removed or added by the guest');
    await call(client, 'RemoveVm', { cvm_id: victim.cvm_id });
  } finally {
    client.close();
  }
});

test('a re-adopted VM\'s guest is refused too: the firewall stays in place across a daemon restart', async () => {
  const s = await startWithModeFile();
  let client = s.d.client();
  const again = path.join(s.dir, 'again');
  const victim = await call(client, 'CreateVm', {});
  const { vm: attacker } = await hostileGuest(s, client, victim.cvm_id, 1, { again });
  client.close();
  // The same ports: the stand-in guest calls where it called before.
  const d2 = await s.d.restart({
    signal: 'SIGKILL',
    samePorts: true,
    whileDown: () => assert.ok(firewallTablePresent(s.d.stateDir), 'the table outlives a killed daemon while its VMs run'),
  });
  daemons.push(d2);
  assert.ok(d2.logs.lines.some((l) => l.msg === 're-adopted a running VM' && l.cvm_id === attacker.cvm_id));
  fs.writeFileSync(again, '');
  assert.ok(await waitFor(() => fs.existsSync(`${again}.out`), 20_000, 50), 'the re-adopted stand-in guest called again');
  const results = JSON.parse(fs.readFileSync(`${again}.out`, 'utf8'));
  assert.deepEqual(results.connect, { grpc: 'ECONNREFUSED', http: 'ECONNREFUSED' });
  assert.deepEqual(results.grpc.map((r) => r.code), [grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE]);
  const v = await status(d2, victim.cvm_id);
  assert.equal(v.state, 'running');
});

test('with guest isolation off, the /proc check fails closed: 40 send-then-reset RemoveVm calls remove nothing, plain calls\' connections are closed unanswered', async () => {
  const s = await startWithModeFile({ MANAGER_GUEST_ISOLATION: 'false' });
  const client = s.d.client();
  try {
    assert.ok(s.d.logs.lines.some((l) => l.level === 'warn' && /guest isolation is off/.test(l.msg)), 'a warning at start says isolation is off');
    const victim = await call(client, 'CreateVm', {});
    const { vm: attacker, results } = await hostileGuest(s, client, victim.cvm_id, 2, { bursts: 40 });
    assert.deepEqual(results.connect, { grpc: 'connected', http: 'connected' }, 'no firewall: the guest connects');
    assert.equal(results.burst.length, 40);
    // Refused connections are closed unanswered: no status, no byte of an answer.
    assert.ok(results.http.every((r) => r.closed === true || r.code === 'ECONNRESET'), JSON.stringify(results.http));
    assert.deepEqual(results.grpc.map((r) => r.code), Array(3).fill(grpc.status.UNAVAILABLE), JSON.stringify(results.grpc));
    // The bursts' connections were gone before their verdicts: refused, never served.
    assert.ok(await waitFor(async () => (await status(s.d, victim.cvm_id)).state === 'running', 5_000));
    const v = await status(s.d, victim.cvm_id);
    assert.ok(isAlive(v.pid), 'the victim survived the send-then-reset attack');
    const refusals = s.d.logs.lines.filter((l) => l.msg === 'call from a guest refused');
    assert.ok(refusals.some((l) => l.cvm_id === attacker.cvm_id), 'the plain calls were refused as the attacker\'s');
    await call(client, 'RemoveVm', { cvm_id: victim.cvm_id });
  } finally {
    client.close();
  }
});

test('MANAGER_REFUSE_GUEST_CALLS=false with isolation off serves guests again (and the start-up log says so)', async () => {
  const s = await startWithModeFile({ MANAGER_REFUSE_GUEST_CALLS: 'false', MANAGER_GUEST_ISOLATION: 'false' });
  const client = s.d.client();
  try {
    assert.ok(s.d.logs.lines.some((l) => l.msg === 'calls from guests' && /^off/.test(l.mode)));
    const victim = await call(client, 'CreateVm', {});
    const { results } = await hostileGuest(s, client, victim.cvm_id, 1);
    assert.equal(results.http[0].status, 200);
    assert.deepEqual(results.grpc.map((r) => r.code), [0, 0], 'the guest removed the other VM: what the settings allow');
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
