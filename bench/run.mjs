#!/usr/bin/env node
// `make bench`: what the manager's own work costs on the path of a CVM launch, each figure next
// to its floor measured in the same run (this machine is shared and noisy), as a ratio and in ms.
// Runs the built daemon over loopback with the stand-in QEMU of the tests.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Daemon, FAKE_QEMU, call, fakeQemuEnv, managerPkg, nextRange, nextUidRange, tmpDir } from '../test/daemon.mjs';

// The start-time figure times a bare spawn to the first answer, so it picks its ports ahead
// (the daemon's own port-0 report would add the log read to what is measured).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
import { CLI } from '../test/helpers.mjs';
import { floodScenario } from '../test/console-flood-scenario.mjs';
import { QmpChannel } from '../dist/vm/qmp.js';
import { qmpChannelArgs, qmpFormFor, parseQemuVersion } from '../dist/qemu/qmp-args.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Every daemon the run starts: stopped (their stand-ins killed, their firewall tables gone) if a figure fails. */
const started = new Set();
async function startDaemon(env, opts) {
  const d = await Daemon.start(env, opts);
  started.add(d);
  return d;
}
const quick = process.env.BENCH_QUICK === '1';
const N_SEQ = quick ? 40 : 200;
const BACKGROUND = quick ? 20 : 100; // VMs added per step of the scaling figure
const log = (s) => process.stderr.write(`bench: ${s}\n`);
// The daemon runs with the node flags of the systemd unit (make bench passes them).
const NODE_FLAGS = (process.env.COCOS_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

/**
 * Waits until something listens on the port, reading /proc/net/tcp every 2 ms: no sockets of
 * its own (connect attempts would cost the starting process CPU), the cheapest honest floor.
 */
async function waitPort(port, timeoutMs = 10_000) {
  const needle = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      const text = fs.readFileSync(table, 'utf8');
      for (const line of text.split('\n')) if (line.includes(needle) && line.split(/\s+/)[4] === '0A') return;
    }
    await sleep(2);
  }
  throw new Error(`port ${port} not listening`);
}

/** A VM directory like the daemon's, for the stand-in started directly. */
function directVmDir(root, i) {
  const dir = path.join(root, `direct-${i}`);
  fs.mkdirSync(path.join(dir, 'env'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'certs'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'env', 'environment'), 'AGENT_LOG_LEVEL=info\n');
  fs.copyFileSync('/usr/share/OVMF/OVMF_VARS.fd', path.join(dir, 'OVMF_VARS.fd'));
  return dir;
}

function directArgv(template, dir, port) {
  return template.map((a) =>
    a.replace(/hostfwd=tcp::\d+-/, `hostfwd=tcp::${port}-`).replace(/file=\/usr\/share\/OVMF\/OVMF_VARS\.fd$/, `file=${dir}/OVMF_VARS.fd`),
  ).concat([
    '-fsdev', `local,id=cert_fs,path=${dir}/certs,security_model=mapped`, '-device', 'virtio-9p-pci,fsdev=cert_fs,mount_tag=certs_share',
    '-fsdev', `local,id=env_fs,path=${dir}/env,security_model=mapped`, '-device', 'virtio-9p-pci,fsdev=env_fs,mount_tag=env_share',
  ]);
}

/** The floor of a launch: spawn the stand-in from Node with the same argv, wait for its port. */
async function directLaunch(template, root, i, port, env) {
  const dir = directVmDir(root, i);
  const t0 = process.hrtime.bigint();
  // The environment the daemon gives its QEMU (its own): a larger one can cost the stand-in's
  // start dearly (NODE_EXTRA_CA_CERTS alone adds ~40 ms to a node start).
  const child = spawn(FAKE_QEMU, directArgv(template, dir, port), { stdio: 'ignore', detached: true, env });
  await waitPort(port);
  const launchMs = ms(t0);
  return { child, launchMs };
}

/**
 * The floor of QMP readiness: the same stand-in spawned directly with a QMP channel to our own
 * listener, timed until query-status answers (what the daemon waits for).
 */
