// A guest that floods its serial console (~50 MB/s for 10 s through the stand-in QEMU's stdout)
// does not starve the daemon: CVMInfo latency stays within 2x of the same machine's latency
// without the flood reaching the daemon, RSS stays bounded, the console files stay within their
// cap, and the log gets a bounded number of console lines plus summaries of what it left out.
//
// The baseline runs the same writer at the same rate into a file the daemon does not follow:
// the machine is shared (2 cores, other agents' tests), so an "idle" figure taken without that
// load would measure the machine, not the daemon.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';

const RATE = 50_000_000;
const FLOOD_MS = 10_000;
const CAP = 8 * 1024 * 1024;
const LINES_PER_SECOND = 100;

let daemon;
after(async () => {
  await daemon?.stop();
});

const rssKiB = (pid) => Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const size = (f) => { try { return fs.statSync(f).size; } catch { return 0; } };

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Sequential CVMInfo calls for `ms`, with samples of the daemon's RSS and of `files`' sizes. */
async function measure(client, ms, files = []) {
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

test('a guest flooding its console does not starve the daemon, its memory or its disk', { timeout: 120_000 }, async () => {
  const dir = tmpDir('cocos-flood-');
  const modeFile = path.join(dir, 'mode');
  fs.writeFileSync(modeFile, 'normal');
  daemon = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), {
    FAKE_QEMU_MODE_FILE: modeFile,
    MANAGER_LOG_LEVEL: 'info',
    MANAGER_CONSOLE_LINES_PER_SECOND: String(LINES_PER_SECOND),
  }));
  const client = daemon.client();
  try {
    await measure(client, 1_000); // warm-up: JIT, connection
    const idle = await measure(client, 3_000);

    // The same load on the machine, not reaching the daemon.
    const scratch = fs.openSync(path.join(dir, 'scratch.log'), 'a');
    const writer = spawn(process.execPath, [path.join(FIXTURES, 'console-flood.mjs'), String(RATE), String(FLOOD_MS), String(CAP)], { stdio: ['ignore', scratch, 'inherit'] });
    fs.closeSync(scratch);
    const writerDone = new Promise((r) => writer.once('exit', r));
    const baseline = await measure(client, FLOOD_MS - 1_000);
    await writerDone;

    // The flood through a VM's console.
    fs.writeFileSync(modeFile, `flood:${RATE}:${FLOOD_MS}`);
    const vm = await call(client, 'CreateVm', {});
    fs.writeFileSync(modeFile, 'normal');
    const vmDir = path.join(dir, 'state', 'vms', vm.cvm_id);
    const consoleLog = path.join(vmDir, 'console.log');
    const flooded = await measure(client, FLOOD_MS - 1_000, [consoleLog, `${consoleLog}.1`]);
    // The flood is really there: the file was rotated (at 3/4 of the cap).
    assert.ok(flooded.sizes[1] >= (CAP * 3) / 4, `console.log.1 was written (${flooded.sizes[1]} bytes)`);

    const report = (name, m) => `${name}: p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms over ${m.latencies.length} calls, max RSS ${(m.maxRssKiB / 1024).toFixed(0)} MiB`;
    process.stderr.write(`# ${report('idle', idle)}\n# ${report('same load, not through the daemon', baseline)}\n# ${report('console flood', flooded)}\n# console.log max ${(flooded.sizes[0] / 2 ** 20).toFixed(1)} MiB, console.log.1 max ${(flooded.sizes[1] / 2 ** 20).toFixed(1)} MiB\n`);

    // Latency: within 2x of the baseline's p99, with a floor of 10 ms: on this shared 2-core
    // machine (load often above 10) a p99 below that is decided by the scheduler, not by the
    // daemon. A starved daemon is far beyond it (logging each line synchronously: hundreds of ms).
    assert.ok(flooded.p99 <= 2 * Math.max(baseline.p99, 10), `p99 ${flooded.p99.toFixed(2)} ms under the flood vs ${baseline.p99.toFixed(2)} ms without`);
    // Throughput, which a starved event loop loses first: a starved daemon answers about 2% of
    // the baseline's calls (measured with the line limit off); a healthy one, also rotating
    // the flood's files, keeps 0.5-1.0 of it, and 0.47 was seen with four CPU burners beside the
    // test on 2 cores. A quarter separates the two without depending on the machine's load.
    assert.ok(flooded.latencies.length >= baseline.latencies.length / 4, `${flooded.latencies.length} calls under the flood vs ${baseline.latencies.length}`);
    // Memory: the daemon does not buffer the flood.
    assert.ok(flooded.maxRssKiB <= baseline.maxRssKiB + 64 * 1024, `RSS ${flooded.maxRssKiB} KiB vs ${baseline.maxRssKiB} KiB`);
    // Disk: console.log.1 never passes the cap. console.log is rotated from 3/4 of the cap and
    // emptied at once if it reaches the cap while a rotation's copy still runs; QEMU, not the
    // daemon, writes it, so what the flood adds before the daemon's event loop reacts comes on
    // top (tens of milliseconds at worst on a loaded machine: at 50 MB/s, a few MiB).
    assert.ok(flooded.sizes[1] <= CAP, `console.log.1 ${flooded.sizes[1]} bytes, cap ${CAP}`);
    assert.ok(flooded.sizes[0] <= CAP * 1.5, `console.log ${flooded.sizes[0]} bytes, cap ${CAP}`);

    // The log: a bounded number of console lines, and a summary of the rest.
    assert.ok(await waitFor(() => daemon.logs.lines.some((l) => l.cvm_id === vm.cvm_id && l.lines_not_logged > 0), 15_000), 'summary logged');
    const summary = daemon.logs.lines.find((l) => l.cvm_id === vm.cvm_id && l.lines_not_logged > 0);
    assert.match(summary.msg, new RegExp(`^VM ${vm.cvm_id}: [\\d,]+ console lines not logged in the last 10 s`));
    const consoleLines = daemon.logs.lines.filter((l) => l.cvm_id === vm.cvm_id && l.stream === 'console' && !l.lines_not_logged).length;
    const elapsedS = (FLOOD_MS + 2_000) / 1000;
    assert.ok(consoleLines <= LINES_PER_SECOND * (10 + elapsedS), `${consoleLines} console lines logged`);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 15_000);
  } finally {
    client.close();
  }
});
