// The per-VM budget of console lines: a token bucket (bursts of ten seconds' worth, then the
// rate), and what is left out summarised in one line naming the VM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBucket } from '../dist/util/token-bucket.js';
import { ConsoleBudget } from '../dist/vm/console-budget.js';

test('the bucket gives its burst, then its rate', () => {
  let now = 0;
  const b = new TokenBucket(100, 1000, () => now);
  let n = 0;
  while (b.take()) n++;
  assert.equal(n, 1000);
  now += 250;
  n = 0;
  while (b.take()) n++;
  assert.equal(n, 25);
  now += 3_600_000;
  n = 0;
  while (b.take()) n++;
  assert.equal(n, 1000, 'never more than the burst saved up');
});

test('lines over the budget are summarised with the VM id, the count and the bytes not read', () => {
  const lines = [];
  const log = { warn: (fields, msg) => lines.push({ fields, msg }) };
  const budget = new ConsoleBudget('6f1c0b5e-0000-4000-8000-000000000001', 'console', 1, log);
  let taken = 0;
  for (let i = 0; i < 50; i++) if (budget.take()) taken++;
  assert.equal(taken, 10, 'ten seconds worth at 1 line/s');
  budget.dropped(48213);
  budget.skippedBytes(3 * 2 ** 20);
  budget.close();
  assert.equal(lines.length, 1);
  assert.match(lines[0].msg, /^VM 6f1c0b5e-0000-4000-8000-000000000001: 48,213 console lines not logged in the last 10 s; 3\.0 MiB more were written faster than they could be read/);
  assert.deepEqual({ ...lines[0].fields }, { stream: 'console', lines_not_logged: 48213, bytes_not_read: 3 * 2 ** 20, window_s: 10 });
  budget.close();
  assert.equal(lines.length, 1, 'nothing left out, nothing said');
});
