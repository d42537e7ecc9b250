// The uid pool against a stand-in process table (no root needed): a uid a process runs as is
// skipped, looked at for every CreateVm (another daemon's QEMU may have just started as it), a
// released uid is free again only once nothing runs as it (what still runs is killed), uids go
// round the range, and a burst of RemoveVm is retired by one look at the host's processes, not
// one per VM (each look reads every process's status).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UidPool } from '../dist/manager/uid-pool.js';

/** A process table: uid -> how many processes run as it; counts the looks taken. */
function processTable(initial = {}) {
  const procs = new Map(Object.entries(initial).map(([u, n]) => [Number(u), n]));
  const t = {
    procs,
    looks: 0,
    killed: [],
    /** Processes that survive SIGKILL (stuck in the kernel), by uid. */
    unkillable: new Set(),
    inUse() {
      t.looks++;
      return new Set([...procs].filter(([, n]) => n > 0).map(([u]) => u));
    },
    killAll(uids) {
      t.looks++;
      const left = new Map();
      for (const uid of uids) {
        const n = procs.get(uid) ?? 0;
        if (n === 0) continue;
        left.set(uid, n);
        t.killed.push(uid);
        if (!t.unkillable.has(uid)) procs.set(uid, 0); // reaped by the next look
      }
      return left;
    },
  };
  return t;
}

// The pool's timers and clock are the test's: time passes when the test says so.
const mockTime = (t) => t.mock.timers.enable({ apis: ['setTimeout', 'setImmediate', 'Date'], now: 1_000_000 });

test('a uid a process runs as is skipped; uids go round the range; none left is undefined', () => {
  const table = processTable({ 101: 1 });
  const pool = new UidPool({ first: 100, last: 102 }, table);
  assert.equal(pool.acquire(), 100);
  assert.equal(pool.acquire(), 102, '101 runs a process (another daemon on the range)');
  assert.equal(pool.acquire(), undefined);
});

test('a released uid is handed out again only after what still runs as it is killed', (t) => {
  mockTime(t);
  const table = processTable();
  const pool = new UidPool({ first: 100, last: 101 }, table);
  assert.equal(pool.acquire(), 100);
  assert.equal(pool.acquire(), 101);
  table.procs.set(100, 2); // the VM's QEMU left a detached child behind
  pool.release(100);
  assert.equal(pool.acquire(), undefined, 'what runs as it is killed, and it is held until nothing does');
  assert.deepEqual(table.killed, [100]);
  assert.equal(pool.acquire(), 100, 'free once a later look finds nothing running as it');
});

test('a burst of releases is retired by one look at the processes, in the same turn', (t) => {
  mockTime(t);
  const table = processTable();
  const pool = new UidPool({ first: 100, last: 199 }, table);
  const uids = Array.from({ length: 50 }, () => pool.acquire());
  const looks = table.looks;
  for (const uid of uids) pool.release(uid);
  assert.equal(table.looks, looks, 'not on the RemoveVm path');
  t.mock.timers.tick(0);
  assert.equal(table.looks, looks + 1, 'fifty RemoveVm in a burst: one look');
});

test('every CreateVm looks again: a process started as a uid a moment ago (another daemon\'s QEMU) is seen', () => {
  const table = processTable();
  const pool = new UidPool({ first: 100, last: 102 }, table);
  assert.equal(pool.acquire(), 100);
  table.procs.set(101, 1);
  assert.equal(pool.acquire(), 102);
});

test('a uid whose processes survive SIGKILL stays out of use and is reported once', (t) => {
  mockTime(t);
  const table = processTable();
  const stuck = [];
  const pool = new UidPool({ first: 100, last: 100 }, table, (uid, left) => stuck.push([uid, left]));
  assert.equal(pool.acquire(), 100);
  table.procs.set(100, 1);
  table.unkillable.add(100);
  pool.release(100);
  for (let i = 0; i < 10; i++) t.mock.timers.tick(1_000);
  assert.deepEqual(stuck, [[100, 1]]);
  assert.equal(pool.acquire(), undefined);
  table.unkillable.delete(100);
  table.procs.set(100, 0);
  t.mock.timers.tick(1_000);
  assert.equal(pool.acquire(), 100, 'free once nothing runs as it');
});

test('when only uids being retired are left, the next CreateVm retires them at once rather than being refused', (t) => {
  mockTime(t);
  const table = processTable();
  const pool = new UidPool({ first: 100, last: 100 }, table);
  assert.equal(pool.acquire(), 100);
  pool.release(100); // its retirement is due on a timer that has not fired yet
  assert.equal(pool.acquire(), 100);
});
