// The console-flood scenario, shared by its test (what must hold) and `make bench` (the latency
// figures): a daemon on the stand-in QEMU; CVMInfo measured idle, then while the same writer
// floods a file the daemon does not follow (the machine's load without the daemon's part), then
// while it floods a VM's console (~50 MB/s for 10 s through the stand-in QEMU's stdout).
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv } from './daemon.mjs';

export const RATE = 50_000_000;
export const FLOOD_MS = 10_000;
export const CAP = 8 * 1024 * 1024;
export const LINES_PER_SECOND = 100;

const rssKiB = (pid) => Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const size = (f) => { try { return fs.statSync(f).size; } catch { return 0; } };

export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Sequential CVMInfo calls for `ms`, with samples of the daemon's RSS and of `files`' sizes. */
async function measure(daemon, client, ms, files = []) {
  const latencies = [];
  const rss = [];
  const sizes = files.map(() => 0);
  const sampler = setInterval(() => {
    rss.push(rssKiB(daemon.proc.pid));
    files.forEach((f, i) => { sizes[i] = Math.max(sizes[i], size(f)); });
  }, 100);
  const end = Date.now() + ms;
  const id = randomUUID();
  while (Date.now() < end) {
    const t0 = process.hrtime.bigint();
    await call(client, 'CVMInfo', { id }, 5_000);
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  clearInterval(sampler);
  return { latencies, p50: percentile(latencies, 50), p99: percentile(latencies, 99), maxRssKiB: Math.max(...rss), sizes };
}

/**
 * Runs the scenario in `dir`; resolves { daemon, client, vm, idle, baseline, flooded } with the
 * daemon still running and the flooding VM in place (the caller removes it and stops the daemon).
 */
export async function floodScenario(dir, { nodeFlags = [] } = {}) {
  const modeFile = path.join(dir, 'mode');
  fs.writeFileSync(modeFile, 'normal');
  const daemon = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), {
    FAKE_QEMU_MODE_FILE: modeFile,
    MANAGER_LOG_LEVEL: 'info',
    MANAGER_CONSOLE_LINES_PER_SECOND: String(LINES_PER_SECOND),
  }), { nodeFlags });
  const client = daemon.client();
  try {
    await measure(daemon, client, 1_000); // warm-up: JIT, connection
    const idle = await measure(daemon, client, 3_000);

    // The same load on the machine, not reaching the daemon.
    const scratch = fs.openSync(path.join(dir, 'scratch.log'), 'a');
    const writer = spawn(process.execPath, [path.join(FIXTURES, 'console-flood.mjs'), String(RATE), String(FLOOD_MS), String(CAP)], { stdio: ['ignore', scratch, 'inherit'] });
    fs.closeSync(scratch);
    const writerDone = new Promise((r) => writer.once('exit', r));
    const baseline = await measure(daemon, client, FLOOD_MS - 1_000);
    await writerDone;

    // The flood through a VM's console.
    fs.writeFileSync(modeFile, `flood:${RATE}:${FLOOD_MS}`);
    const vm = await call(client, 'CreateVm', {});
    fs.writeFileSync(modeFile, 'normal');
    const consoleLog = path.join(dir, 'state', 'vms', vm.cvm_id, 'console.log');
    const flooded = await measure(daemon, client, FLOOD_MS - 1_000, [consoleLog, `${consoleLog}.1`]);
    return { daemon, client, vm, idle, baseline, flooded };
  } catch (err) {
    client.close();
    await daemon.stop();
    throw err;
  }
}

export const describeRun = (name, m) => `${name}: p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms over ${m.latencies.length} calls, max RSS ${(m.maxRssKiB / 1024).toFixed(0)} MiB`;