async function directQmpLaunch(template, root, i, port, env) {
  const dir = directVmDir(root, i);
  const qmp = new QmpChannel(path.join(dir, 'qmp.sock'));
  await qmp.listen();
  const form = qmpFormFor(parseQemuVersion('QEMU emulator version 7.2.0'));
  const t0 = process.hrtime.bigint();
  const child = spawn(FAKE_QEMU, [...directArgv(template, dir, port), ...qmpChannelArgs(form, qmp.socketPath)], { stdio: 'ignore', detached: true, env });
  await qmp.whenConnected();
  await qmp.queryStatus();
  const readyMs = ms(t0);
  const exited = new Promise((r) => child.once('exit', r));
  await qmp.quit().catch(() => undefined);
  await exited;
  qmp.close();
  return readyMs;
}

async function directStop(child) {
  const t0 = process.hrtime.bigint();
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
  return ms(t0);
}

function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) / 1024;
}

async function throughput(client, seconds, callers = 64) {
  let count = 0;
  const until = Date.now() + seconds * 1000;
  await Promise.all(Array.from({ length: callers }, async () => {
    while (Date.now() < until) {
      await call(client, 'CVMInfo', { id: 'bench' }, 10_000);
      count++;
    }
  }));
  return count / seconds;
}

/** One new connection, one CVMInfo, closed: what a caller that does not keep its channel pays. */
async function freshConnection(port) {
  const t0 = process.hrtime.bigint();
  // Its own subchannel: grpc-js would otherwise share one connection among clients of a target.
  const c = new managerPkg.ManagerService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  await call(c, 'CVMInfo', { id: 'bench' }, 10_000);
  c.close();
  return ms(t0);
}

/**
 * The guest-peer check (MANAGER_REFUSE_GUEST_CALLS): made once per connection, so CVMInfo
 * throughput over a kept connection must not move; a new connection pays one look at
 * /proc/net/tcp and at the descriptors of the running QEMUs. Measured against a second daemon
 * with the check off, both with the same number of VMs running, interleaved.
 */
async function guestPeerCheck(env) {
  const VMS = quick ? 5 : 20;
  // Two daemons with the same history, the check on in one and off in the other.
  const start = (refuse) => startDaemon({ ...env, MANAGER_REFUSE_GUEST_CALLS: refuse, MANAGER_QEMU_HOST_FWD_RANGE: nextRange(VMS + 5), MANAGER_VM_UID_RANGE: nextUidRange(VMS + 5), MANAGER_STATE_DIR: tmpDir('cocos-bench-peer-') }, { nodeFlags: NODE_FLAGS });
  const on = await start('true');
  const off = await start('false');
  const onClient = on.client();
  const offClient = off.client();
  const running = [];
  for (let i = 0; i < VMS; i++) {
    running.push([onClient, await call(onClient, 'CreateVm', {}, 30_000)]);
    running.push([offClient, await call(offClient, 'CreateVm', {}, 30_000)]);
  }
  await throughput(onClient, 1);
  await throughput(offClient, 1);
  const rounds = quick ? 4 : 8;
  const withCheck = [];
  const without = [];
  // Interleaved, the order swapped each round, so the machine's drift hits both alike.
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      withCheck.push(await throughput(onClient, 2));
      without.push(await throughput(offClient, 2));
    } else {
      without.push(await throughput(offClient, 2));
      withCheck.push(await throughput(onClient, 2));
    }
  }
  const a = pct(withCheck, 50);
  const b = pct(without, 50);
  figure({ figure: `CVMInfo calls/s with / without the guest-peer check (${VMS} VMs running)`, value: a.toFixed(0), floor: b.toFixed(0), ratio: (a / b).toFixed(2), target: '>= 0.95 (no loss)', ok: a / b >= 0.95 });
  const n = quick ? 20 : 100;
  const connOn = [];
  const connOff = [];
  for (let i = 0; i < n; i++) {
    connOn.push(await freshConnection(on.port));
    connOff.push(await freshConnection(off.port));
  }
  const over = pct(connOn, 50) - pct(connOff, 50);
  // What the check cannot avoid: the kernel generates /proc/net/tcp by walking its whole TCP hash
  // table (milliseconds on a large host, however few sockets there are).
  const tableReads = [];
  for (let i = 0; i < 20; i++) {
    const t0 = process.hrtime.bigint();
    await fs.promises.readFile('/proc/net/tcp', 'utf8');
    tableReads.push(ms(t0));
  }
  const table = pct(tableReads, 50);
  figure({ figure: `new connection + CVMInfo p50 with / without the check (${VMS} VMs, ms)`, value: pct(connOn, 50).toFixed(2), floor: pct(connOff, 50).toFixed(2), over_ms: over.toFixed(2), target: `<= 2 reads of /proc/net/tcp (${table.toFixed(2)} ms each) + 1 ms over`, ok: over <= 2 * table + 1 });
  await Promise.all(running.map(([c, vm]) => call(c, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000)));
  onClient.close();
  offClient.close();
  await on.stop();
  await off.stop();
}

