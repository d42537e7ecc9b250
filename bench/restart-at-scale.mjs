#!/usr/bin/env node
// The restart at scale: N stand-in VMs running, the daemon killed with -9, started again on the
// same state directory. Reports the time to serving and to all re-adopted (from the spawn), the
// restarted daemon's RSS and idle CPU, each next to an empty start of the same build measured in
// the same run, interleaved (one empty start before each restart, with the same N stand-ins
// running and no other daemon).
//
// BENCH_RESTART_NS="100,250,500" picks the scales (the default; BENCH_QUICK=1: "20,50");
// BENCH_RESTARTS (default 3) restarts per scale, medians reported. The stand-in QEMU is
// bench/fake-qemu-lite.c, compiled here with gcc into this run's temporary directory (~1 MiB of
// RSS a process, so 500 fit); BENCH_STANDIN=node uses test/fixtures/fake-qemu.mjs instead (a node
// process each, ~45 MiB: 250 take ~11 GiB). Every process and directory of the run is removed at
// the end, also on failure. Run by `make bench` after the build.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { FAKE_QEMU, call, fakeQemuEnv, isAlive, managerPkg, nextRange, nextUidRange, removeFirewallTable, spawnServe, tmpDir } from '../test/daemon.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const NODE_FLAGS = (process.env.COCOS_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
const QUICK = process.env.BENCH_QUICK === '1';
const RESTARTS = Number(process.env.BENCH_RESTARTS ?? (QUICK ? 2 : 3));
const SCALES = (process.env.BENCH_RESTART_NS ?? process.env.BENCH_RESTART_N ?? (QUICK ? '20,50' : '100,250,500')).split(/[\s,]+/).filter(Boolean).map(Number);
const STANDIN = process.env.BENCH_STANDIN === 'node' ? 'node' : 'c';
const CREATE_CONCURRENCY = 16;
/** Bounds: one start (500 VMs re-adopted included), one daemon's exit, the stand-ins' exit. */
const START_BOUND_MS = 300_000;
const EXIT_BOUND_MS = 20_000;
/** After both events: QEMU reconnects its QMP every second, so 2 s sees every stand-in back. */
const SETTLE_MS = 2_000;
const CPU_WINDOW_MS = 5_000;
const TICKS_PER_S = 100;

