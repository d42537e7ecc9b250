// Load and soak with the stand-in QEMU: 1000 CreateVm/RemoveVm cycles at concurrency 8 leave no
// extra descriptor, zombie, stray process, directory or held port, and memory growth is bounded;
// 64 concurrent CreateVm with MANAGER_MAX_VMS=10 give exactly 10 VMs on distinct ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, nextRange, portIsFree, tmpDir } from './daemon.mjs';

const CYCLES = Number(process.env.SOAK_CYCLES ?? 1000);
const CONCURRENCY = 8;

const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

function processes() {
  const out = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
      out.push({ pid: Number(e), state: rest[0], ppid: Number(rest[1]), cmdline });
    } catch {
      /* gone */
    }
  }
  return out;
}

async function metrics(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const get = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return { rss: get('cocos_manager_process_resident_memory_bytes'), heap: get('cocos_manager_nodejs_heap_size_used_bytes') };
}

test(`${CYCLES} CreateVm/RemoveVm cycles at concurrency ${CONCURRENCY} leave nothing behind`, async (t) => {
  const state = tmpDir();
  const range = nextRange(24);
  const [first, last] = range.split('-').map(Number);
  const d = await Daemon.start(fakeQemuEnv(state, { MANAGER_MAX_VMS: String(CONCURRENCY), MANAGER_QEMU_HOST_FWD_RANGE: range, MANAGER_LOG_LEVEL: 'info' }));
  const client = d.client();
  try {
    // Warm up: the first calls load code and open the client connection.
    for (let i = 0; i < 8; i++) await call(client, 'RemoveVm', { cvm_id: (await call(client, 'CreateVm', {})).cvm_id });
    const fdsBefore = fdCount(d.proc.pid);
    const memBefore = await metrics(d.httpPort);
    const t0 = Date.now();
    let next = 0;
    let failures = 0;
    // Memory at half time: what grows after it grows with the cycles (a leak), not with warm-up
    // (the allocator's arenas, V8's heap sizing), which under load can take more than a leak would.
    let memHalf;
    let halfTaken;
    const worker = async () => {
      while (next < CYCLES) {
        next++;
        if (next === CYCLES / 2) halfTaken = metrics(d.httpPort).then((m) => (memHalf = m));
        try {
          const vm = await call(client, 'CreateVm', { agent_log_level: 'info', ttl: '1h' }, 30_000);
          await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
        } catch (err) {
          failures++;
          t.diagnostic(`cycle failed: ${err.details ?? err.message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    await halfTaken;
    const seconds = (Date.now() - t0) / 1000;
    const fdsAfter = fdCount(d.proc.pid);
    const memAfter = await metrics(d.httpPort);
    const procs = processes();
    const zombies = procs.filter((p) => p.ppid === d.proc.pid && p.state === 'Z');
    // Every process that names the state directory is a stray, but the daemon's own state-dir lock.
    const isLockHolder = (p) => p.ppid === d.proc.pid && p.cmdline.startsWith('flock\0') && p.cmdline.includes('manager.lock');
    const strays = procs.filter((p) => p.cmdline.includes(state) && !isLockHolder(p));
    const leftDirs = fs.readdirSync(path.join(state, 'vms'));
    let busy = 0;
    for (let p = first; p <= last; p++) if (!(await portIsFree(p))) busy++;
    const mb = (b) => (b / 1024 / 1024).toFixed(1);
    t.diagnostic(`soak: ${CYCLES} cycles in ${seconds.toFixed(1)} s (${(CYCLES / seconds).toFixed(1)} cycles/s), ${failures} failed`);
    t.diagnostic(`soak: fds ${fdsBefore} -> ${fdsAfter}; RSS ${mb(memBefore.rss)} -> ${mb(memHalf.rss)} -> ${mb(memAfter.rss)} MiB; heap ${mb(memBefore.heap)} -> ${mb(memHalf.heap)} -> ${mb(memAfter.heap)} MiB`);
    t.diagnostic(`soak: zombies ${zombies.length}, strays ${strays.length}, dirs left ${leftDirs.length}, ports busy ${busy}`);
    assert.equal(failures, 0);
    assert.ok(fdsAfter <= fdsBefore + 2, `fds ${fdsBefore} -> ${fdsAfter}`);
    assert.deepEqual(zombies, []);
    assert.deepEqual(strays, []);
    assert.deepEqual(leftDirs, []);
    assert.equal(busy, 0);
    // A leak of even 16 KiB a cycle shows in the second half; warm-up does not.
    assert.ok(memAfter.rss - memHalf.rss < 16 * 1024 * 1024, 'RSS growth over the second half under 16 MiB');
    assert.ok(memAfter.heap - memHalf.heap < 8 * 1024 * 1024, 'heap growth over the second half under 8 MiB');
    assert.ok(memAfter.heap - memBefore.heap < 32 * 1024 * 1024, 'heap growth under 32 MiB');
  } finally {
    client.close();
    await d.stop();
  }
});

test('64 concurrent CreateVm with MANAGER_MAX_VMS=10: exactly 10 succeed on distinct ports', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state, { MANAGER_MAX_VMS: '10', MANAGER_QEMU_HOST_FWD_RANGE: nextRange(80), MANAGER_LOG_LEVEL: 'info' }));
  const client = d.client();
  try {
    const results = await Promise.allSettled(Array.from({ length: 64 }, () => call(client, 'CreateVm', {}, 60_000)));
    const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    const codes = results.filter((r) => r.status === 'rejected').map((r) => r.reason.code);
    assert.equal(ok.length, 10);
    assert.equal(new Set(ok.map((v) => v.forwarded_port)).size, 10);
    assert.deepEqual([...new Set(codes)], [8]);
    assert.equal(fs.readdirSync(path.join(state, 'vms')).length, 10);
    await Promise.all(ok.map((v) => call(client, 'RemoveVm', { cvm_id: v.cvm_id })));
  } finally {
    client.close();
    await d.stop();
  }
});
