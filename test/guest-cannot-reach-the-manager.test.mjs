// The real test guest under real QEMU (TCG) plays a hostile workload: through QEMU's user-mode
// network it GETs the manager's /health at 10.0.2.2 (and at the host's LAN address when it has
// one) and sends a raw HTTP/2 gRPC RemoveVm of another tenant's VM to 10.0.2.2 (bytes made on
// the host, sent by busybox nc from inside the guest: see guest/probe.sh). Both are refused and
// the other VM keeps running; the very same requests from the host succeed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { Daemon, call, isAlive, tcgEnv, tmpDir } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL, consoleTail, waitForAgentReport } from './guest.mjs';
import { rawGrpcCall, readGrpcAnswer } from './h2-raw.mjs';

const PROBE_TIMEOUT_MS = 180_000;
let daemon;
let client;
let state;

/** An IPv4 address of this host that is not loopback: a guest can dial that too. */
const lanAddress = Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

before(async () => {
  assert.ok(fs.existsSync(GUEST_KERNEL) && fs.existsSync(GUEST_INITRD), 'run `make guest` first (make test does)');
  state = tmpDir('cocos-hostile-');
  daemon = await Daemon.start(tcgEnv(state, {
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    // On every address of this host (no traffic leaves it): the guest also tries the LAN address.
    ...(lanAddress ? { MANAGER_HTTP_HOST: '0.0.0.0' } : {}),
  }));
  client = daemon.client();
});
after(async () => {
  client?.close();
  await daemon?.stop();
});

/** The agent's whole report text once its probe section is complete, bounded. */
async function probeReport(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await new Promise((resolve) => {
      const sock = net.connect({ port, host: '127.0.0.1' });
      let data = '';
      sock.setTimeout(3_000, () => sock.destroy());
      sock.on('data', (d) => { data += d; });
      sock.on('close', () => resolve(data));
      sock.on('error', () => resolve(''));
    });
    if (text.includes('probe_done=1') && text.includes('== end')) {
      const lines = text.slice(text.indexOf('== probe'), text.indexOf('== end')).split('\n');
      const probe = Object.fromEntries(lines.filter((l) => /^[a-z0-9_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      // What wget said, per URL ("http: ...", "http_lan: ...").
      for (const l of lines) {
        const m = /^(http|http_lan): (.*)$/.exec(l);
        if (m) probe[`${m[1]}_said`] = `${probe[`${m[1]}_said`] ?? ''}${m[2]}\n`;
      }
      return probe;
    }
    await new Promise((r) => setTimeout(r, 1_000));
  }
  throw new Error(`no probe report on port ${port} within ${timeoutMs} ms`);
}

function sendFromHost(port, bytes, waitMs = 2_000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const parts = [];
    s.on('data', (b) => parts.push(b));
    s.on('error', () => undefined);
    s.write(bytes);
    setTimeout(() => { s.destroy(); resolve(Buffer.concat(parts)); }, waitMs);
  });
}

test('a guest\'s HTTP and gRPC calls to the manager through 10.0.2.2 are refused; the same from the host succeed', { timeout: 300_000 }, async () => {
  const victim = await call(client, 'CreateVm', {}, 60_000);
  // Booted, so that its agent answers on its forwarded port (the neighbour path below).
  await waitForAgentReport(Number(victim.forwarded_port), PROBE_TIMEOUT_MS);
  const removeVictim = rawGrpcCall(`10.0.2.2:${daemon.port}`, '/manager.ManagerService/RemoveVm', victim.cvm_id);
  const attacker = await call(client, 'CreateVm', {
    aws_endpoint_url: 'cocos-probe',
    agent_cvm_ca_url: `http://10.0.2.2:${daemon.httpPort}/health`,
    agent_cvm_server_url: `10.0.2.2:${daemon.port}`,
    aws_secret_access_key: removeVictim.toString('base64'),
    aws_region: lanAddress ? `http://${lanAddress}:${daemon.httpPort}/health` : '',
    aws_access_key_id: `10.0.2.2:${victim.forwarded_port}`,
  }, 60_000);

  let probe;
  try {
    probe = await probeReport(Number(attacker.forwarded_port), PROBE_TIMEOUT_MS);
  } catch (err) {
    err.message += `\n--- serial console of ${attacker.cvm_id} ---\n${consoleTail(state, attacker.cvm_id)}`;
    throw err;
  }
  process.stderr.write(`# guest probe: ${JSON.stringify({ ...probe, grpc_response_base64: `(${probe.grpc_response_bytes} bytes)` })}\n`);

  // HTTP from the guest: 403 (busybox wget exits 1 and names the status).
  assert.notEqual(probe.http_exit, '0');
  assert.match(probe.http_said, /403 Forbidden/);
  if (lanAddress) {
    assert.notEqual(probe.http_lan_exit, '0');
    assert.match(probe.http_lan_said, /403 Forbidden/, 'the host\'s LAN address is refused too');
  }

  // gRPC from the guest: PERMISSION_DENIED.
  const answer = await readGrpcAnswer(Buffer.from(probe.grpc_response_base64, 'base64'));
  assert.equal(answer?.code, 7, `guest's RemoveVm answered ${JSON.stringify(answer)}`);
  assert.match(answer.message, /calls from a guest VM are not accepted/);

  // The other tenant's VM is untouched.
  const admin = daemon.adminClient();
  const v = await call(admin, 'GetVm', { id: victim.cvm_id }).finally(() => admin.close());
  assert.equal(v.state, 'running');
  assert.ok(isAlive(v.pid));
  const refusals = daemon.logs.lines.filter((l) => l.msg === 'call from a guest refused');
  assert.ok(refusals.length >= 1 && refusals.every((l) => l.cvm_id === attacker.cvm_id), JSON.stringify(refusals));

  // Not the manager's to refuse, recorded for SECURITY.md: the other VM's forwarded agent port is
  // on the host too (QEMU's hostfwd listens on every address), so the guest reaches it at 10.0.2.2.
  // The agent's own authentication (attested TLS in Cocos) is what guards it.
  process.stderr.write(`# neighbour's agent port from the guest: ${probe.neighbour_bytes} bytes, first line ${JSON.stringify(probe.neighbour_first_line)}\n`);

  // The same requests from the host: served.
  const health = await fetch(`http://127.0.0.1:${daemon.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(health.status, 200);
  const hostAnswer = await readGrpcAnswer(await sendFromHost(daemon.port, removeVictim));
  assert.equal(hostAnswer?.code, 0, JSON.stringify(hostAnswer));
  assert.ok(await (async () => { for (let i = 0; i < 100 && isAlive(v.pid); i++) await new Promise((r) => setTimeout(r, 100)); return !isAlive(v.pid); })(), 'the host\'s RemoveVm stopped the VM');
  await call(client, 'RemoveVm', { cvm_id: attacker.cvm_id }, 30_000);
});
