// The real test guest under real QEMU (TCG), on both QEMUs, plays a hostile workload inside a
// network namespace the test makes (`unshare -n`; test/fixtures/hostile-guest-in-netns.mjs runs
// the daemon there and reports the facts): through QEMU's user-mode network it GETs the manager's
// /health at 10.0.2.2 and at the namespace's other address, sends a raw HTTP/2 RemoveVm of another
// tenant's VM, sends it again 40 times dropping each connection at once (and a raw CreateVm 30
// times), and reads a neighbour VM's forwarded agent port. With guest isolation every one of
// those connect()s is refused by the kernel; the other VM runs on, no VM is added, the guest's own
// agent still reports through its forwarded port, and the very same requests from the host work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES } from './helpers.mjs';
import { GUEST_INITRD, GUEST_KERNEL } from './guest.mjs';
import { QEMUS } from './qemu-versions.mjs';

const isRoot = process.getuid?.() === 0;
const SCENARIO_TIMEOUT_MS = 420_000;

/** Runs the scenario in a new network namespace; its one JSON line of facts (bounded). */
function inOwnNetns(qemuIndex) {
  return new Promise((resolve, reject) => {
    const p = spawn('unshare', ['-n', '--', process.execPath, path.join(FIXTURES, 'hostile-guest-in-netns.mjs')], {
      env: { ...process.env, COCOS_QEMU: String(qemuIndex), NODE_TEST_CONTEXT: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`scenario still running after ${SCENARIO_TIMEOUT_MS} ms; stderr: ${err}`)); }, SCENARIO_TIMEOUT_MS);
    p.once('exit', (code) => {
      clearTimeout(t);
      const line = out.trim().split('\n').at(-1) ?? '';
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`scenario exited ${code} without facts; stdout: ${out}; stderr: ${err}`));
      }
    });
  });
}

QEMUS.forEach((qemu, index) => {
  const skip = !isRoot ? 'needs root (a uid per VM, nftables, a network namespace)' : qemu.skip;
  test(`${qemu.name}: a real guest's connections to the host are refused at connect(); nothing it sends removes or creates a VM`, { skip, timeout: SCENARIO_TIMEOUT_MS + 10_000 }, async () => {
    assert.ok(fs.existsSync(GUEST_KERNEL) && fs.existsSync(GUEST_INITRD), 'run `make guest` first (make test does)');
    const facts = await inOwnNetns(index);
    assert.equal(facts.error, undefined, facts.error);
    process.stderr.write(`# ${qemu.name} guest probe: ${JSON.stringify({ ...facts.probe, grpc_response_base64: undefined })}\n`);
    const p = facts.probe;
    assert.ok(facts.tableInstalled, 'the daemon installed its firewall');

    // HTTP to 10.0.2.2 and to the other local address: refused at connect (wget says so).
    assert.notEqual(p.http_exit, '0');
    assert.match(p.http_said, /refused/i, p.http_said);
    assert.notEqual(facts.lanProbe.http_exit, '0');
    assert.match(facts.lanProbe.http_said, /refused/i, 'the namespace\'s other address is local too');
    // gRPC: no byte answered; every send-then-drop burst refused.
    assert.equal(p.grpc_response_bytes, '0');
    assert.match(p.grpc_error, /refused/i, p.grpc_error);
    assert.equal(p.remove_bursts_refused, '40');
    assert.equal(p.create_bursts_refused, '30');
    assert.equal(facts.lanProbe.remove_bursts_refused, '40');
    // The neighbour's forwarded agent port, on the host too: refused as well.
    assert.equal(p.neighbour_bytes, '0');
    assert.match(p.neighbour_error, /refused/i);

    assert.deepEqual(facts.victim, { state: 'running', alive: true }, 'the other tenant\'s VM runs on');
    assert.equal(facts.vmCount, 3, 'no VM removed, none created by the guest');
    assert.equal(facts.refusalsLogged, 0, 'nothing reached the daemon to refuse');
    // The guest still got its files: the agent's report came through the forwarded port.
    assert.ok(facts.agentEnvironment.some((l) => l === 'AWS_ENDPOINT_URL=cocos-probe'), JSON.stringify(facts.agentEnvironment));
    // The same requests from the host: served.
    assert.equal(facts.hostHealth, 200);
    assert.equal(facts.hostRemove, 0);
    assert.ok(facts.victimGoneAfterHostRemove, 'the host\'s RemoveVm stopped the VM');
    assert.deepEqual(facts.envShare, ['environment'], 'nothing new in the guest\'s env share on the host');
  });
});
