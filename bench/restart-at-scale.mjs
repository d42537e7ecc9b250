#!/usr/bin/env node
// The restart at scale: N stand-in VMs running, the daemon killed with -9, started again on the
// same state directory. Reports the time to serving and to all re-adopted (from the daemon's own
// log lines, against the spawn), and its RSS, next to an empty start measured in the same run.
// BENCH_RESTART_N="100 250" picks the scales (default 100). Run by `make bench` after the build;
// each stand-in is test/fixtures/fake-qemu.mjs (a node process, ~45 MiB): N=100 needs ~5 GiB.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, nextRange, tmpDir } from '../test/daemon.mjs';

const NODE_FLAGS = (process.env.COCOS_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
const RESTARTS = Number(process.env.BENCH_RESTARTS ?? 3);
const SCALES = (process.env.BENCH_RESTART_N ?? '100').split(/\s+/).filter(Boolean).map(Number);
const log = (s) => process.stderr.write(`bench: ${s}\n`);
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat).
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const TICKS_PER_S = 100;
const lineTime = (d, msg) => Date.parse(d.logs.lines.find((l) => l.msg === msg)?.time);

/** Starts a daemon; the times (ms since the spawn) of its log lines that mark the start. */
async function timedStart(env) {
  const t0 = Date.now();
  const d = await Daemon.start(env, { nodeFlags: NODE_FLAGS, timeoutMs: 300_000 });
  return {
    d,
    http: lineTime(d, 'HTTP endpoint listening') - t0,
    recovered: lineTime(d, 'state recovered') - t0,
    serving: lineTime(d, 'gRPC server listening') - t0,
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function atScale(n) {
  const state = tmpDir('cocos-bench-restart-');
  const env = fakeQemuEnv(state, { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: nextRange(n + 10), MANAGER_LOG_LEVEL: 'info', MANAGER_QEMU_START_TIMEOUT: '60s' });
  // The floors: `node -e ''` and an empty start, interleaved, 3 of each.
  const bare = [];
  const empty = [];
  for (let i = 0; i < 3; i++) {
    let t0 = Date.now();
    execFileSync(process.execPath, ['-e', '']);
    bare.push(Date.now() - t0);
    const s = await timedStart(fakeQemuEnv(tmpDir('cocos-bench-empty-'), { MANAGER_LOG_LEVEL: 'info' }));
    empty.push(s.serving);
    await s.d.stop();
  }
  const first = await Daemon.start(env, { nodeFlags: NODE_FLAGS, timeoutMs: 60_000 });
  const client = first.client();
  const t0 = Date.now();
  for (let i = 0; i < n; i += 10) {
    await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => call(client, 'CreateVm', {}, 120_000)));
  }
  log(`${n} VMs created in ${Date.now() - t0} ms`);
  client.close();
  const rssBefore = rssMiB(first.proc.pid);
  // Killed with -9 and restarted RESTARTS times on the same VMs (medians reported).
  let daemon = first;
  const runs = [];
  for (let k = 0; k < RESTARTS; k++) {
    await daemon.stop('SIGKILL', { keepVms: true });
    const s = await timedStart(env);
    daemon = s.d;
    s.adopted = s.d.logs.lines.filter((l) => l.msg === 're-adopted a running VM').length;
    await new Promise((r) => setTimeout(r, 1_000));
    s.rss = rssMiB(s.d.proc.pid);
    // CPU of the restarted daemon doing nothing but supervising the re-adopted VMs, over 5 s.
    const c0 = cpuTicks(s.d.proc.pid);
    await new Promise((r) => setTimeout(r, 5_000));
    s.idleCpu = ((cpuTicks(s.d.proc.pid) - c0) / TICKS_PER_S / 5) * 100;
    runs.push(s);
    log(`restart ${k + 1}: serving ${s.serving} ms, recovered ${s.recovered} ms (HTTP up at ${s.http} ms), ${s.adopted} adopted, RSS ${s.rss.toFixed(1)} MiB, idle CPU ${s.idleCpu.toFixed(1)} % of a core`);
  }
  await daemon.stop(); // SIGTERM, then the stand-ins of this state directory are killed
  const m = (k) => median(runs.map((r) => r[k]));
  const f = {
    n,
    restarts: RESTARTS,
    bare_node_ms: median(bare),
    empty_start_serving_ms: median(empty),
    restart_serving_ms: m('serving'),
    restart_http_ms: m('http'),
    restart_recovered_ms: m('recovered'),
    recovery_ms: median(runs.map((r) => r.recovered - r.http)),
    per_vm_ms: +(median(runs.map((r) => r.recovered - r.http)) / n).toFixed(2),
    adopted: Math.min(...runs.map((r) => r.adopted)),
    serving_ratio_to_empty: +(m('serving') / median(empty)).toFixed(2),
    rss_mib_after_restart: +m('rss').toFixed(1),
    rss_mib_before_kill: +rssBefore.toFixed(1),
    idle_cpu_pct_after_restart: +m('idleCpu').toFixed(1),
  };
  log(JSON.stringify(f));
  return f;
}

const results = [];
for (const n of SCALES) results.push(await atScale(n));
fs.mkdirSync(path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), 'results'), { recursive: true });
fs.writeFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), 'results', 'restart-at-scale.json'), `${JSON.stringify({ node_flags: NODE_FLAGS.join(' '), date: new Date().toISOString(), results }, null, 2)}\n`);
