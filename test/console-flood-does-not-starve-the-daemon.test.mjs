// A guest that floods its serial console (~50 MB/s for 10 s through the stand-in QEMU's stdout)
// does not starve the daemon: it keeps answering (every call, and far more than a starved one
// could), its RSS stays bounded, the console files stay within their cap, and the log gets a
// bounded number of console lines plus summaries of what it left out. The latency figures of
// the same scenario are `make bench`'s (test/console-flood-scenario.mjs).
//
// The baseline runs the same writer at the same rate into a file the daemon does not follow:
// the machine is shared (2 cores, other agents' tests), so an "idle" figure taken without that
// load would measure the machine, not the daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { call, tmpDir, waitFor } from './daemon.mjs';
import { CAP, FLOOD_MS, LINES_PER_SECOND, describeRun, floodScenario } from './console-flood-scenario.mjs';

test('a guest flooding its console does not starve the daemon, its memory or its disk', { timeout: 120_000 }, async () => {
  const { daemon, client, vm, idle, baseline, flooded } = await floodScenario(tmpDir('cocos-flood-'));
  try {
    // The flood is really there: the file was rotated (at 3/4 of the cap).
    assert.ok(flooded.sizes[1] >= (CAP * 3) / 4, `console.log.1 was written (${flooded.sizes[1]} bytes)`);
    process.stderr.write(`# ${describeRun('idle', idle)}\n# ${describeRun('same load, not through the daemon', baseline)}\n# ${describeRun('console flood', flooded)}\n# console.log max ${(flooded.sizes[0] / 2 ** 20).toFixed(1)} MiB, console.log.1 max ${(flooded.sizes[1] / 2 ** 20).toFixed(1)} MiB\n`);

    // The daemon answers: every call succeeded within its 5 s deadline (measure() would have
    // thrown), and not at a starved daemon's rate. A starved daemon answers about 2% of the
    // baseline's calls (measured with the line limit off); a healthy one, also rotating the
    // flood's files, 0.5-1.0 of them, 0.47 with four CPU burners beside it on 2 cores. A tenth
    // tells the two apart whatever the machine's load.
    assert.ok(flooded.latencies.length >= baseline.latencies.length / 10, `${flooded.latencies.length} calls under the flood vs ${baseline.latencies.length}`);
    // Memory: the daemon does not buffer the flood.
    assert.ok(flooded.maxRssKiB <= baseline.maxRssKiB + 64 * 1024, `RSS ${flooded.maxRssKiB} KiB vs ${baseline.maxRssKiB} KiB`);
    // Disk: console.log.1 never passes the cap. console.log is rotated from 3/4 of the cap and
    // emptied at once if it reaches the cap while a rotation's copy still runs; QEMU, not the
    // daemon, writes it, so what the flood adds before the daemon's event loop reacts comes on
    // top: at 50 MB/s, 1 MiB per 20 ms the event loop is late (15 MiB was seen at a load
    // average of 13 on 2 cores). What is asserted is that the file does not grow with the flood
    // (500 MB written): three caps, under 5 % of it.
    assert.ok(flooded.sizes[1] <= CAP, `console.log.1 ${flooded.sizes[1]} bytes, cap ${CAP}`);
    assert.ok(flooded.sizes[0] <= CAP * 3, `console.log ${flooded.sizes[0]} bytes, cap ${CAP}`);

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
    await daemon.stop();
  }
});