/** One CreateVm then its RemoveVm, each timed, into `into` ({ create: [], remove: [] }). */
async function createRemove(client, into) {
  let t0 = process.hrtime.bigint();
  const vm = await call(client, 'CreateVm', {}, 60_000);
  into.create.push(ms(t0));
  t0 = process.hrtime.bigint();
  await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
  into.remove.push(ms(t0));
}

/** `n` timed CreateVm and RemoveVm on two daemons, alternating which goes first, after 5 rounds of warm-up. */
async function interleavedCycles(n, a, b) {
  const warm = { create: [], remove: [] };
  for (let i = 0; i < 5; i++) { await createRemove(a, warm); await createRemove(b, warm); }
  const as = { create: [], remove: [] };
  const bs = { create: [], remove: [] };
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) { await createRemove(a, as); await createRemove(b, bs); }
    else { await createRemove(b, bs); await createRemove(a, as); }
  }
  return [as, bs];
}

/**
 * Guest isolation's cost on CreateVm (a root machine only): two daemons with the same history,
 * one giving each VM its own uid and keeping the nftables table, one with MANAGER_GUEST_ISOLATION
 * =false, CreateVm then RemoveVm on each, interleaved. One VM runs on each throughout, as on a
 * host in use (the table is in place). The table's installation, paid by the first VM after
 * an idle spell, is timed apart with `cocos-manager firewall install`.
 */
async function isolationCost(env) {
  if (process.getuid?.() !== 0) return log('guest isolation: not root, figure skipped');
  const n = quick ? 20 : 60;
  const start = (on) => startDaemon({ ...env, MANAGER_GUEST_ISOLATION: on, MANAGER_QEMU_HOST_FWD_RANGE: nextRange(10), MANAGER_VM_UID_RANGE: nextUidRange(10), MANAGER_STATE_DIR: tmpDir('cocos-bench-iso-') }, { nodeFlags: NODE_FLAGS });
  const on = await start('true');
  const off = await start('false');
  const onClient = on.client();
  const offClient = off.client();
  const keep = [await call(onClient, 'CreateVm', {}, 30_000), await call(offClient, 'CreateVm', {}, 30_000)];
  const [withIso, without] = await interleavedCycles(n, onClient, offClient);
  for (const what of ['create', 'remove']) {
    const over = pct(withIso[what], 50) - pct(without[what], 50);
    const call_ = what === 'create' ? 'CreateVm' : 'RemoveVm';
    figure({ figure: `${call_} p50 with / without guest isolation (own uid + firewall, ${n} sequential, 1 VM running)`, value: pct(withIso[what], 50).toFixed(1), floor: pct(without[what], 50).toFixed(1), over_ms: over.toFixed(1), target: '<= 5 ms over', ok: over <= 5 });
  }
  // The install itself, in process: what the first VM after an idle spell waits for.
  const { GuestFirewall } = await import('../dist/host/guest-firewall.js');
  const quiet = { info() {}, warn() {}, error() {} };
  const fw = new GuestFirewall(tmpDir('cocos-bench-fw-'), { uids: { first: 1_999_000_000, last: 1_999_000_099 }, allow: [] }, quiet);
  const installs = [];
  for (let i = 0; i < (quick ? 5 : 20); i++) {
    const t0 = process.hrtime.bigint();
    await fw.install();
    installs.push(ms(t0));
  }
  fw.stopWatching();
  await fw.removeIf(() => true);
  figure({ figure: 'guest firewall install, nft replace (ms p50/p99; paid by the first VM after 3 s without any and by each start)', value: `${pct(installs, 50).toFixed(1)}/${pct(installs, 99).toFixed(1)}`, floor: 'none' });
  await call(onClient, 'RemoveVm', { cvm_id: keep[0].cvm_id });
  await call(offClient, 'RemoveVm', { cvm_id: keep[1].cvm_id });
  onClient.close();
  offClient.close();
  await on.stop();
  await off.stop();
}