const log = (s) => process.stderr.write(`bench: ${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const statusKiB = (pid, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const rssMiB = (pid) => statusKiB(pid, 'VmRSS') / 1024;
// Proportional set size: a page shared by k processes counts 1/k in each (the stand-ins share their binary).
const pssKiB = (pid) => Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN);
// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const cmdline = (pid) => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
};

// Everything of this run lives under `root` (a fresh temporary directory): the stand-in binary,
// the state directories, the admin sockets. Clean-up kills by PID what names it, then removes it.
// Passable by the VMs' users (guest isolation when the bench runs as root: QEMU runs as each VM's uid).
const root = tmpDir('cocos-bench-restart-');
const daemons = new Set();
/** Every state directory of the run: a daemon killed with VMs left its guest firewall table (root). */
const stateDirs = new Set();
let admins = 0;

function cleanUp() {
  for (const p of daemons) p.kill('SIGKILL');
  for (const pid of pidsMentioning(root)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const dir of stateDirs) removeFirewallTable(dir);
  fs.rmSync(root, { recursive: true, force: true });
}
process.on('SIGINT', () => { cleanUp(); process.exit(130); });
process.on('SIGTERM', () => { cleanUp(); process.exit(143); });

function pidsMentioning(needle, pred = () => true) {
  const out = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    const cmd = cmdline(Number(e));
    if (cmd?.some((a) => a.includes(needle)) && pred(cmd) && isAlive(Number(e))) out.push(Number(e));
  }
  return out;
}

/** The stand-in binary, compiled for this run (no committed binary; never stale). */
function buildStandin() {
  if (STANDIN === 'node') return FAKE_QEMU;
  const bin = path.join(root, 'fake-qemu-lite');
  try {
    // Static: no shared libraries to map, ~0.8 MiB of RSS a process (mostly the binary's pages, shared).
    execFileSync('gcc', ['-O2', '-static', '-o', bin, path.join(here, 'fake-qemu-lite.c')], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 60_000 });
  } catch (err) {
    throw new Error(`cannot compile bench/fake-qemu-lite.c (needs gcc and libc6-dev: make bench installs them): ${err.message}`);
  }
  return bin;
}
const QEMU_BIN = buildStandin();
const QEMU_NAME = path.basename(QEMU_BIN);

/** The stand-ins running VMs of one state directory: the binary first (or behind node), the directory named. */
const standinPids = (stateDir) => pidsMentioning(stateDir, (cmd) => cmd.slice(0, 2).some((a) => path.basename(a) === QEMU_NAME));

/** A daemon spawned on loopback, ports 0 (read from its log), its own admin socket under root. */
function spawnDaemon(env) {
  const t0 = Date.now();
  const { proc, logs } = spawnServe({ ...env, MANAGER_ADMIN_SOCKET: path.join(root, `admin-${admins++}.sock`) }, NODE_FLAGS);
  daemons.add(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => { daemons.delete(proc); resolve({ code, signal }); }));
  return { t0, proc, logs, exited };
}

/** The first log line with this msg, as it arrives; rejects if the daemon exits first or after ms. */
function logLine(d, msg, ms) {
  return new Promise((resolve, reject) => {
    let i = 0;
    const check = () => {
      for (; i < d.logs.lines.length; i++) {
        if (d.logs.lines[i].msg === msg) {
          done();
          resolve(d.logs.lines[i]);
          return true;
        }
      }
      return false;
    };
    const onExit = () => {
      if (!check()) { done(); reject(new Error(`daemon exited before '${msg}'; stderr: ${d.logs.stderr.slice(-2000)}`)); }
    };
    const timer = setTimeout(() => { done(); reject(new Error(`no '${msg}' within ${ms} ms; last: ${JSON.stringify(d.logs.lines.slice(-3))}`)); }, ms);
    function done() {
      clearTimeout(timer);
      d.proc.stdout.off('data', check);
      d.proc.off('exit', onExit);
    }
    // test/daemon.mjs's own listener (registered first) has parsed the chunk's lines by now.
    d.proc.stdout.on('data', check);
    d.proc.once('exit', onExit);
    check();
  });
}

/** Stops a daemon (bounded): the signal, SIGKILL after EXIT_BOUND_MS. */
async function stopDaemon(d, signal) {
  if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill(signal);
  const t = setTimeout(() => d.proc.kill('SIGKILL'), EXIT_BOUND_MS);
  await d.exited;
  clearTimeout(t);
}

/**
 * Starts a daemon and waits for both marks of its start, in whichever order they come (the
 * daemon serves before it has re-adopted everything; the bench does not rely on it):
 * serving = 'gRPC server listening' logged, and the first CVMInfo about no VM answered OK after
 * it (asked at once); then, given `askVm`, a CVMInfo about that VM (answered once recovery has
 * decided it); re-adopted = 'state recovered' logged, with its counts. Then the RSS and idle CPU.
 */
async function timedStart(env, askVm) {
  const askId = 'bench'; // names no VM: answered as soon as the daemon serves
  const d = spawnDaemon(env);
  const served = logLine(d, 'gRPC server listening', START_BOUND_MS).then(async (l) => {
    d.port = l.port;
    const client = new managerPkg.ManagerService(`127.0.0.1:${l.port}`, grpc.credentials.createInsecure());
    const deadline = d.t0 + START_BOUND_MS;
    const refusals = [];
    try {
      for (;;) {
        try {
          await call(client, 'CVMInfo', { id: askId }, 10_000);
          break;
        } catch (err) {
          // A refusal counts as not yet serving (e.g. UNAVAILABLE while recovering); asked again
          // every 20 ms (more often would take CPU from the recovery it waits for), bounded.
          refusals.push(err.code);
          if (Date.now() > deadline) throw new Error(`CVMInfo not answered within ${START_BOUND_MS} ms of the spawn: ${err.message}`);
          await sleep(20);
        }
      }
    } finally {
      if (!askVm) client.close();
    }
    const answered = Date.now() - d.t0;
    // A call about a re-adopted VM waits until recovery has decided that VM (here the last
    // one created): when the daemon can answer for each of its VMs.
    let vmAnswered = null;
    if (askVm) {
      try {
        await call(client, 'CVMInfo', { id: askVm }, START_BOUND_MS);
        vmAnswered = Date.now() - d.t0;
      } finally {
        client.close();
      }
    }
    return { listening: Date.parse(l.time) - d.t0, answered, vmAnswered, refusals, startupMs: l.startup_ms };
  });
  const recovered = logLine(d, 'state recovered', START_BOUND_MS).then((l) => ({
    recovered: Date.parse(l.time) - d.t0,
    counts: { adopted: l.adopted, cleaned: l.cleaned, skipped: l.skipped, failed: l.failed },
  }));
  const http = logLine(d, 'HTTP endpoint listening', START_BOUND_MS).then((l) => Date.parse(l.time) - d.t0);
  const settled = await Promise.allSettled([served, recovered, http]);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) {
    await stopDaemon(d, 'SIGKILL');
    throw failed.reason;
  }
  const [s, r, h] = settled.map((x) => x.value);
  const m = { d, http: h, ...s, ...r, order: s.listening <= r.recovered ? 'serving first' : 're-adopted first' };
  await sleep(SETTLE_MS);
  // CPU of the daemon doing nothing but supervising what it re-adopted.
  const c0 = cpuTicks(d.proc.pid);
  await sleep(CPU_WINDOW_MS);
  m.idleCpu = ((cpuTicks(d.proc.pid) - c0) / TICKS_PER_S / (CPU_WINDOW_MS / 1000)) * 100;
  m.rss = rssMiB(d.proc.pid);
  return m;
}

/** Creates n VMs through the API, CREATE_CONCURRENCY at a time; their ids. */
async function createVms(d, n) {
  const client = new managerPkg.ManagerService(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
  const ids = [];
  let next = 0;
  try {
    await Promise.all(Array.from({ length: Math.min(CREATE_CONCURRENCY, n) }, async () => {
      while (next < n) {
        next++;
        ids.push((await call(client, 'CreateVm', {}, 120_000)).cvm_id);
      }
    }));
  } finally {
    client.close();
  }
  return ids;
}

async function killStandins(stateDir) {
  for (const pid of standinPids(stateDir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + EXIT_BOUND_MS;
  while (standinPids(stateDir).length > 0 && Date.now() < deadline) await sleep(50);
}

async function atScale(n) {
  const loadBefore = os.loadavg()[0];
  const stateDir = path.join(root, `n${n}`);
  fs.mkdirSync(stateDir);
  stateDirs.add(stateDir);
  const extra = { MANAGER_QEMU_BIN_PATH: QEMU_BIN, MANAGER_MAX_VMS: '0', MANAGER_LOG_LEVEL: 'info', MANAGER_QEMU_START_TIMEOUT: '60s' };
  // The same uids for every daemon on this state directory (a restart must find its VMs' uids in
  // its range), as many as the VMs (guest isolation when the bench runs as root).
  const env = fakeQemuEnv(stateDir, { ...extra, MANAGER_QEMU_HOST_FWD_RANGE: nextRange(n + 10), MANAGER_VM_UID_RANGE: nextUidRange(n + 10) });
  const first = await timedStart(env);
  const t0 = Date.now();
  const ids = await createVms(first.d, n);
  log(`N=${n}: ${n} VMs created in ${Date.now() - t0} ms`);
  const pids = standinPids(stateDir);
  if (pids.length !== n) throw new Error(`${pids.length} stand-ins running, ${n} expected`);
  const standinRss = pids.reduce((a, p) => a + statusKiB(p, 'VmRSS'), 0) / 1024;
  const standinPss = pids.reduce((a, p) => a + pssKiB(p), 0) / 1024;
  const creatorRss = rssMiB(first.d.proc.pid);
  log(`N=${n}: stand-ins ${standinRss.toFixed(1)} MiB RSS (${((standinRss / n) * 1024).toFixed(0)} KiB each), ${standinPss.toFixed(1)} MiB PSS; creating daemon ${creatorRss.toFixed(1)} MiB`);

  let daemon = first.d;
  const runs = [];
  const empties = [];
  for (let k = 0; k < RESTARTS; k++) {
    await stopDaemon(daemon, 'SIGKILL');
    // The floor, interleaved: an empty start of the same build, the same N stand-ins running.
    const emptyDir = fs.mkdtempSync(path.join(root, 'e'));
    stateDirs.add(emptyDir);
    const e = await timedStart(fakeQemuEnv(emptyDir, { ...extra, MANAGER_QEMU_HOST_FWD_RANGE: nextRange(5) }));
    await stopDaemon(e.d, 'SIGTERM');
    fs.rmSync(emptyDir, { recursive: true, force: true });
    empties.push(e);
    const s = await timedStart(env, ids[ids.length - 1]);
    daemon = s.d;
    if (s.counts.adopted !== n) throw new Error(`restart ${k + 1}: ${JSON.stringify(s.counts)} re-adopted, ${n} expected`);
    runs.push(s);
    log(`N=${n} restart ${k + 1}: listening ${s.listening} ms, answered ${s.answered} ms, about the last VM ${s.vmAnswered} ms, re-adopted ${s.recovered} ms (${s.order}; HTTP ${s.http} ms), ` +
      `RSS ${s.rss.toFixed(1)} MiB, idle CPU ${s.idleCpu.toFixed(1)} %  |  empty: answered ${e.answered} ms, recovered ${e.recovered} ms, RSS ${e.rss.toFixed(1)} MiB, CPU ${e.idleCpu.toFixed(1)} %`);
  }
  await stopDaemon(daemon, 'SIGTERM');
  await killStandins(stateDir);
  fs.rmSync(stateDir, { recursive: true, force: true });

  const m = (xs, k) => median(xs.map((r) => r[k]));
  const readoptOver = m(runs, 'recovered') - m(empties, 'recovered');
  return {
    n,
    restarts: RESTARTS,
    standin: STANDIN,
    // Other work on the machine moves every figure: the 1-minute load average before and after.
    loadavg_1m: [+loadBefore.toFixed(1), +os.loadavg()[0].toFixed(1)],
    standin_rss_mib_total: +standinRss.toFixed(1),
    standin_rss_kib_each: Math.round((standinRss / n) * 1024),
    standin_pss_mib_total: +standinPss.toFixed(1),
    creating_daemon_rss_mib: +creatorRss.toFixed(1),
    empty_listening_ms: m(empties, 'listening'),
    empty_serving_ms: m(empties, 'answered'),
    empty_recovered_ms: m(empties, 'recovered'),
    empty_rss_mib: +m(empties, 'rss').toFixed(1),
    empty_idle_cpu_pct: +m(empties, 'idleCpu').toFixed(1),
    restart_http_ms: m(runs, 'http'),
    restart_listening_ms: m(runs, 'listening'),
    restart_serving_ms: m(runs, 'answered'),
    restart_readopted_ms: m(runs, 'recovered'),
    restart_last_vm_answered_ms: m(runs, 'vmAnswered'),
    order: [...new Set(runs.map((r) => r.order))].join(', '),
    cvminfo_refusals_before_answer: runs.map((r) => r.refusals.length),
    serving_ratio_to_empty: +(m(runs, 'answered') / m(empties, 'answered')).toFixed(2),
    readopted_over_empty_ms: readoptOver,
    per_vm_ms: +(readoptOver / n).toFixed(2),
    // The figure of the earlier runs: HTTP up to 'state recovered' (the recovery's own window today).
    recovery_window_ms: median(runs.map((r) => r.recovered - r.http)),
    rss_mib_after_restart: +m(runs, 'rss').toFixed(1),
    idle_cpu_pct_after_restart: +m(runs, 'idleCpu').toFixed(1),
    runs: runs.map((r) => ({ listening: r.listening, answered: r.answered, last_vm_answered: r.vmAnswered, recovered: r.recovered, http: r.http, rss: +r.rss.toFixed(1), idle_cpu: +r.idleCpu.toFixed(1) })),
    empties: empties.map((r) => ({ listening: r.listening, answered: r.answered, recovered: r.recovered, rss: +r.rss.toFixed(1), idle_cpu: +r.idleCpu.toFixed(1) })),
  };
}

function report(results) {
  const rows = [
    ['N', 'empty serving', 'restart listening / answered', 'last VM answered', 'all re-adopted', 'serving / empty', 'per VM', 'RSS after (empty)', 'idle CPU (empty)', 'stand-in RSS each'],
    ...results.map((f) => [
      String(f.n), `${f.empty_serving_ms} ms`, `${f.restart_listening_ms} / ${f.restart_serving_ms} ms`, `${f.restart_last_vm_answered_ms} ms`, `${f.restart_readopted_ms} ms`, String(f.serving_ratio_to_empty),
      `${f.per_vm_ms} ms`, `${f.rss_mib_after_restart} (${f.empty_rss_mib}) MiB`, `${f.idle_cpu_pct_after_restart} (${f.empty_idle_cpu_pct}) %`, `${f.standin_rss_kib_each} KiB`,
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  process.stdout.write(`${rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ')).join('\n')}\n`);
  const lo = results[0];
  const hi = results[results.length - 1];
  if (results.length > 1 && lo.per_vm_ms > 0) {
    process.stdout.write(`re-adoption per VM at N=${hi.n} / at N=${lo.n}: ${(hi.per_vm_ms / lo.per_vm_ms).toFixed(2)} (1.0 = linear in N)\n`);
  }
  process.stdout.write(`RSS after restart at N=${hi.n}: ${hi.rss_mib_after_restart} MiB (goal at 500: <= 150 MiB)\n`);
}

try {
  const results = [];
  for (const n of SCALES) {
    const f = await atScale(n);
    log(JSON.stringify({ ...f, runs: undefined, empties: undefined }));
    results.push(f);
  }
  report(results);
  const commit = (() => { try { return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8', cwd: here }).trim(); } catch { return 'unknown'; } })();
  const out = { node_flags: NODE_FLAGS.join(' '), date: new Date().toISOString(), commit, cores: os.cpus().length, loadavg: os.loadavg(), standin: STANDIN, results };
  fs.mkdirSync(path.join(here, 'results'), { recursive: true });
  fs.writeFileSync(path.join(here, 'results', 'restart-at-scale.json'), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write('written: bench/results/restart-at-scale.json\n');
} catch (err) {
  process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  cleanUp();
}