/**
 * A disk per VM (MANAGER_QEMU_ENABLE_DISK) on CreateVm: a daemon whose VMs get a qcow2 overlay on
 * a source holding 512 MiB of data, against one whose VMs get no disk, CreateVm then RemoveVm on
 * each, interleaved; the source is pinned (hashed) before the first call, as at a daemon's
 * start. For scale, a few CreateVm that make the disk as the Go manager does, a whole copy
 * (MANAGER_QEMU_DISK_FORMAT=raw: qemu-img convert and resize).
 */
async function diskCost(env) {
  // More rounds than the other figures: the difference sought is far below this machine's noise.
  const n = quick ? 20 : 120;
  const root = tmpDir('cocos-bench-disk-');
  const raw = path.join(root, 'data.raw');
  const source = path.join(root, 'source.qcow2');
  // 512 MiB of random bytes: nothing for qcow2 to leave out.
  execFileSync('sh', ['-c', `head -c 512M /dev/urandom > ${raw}`]);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, source]);
  fs.rmSync(raw);
  const start = async (extra) => {
    const d = await startDaemon({ ...env, MANAGER_QEMU_HOST_FWD_RANGE: nextRange(10), MANAGER_VM_UID_RANGE: nextUidRange(10), MANAGER_STATE_DIR: path.join(tmpDir('cocos-bench-disk-state-'), 'state'), ...extra }, { nodeFlags: NODE_FLAGS });
    if (extra.MANAGER_QEMU_ENABLE_DISK) await d.waitForLog((l) => l.msg === 'disk source pinned', 60_000);
    return d;
  };
  const disk = await start({ MANAGER_QEMU_ENABLE_DISK: 'true', MANAGER_QEMU_SRC_DISK_FILE: source });
  const pinned = disk.logs.lines.find((l) => l.msg === 'disk source pinned');
  figure({ figure: 'disk source pinned at start: SHA-384 of 512 MiB of data and qemu-img info (ms; off the call path)', value: String(pinned.ms), floor: 'none' });
  const none = await start({});
  const diskClient = disk.client();
  const noneClient = none.client();
  const [{ create: withDisk }, { create: without }] = await interleavedCycles(n, diskClient, noneClient);
  const over = pct(withDisk, 50) - pct(without, 50);
  // The daemon's own clock: from the port taken to the disk made (the shares, then the disk step).
  const step = (d) => d.logs.lines.filter((l) => l.msg === 'VM started' && l.timings_ms).slice(-n).map((l) => l.timings_ms.disk - l.timings_ms.port);
  figure({ figure: `shares + disk step p50/p99, from the daemon's timings, with a disk / without (ms, ${n})`, value: `${pct(step(disk), 50).toFixed(2)}/${pct(step(disk), 99).toFixed(2)}`, floor: `${pct(step(none), 50).toFixed(2)}/${pct(step(none), 99).toFixed(2)}`, over_ms: (pct(step(disk), 50) - pct(step(none), 50)).toFixed(2), target: 'report' });
  figure({ figure: `CreateVm p50/p99 with a disk (qcow2 overlay; source of 512 MiB data) / without (ms, ${n} sequential)`, value: `${pct(withDisk, 50).toFixed(1)}/${pct(withDisk, 99).toFixed(1)}`, floor: `${pct(without, 50).toFixed(1)}/${pct(without, 99).toFixed(1)}`, over_ms: over.toFixed(1), target: '<= 20 ms over at p50', ok: over <= 20 });
  diskClient.close();
  await disk.stop();

  const copy = await start({ MANAGER_QEMU_ENABLE_DISK: 'true', MANAGER_QEMU_SRC_DISK_FILE: source, MANAGER_QEMU_DISK_FORMAT: 'raw' });
  const copyClient = copy.client();
  const copied = { create: [], remove: [] };
  for (let i = 0; i < (quick ? 3 : 5); i++) await createRemove(copyClient, copied);
  const copies = copied.create;
  figure({ figure: "CreateVm p50 with the disk made as Go makes it, a whole copy (DISK_FORMAT=raw) / without (ms)", value: pct(copies, 50).toFixed(0), floor: pct(without, 50).toFixed(1), over_ms: (pct(copies, 50) - pct(without, 50)).toFixed(0), target: 'report (what the overlay saves)' });
  copyClient.close();
  noneClient.close();
  await copy.stop();
  await none.stop();
  fs.rmSync(root, { recursive: true, force: true });
}

/**
 * A guest flooding its console (test/console-flood-scenario.mjs): CVMInfo latency and throughput
 * under the flood against the same machine load not going through the daemon. The test of the
 * same scenario asserts only what must hold (the daemon answers, memory, files, the log).
 */
async function consoleFlood() {
  const { daemon, client, vm, baseline, flooded } = await floodScenario(tmpDir('cocos-bench-flood-'), { nodeFlags: NODE_FLAGS });
  try {
    const bound = 2 * Math.max(baseline.p99, 10);
    figure({ figure: 'CVMInfo p99 under a 50 MB/s console flood / same load not through the daemon (ms)', value: flooded.p99.toFixed(1), floor: baseline.p99.toFixed(1), ratio: (flooded.p99 / baseline.p99).toFixed(2), target: `<= 2x the floor (at least 10 ms): ${bound.toFixed(1)}`, ok: flooded.p99 <= bound });
    const kept = flooded.latencies.length / baseline.latencies.length;
    figure({ figure: 'CVMInfo calls answered under the console flood / same load not through the daemon', value: String(flooded.latencies.length), floor: String(baseline.latencies.length), ratio: kept.toFixed(2), target: '>= 0.5', ok: kept >= 0.5 });
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 15_000);
  } finally {
    client.close();
    await daemon.stop();
  }
}

const results = { machine: {}, figures: [] };
const figure = (f) => {
  results.figures.push(f);
  log(`${f.figure}: ${f.value} (floor ${f.floor}) ${f.over_ms === undefined ? `ratio ${f.ratio ?? '-'}` : `+${f.over_ms} ms`} ${f.ok === undefined ? '' : f.ok ? 'OK' : 'MISSED'}`);
};

async function main() {
  results.machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: os.release(),
    date: new Date().toISOString(),
    commit: (() => { try { return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8' }).trim(); } catch { return 'unknown'; } })(),
    quick,
    node_flags: NODE_FLAGS.join(' '),
    guest_isolation: process.getuid?.() === 0 && process.env.BENCH_GUEST_ISOLATION !== 'false',
    loadavg_1m_at_start: +os.loadavg()[0].toFixed(1),
  };
  const root = tmpDir('cocos-bench-');
  const range = nextRange(600);
  const [first] = range.split('-').map(Number);
  // At info, the installed default: test/daemon.mjs reads the daemon's ports from its info lines
  // (at warn, Daemon.start never saw 'gRPC server listening' and the run stopped after its first figure).
  // A uid per VM when the bench runs as root (guest isolation): as many uids as ports (the test
  // helpers' default of 100 ran out at the scaling figure's 200 VMs).
  const env = fakeQemuEnv(path.join(root, 'state'), {
    MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: range, MANAGER_VM_UID_RANGE: nextUidRange(600), MANAGER_LOG_LEVEL: 'info', MANAGER_QEMU_START_TIMEOUT: '30s',
    // BENCH_GUEST_ISOLATION=false: every figure with guest isolation off (a root run has it on).
    ...(process.env.BENCH_GUEST_ISOLATION ? { MANAGER_GUEST_ISOLATION: process.env.BENCH_GUEST_ISOLATION } : {}),
  });
  // What the daemon's own environment is (test/daemon.mjs starts it with PATH, HOME and these).
  const daemonEnv = { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root', ...env };
  const template = JSON.parse(execFileSync(process.execPath, [CLI, 'qemu-args'], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' }));

  // BENCH_ONLY=guest-peer: only the figures of the guest-peer check.
  if (process.env.BENCH_ONLY === 'guest-peer') {
    await guestPeerCheck(env);
    return;
  }
  if (process.env.BENCH_ONLY === 'console-flood') {
    await consoleFlood();
    return;
  }
  // BENCH_ONLY=disk: only the cost of a VM disk on CreateVm.
  if (process.env.BENCH_ONLY === 'disk') {
    await diskCost(env);
    return;
  }
  // BENCH_ONLY=isolation: only guest isolation's cost on CreateVm.
  if (process.env.BENCH_ONLY === 'isolation') {
    await isolationCost(env);
    return;
  }

  // Start to serving, against `node -e ''`. BENCH_START_VS=<another build's dist/cli.js> also
  // starts that build, interleaved with this one (the order swapped each round), so the two
  // compare under the same load.
  const other = process.env.BENCH_START_VS;
  const builds = other ? [['this build', CLI], ['BENCH_START_VS', path.resolve(other)]] : [['this build', CLI]];
  const starts = new Map(builds.map(([name]) => [name, []]));
  const nodeStarts = [];
  const startRuns = Number(process.env.BENCH_START_RUNS ?? 5);
  const startOnce = async (cli, tag) => {
    const port = await freePort();
    const httpPort = await freePort();
    const t0 = process.hrtime.bigint();
    // Tracing as the installed env file sets it (cocos-manager.env: ratio 1.0; BENCH_TRACE_RATIO).
    const tracing = { COCOS_JAEGER_TRACE_RATIO: process.env.BENCH_TRACE_RATIO ?? '1.0' };
    const p = spawn(process.execPath, [...NODE_FLAGS, cli, 'serve'], { env: { PATH: process.env.PATH, ...env, ...tracing, MANAGER_STATE_DIR: path.join(root, `start-${tag}`), MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: String(port), MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: String(httpPort), MANAGER_ADMIN_SOCKET: path.join(root, `start-${tag}.sock`) }, stdio: 'ignore' });
    // The port first (a gRPC client that fails to connect backs off for a second), then the RPC.
    await waitPort(port, 20_000);
    const c = new managerPkg.ManagerService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    await call(c, 'CVMInfo', { id: 'x' }, 5_000);
    const took = ms(t0);
    c.close();
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
    return took;
  };
  for (let i = 0; i < startRuns; i++) {
    const t0 = process.hrtime.bigint();
    execFileSync(process.execPath, ['-e', '']);
    nodeStarts.push(ms(t0));
    for (const [name, cli] of i % 2 === 0 ? builds : [...builds].reverse()) starts.get(name).push(await startOnce(cli, `${i}-${starts.get(name).length}-${name === 'this build' ? 'a' : 'b'}`));
  }
  for (const [name, cli] of builds) {
    const startOver = pct(starts.get(name), 50) - pct(nodeStarts, 50);
    const label = other ? ` [${name}: ${path.relative(process.cwd(), cli) || cli}]` : '';
    figure({ figure: `start to serving (ms, p50 of ${startRuns})${label}`, value: pct(starts.get(name), 50).toFixed(0), floor: pct(nodeStarts, 50).toFixed(0), over_ms: startOver.toFixed(0), target: '<= 250 ms over the floor', ok: startOver <= 250 });
  }
  // BENCH_ONLY=start: only the start-to-serving figure.
  if (process.env.BENCH_ONLY === 'start') return;

  const daemon = await startDaemon(env, { nodeFlags: NODE_FLAGS });
  const client = daemon.client();
  await sleep(2000);
  const idleRss = rssMiB(daemon.proc.pid);
  figure({ figure: 'daemon RSS idle (MiB)', value: idleRss.toFixed(1), floor: 'none', target: '<= 80 MiB', ok: idleRss <= 80 });

  // Sequential CreateVm and RemoveVm, interleaved with their floors so drift hits both alike.
  const create = [];
  const createFloor = [];
  const remove = [];
  const removeFloor = [];
  for (let i = 0; i < 10; i++) await call(client, 'RemoveVm', { cvm_id: (await call(client, 'CreateVm', {})).cvm_id }); // warm-up
  for (let i = 0; i < N_SEQ; i++) {
    // Alternate which goes first, so neither always runs in the other's wake.
    const floorFirst = i % 2 === 0;
    const runFloor = async () => {
      const d = await directLaunch(template, root, i, first + 500 + (i % 50), daemonEnv);
      createFloor.push(d.launchMs);
      removeFloor.push(await directStop(d.child));
    };
    if (floorFirst) await runFloor();
    let t0 = process.hrtime.bigint();
    const vm = await call(client, 'CreateVm', {});
    create.push(ms(t0));
    t0 = process.hrtime.bigint();
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    remove.push(ms(t0));
    if (!floorFirst) await runFloor();
    await sleep(20); // let exited processes be reaped before the next pair
  }
  const over = (a, b, p) => pct(a, p) - pct(b, p);
  const cycle = create.map((c, i) => c + remove[i]);
  const cycleFloor = createFloor.map((c, i) => c + removeFloor[i]);
  figure({ figure: `CreateVm+RemoveVm cycle p50/p99 (ms, ${N_SEQ} sequential)`, value: `${pct(cycle, 50).toFixed(1)}/${pct(cycle, 99).toFixed(1)}`, floor: `${pct(cycleFloor, 50).toFixed(1)}/${pct(cycleFloor, 99).toFixed(1)}`, over_ms: over(cycle, cycleFloor, 50).toFixed(1), ratio: (pct(cycle, 50) / pct(cycleFloor, 50)).toFixed(2), target: '<= 10 ms over the floor at p50', ok: over(cycle, cycleFloor, 50) <= 10 });
  figure({ figure: `CreateVm latency p50/p99 (ms, ${N_SEQ} sequential)`, value: `${pct(create, 50).toFixed(1)}/${pct(create, 99).toFixed(1)}`, floor: `${pct(createFloor, 50).toFixed(1)}/${pct(createFloor, 99).toFixed(1)}`, over_ms: over(create, createFloor, 50).toFixed(1), ratio: (pct(create, 50) / pct(createFloor, 50)).toFixed(2), target: '<= 5 ms over the floor at p50', ok: over(create, createFloor, 50) <= 5 });
  figure({ figure: 'RemoveVm latency p50/p99 (ms)', value: `${pct(remove, 50).toFixed(1)}/${pct(remove, 99).toFixed(1)}`, floor: `${pct(removeFloor, 50).toFixed(1)}/${pct(removeFloor, 99).toFixed(1)}`, over_ms: over(remove, removeFloor, 50).toFixed(1), ratio: (pct(remove, 50) / pct(removeFloor, 50)).toFixed(2), target: '<= 5 ms over the floor at p50', ok: over(remove, removeFloor, 50) <= 5 });

  // CreateVm p50 as the host fills up.
  const background = [];
  const p50At = {};
  for (const level of [0, BACKGROUND, 2 * BACKGROUND]) {
    while (background.length < level) background.push(await call(client, 'CreateVm', {}));
    const xs = [];
    for (let i = 0; i < 30; i++) {
      const t0 = process.hrtime.bigint();
      const vm = await call(client, 'CreateVm', {});
      xs.push(ms(t0));
      await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    }
    p50At[level] = pct(xs, 50);
  }
  const scale = p50At[2 * BACKGROUND] / p50At[0];
  figure({ figure: `CreateVm p50 with 0/${BACKGROUND}/${2 * BACKGROUND} VMs running (ms)`, value: `${p50At[0].toFixed(1)}/${p50At[BACKGROUND].toFixed(1)}/${p50At[2 * BACKGROUND].toFixed(1)}`, floor: `${p50At[0].toFixed(1)} (at 0)`, ratio: scale.toFixed(2), target: `ratio ${2 * BACKGROUND}/0 <= 1.2`, ok: scale <= 1.2 });
  const fullRss = rssMiB(daemon.proc.pid);
  figure({ figure: `daemon RSS with ${background.length} VMs (MiB)`, value: fullRss.toFixed(1), floor: 'none', target: '<= 120 MiB', ok: fullRss <= 120 });
  await Promise.all(background.map((vm) => call(client, 'RemoveVm', { cvm_id: vm.cvm_id })));

  // 50 concurrent launches.
  let t0 = process.hrtime.bigint();
  const launched = await Promise.all(Array.from({ length: 50 }, (_, i) => directLaunch(template, root, 1000 + i, first + 500 + i, daemonEnv)));
  const floorWall = ms(t0);
  await Promise.all(launched.map((d) => directStop(d.child)));
  t0 = process.hrtime.bigint();
  const vms = await Promise.all(Array.from({ length: 50 }, () => call(client, 'CreateVm', {}, 60_000)));
  const wall = ms(t0);
  await Promise.all(vms.map((vm) => call(client, 'RemoveVm', { cvm_id: vm.cvm_id })));
  figure({ figure: '50 concurrent CreateVm, wall (ms)', value: wall.toFixed(0), floor: floorWall.toFixed(0), ratio: (wall / floorWall).toFixed(2), target: 'ratio <= 1.5', ok: wall / floorWall <= 1.5 });

  // Spawn to ready (QMP answered "running"), from the daemon's own timings (a second daemon that
  // logs at info), against the same stand-in spawned directly and asked over QMP.
  {
    const infoEnv = fakeQemuEnv(path.join(root, 'state-info'), { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: nextRange(60), MANAGER_LOG_LEVEL: 'info', MANAGER_QEMU_START_TIMEOUT: '30s' });
    const d2 = await startDaemon(infoEnv, { nodeFlags: NODE_FLAGS });
    const c2 = d2.client();
    const readyFloor = [];
    for (let i = 0; i < 5; i++) await call(c2, 'RemoveVm', { cvm_id: (await call(c2, 'CreateVm', {})).cvm_id });
    const n = quick ? 15 : 40;
    for (let i = 0; i < n; i++) {
      readyFloor.push(await directQmpLaunch(template, root, 2000 + i, first + 500 + (i % 50), daemonEnv));
      await call(c2, 'RemoveVm', { cvm_id: (await call(c2, 'CreateVm', {})).cvm_id });
    }
    const started = d2.logs.lines.filter((l) => l.msg === 'VM started' && l.timings_ms).slice(-n);
    const spawnToReady = started.map((l) => l.timings_ms.ready - l.timings_ms.files);
    c2.close();
    await d2.stop();
    figure({ figure: `spawn to ready (QMP "running") p50/p99 (ms, ${n})`, value: `${pct(spawnToReady, 50).toFixed(1)}/${pct(spawnToReady, 99).toFixed(1)}`, floor: `${pct(readyFloor, 50).toFixed(1)}/${pct(readyFloor, 99).toFixed(1)}`, over_ms: over(spawnToReady, readyFloor, 50).toFixed(1), ratio: (pct(spawnToReady, 50) / pct(readyFloor, 50)).toFixed(2), target: 'report (floor: direct spawn + QMP query-status)' });
  }

  // CVMInfo throughput against a bare grpc-js server.
  const barePort = await freePort();
  const bare = spawn(process.execPath, [path.join(here, 'bare-server.mjs'), String(barePort)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => bare.stdout.once('data', r));
  const bareClient = new managerPkg.ManagerService(`127.0.0.1:${barePort}`, grpc.credentials.createInsecure());
  await throughput(bareClient, 1);
  await throughput(client, 1);
  // One-second windows, alternated (the order swapped each round): the machine's load moves
  // between two consecutive 4 s windows by more than the difference measured.
  const bareWindows = [];
  const ourWindows = [];
  for (let r = 0; r < (quick ? 2 : 4); r++) {
    for (const which of r % 2 === 0 ? ['bare', 'ours'] : ['ours', 'bare']) {
      if (which === 'bare') bareWindows.push(await throughput(bareClient, 1));
      else ourWindows.push(await throughput(client, 1));
    }
  }
  const bareRps = pct(bareWindows, 50);
  const ourRps = pct(ourWindows, 50);
  bareClient.close();
  bare.kill('SIGTERM');
  figure({ figure: 'CVMInfo calls/s, 64 concurrent callers', value: ourRps.toFixed(0), floor: bareRps.toFixed(0), ratio: (ourRps / bareRps).toFixed(2), target: '>= 0.8 of the bare server', ok: ourRps / bareRps >= 0.8 });

  client.close();
  await daemon.stop();
  await guestPeerCheck(env);
  await isolationCost(env);
  await diskCost(env);
  await consoleFlood();

  fs.rmSync(root, { recursive: true, force: true });
  results.machine.loadavg_1m_at_end = +os.loadavg()[0].toFixed(1);

  const rows = [['figure', 'value', 'floor', 'ratio', 'target', 'met'], ...results.figures.map((f) => [f.figure, String(f.value), String(f.floor), f.ratio ?? (f.over_ms ? `+${f.over_ms} ms` : '-'), f.target ?? '-', f.ok === undefined ? '-' : f.ok ? 'yes' : 'NO'])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  process.stdout.write(`${rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ')).join('\n')}\n`);
  fs.mkdirSync(path.join(here, 'results'), { recursive: true });
  fs.writeFileSync(path.join(here, 'results', 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  const m = results.machine;
  process.stdout.write(`\nmachine: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, node ${m.node}; guest isolation ${m.guest_isolation ? 'on' : 'off'}; load average (1 min) ${m.loadavg_1m_at_start} at the start, ${m.loadavg_1m_at_end} at the end\nwritten: bench/results/latest.json\n`);
}

main().catch(async (err) => {
  process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
  await Promise.all([...started].map((d) => d.stop().catch(() => undefined)));
  process.exit(1);
});
