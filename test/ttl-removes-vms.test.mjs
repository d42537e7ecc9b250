// A VM created with a ttl is removed when it expires, as RemoveVm would, and the removal is logged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, tmpDir, waitFor } from './daemon.mjs';
import { TtlTimer } from '../dist/manager/ttl-timer.js';

test('a VM with a ttl is removed when it expires, not before; one without ttl stays', async () => {
  const state = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(state));
  const client = d.client();
  try {
    const before = Date.now();
    const short = await call(client, 'CreateVm', { ttl: '1500ms' });
    // Read at once: on a loaded machine the TTL may already be near.
    const record = JSON.parse(fs.readFileSync(path.join(state, 'vms', short.cvm_id, 'record.json'), 'utf8'));
    const pid = record.pid;
    assert.ok(Date.parse(record.expiresAt) >= before + 1_500, `expiry ${record.expiresAt} is the ttl after the call`);
    const keep = await call(client, 'CreateVm', {});
    const expired = await d.waitForLog((l) => l.cvm_id === short.cvm_id && /TTL expired/.test(l.msg ?? ''), 15_000);
    assert.equal(expired.level, 'info');
    assert.ok(Date.parse(expired.time) >= Date.parse(record.expiresAt), 'not removed before its ttl');
    await d.waitForLog((l) => l.cvm_id === short.cvm_id && l.msg === 'VM removed', 15_000);
    assert.equal(isAlive(pid), false);
    assert.ok(await portIsFree(Number(short.forwarded_port)));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), [keep.cvm_id]);
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: short.cvm_id }), (e) => e.code === 5);
    await call(client, 'RemoveVm', { cvm_id: keep.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('a TTL longer than 24.8 days does not fire at once (Node timers overflow there)', async () => {
  let fired = false;
  const timer = new TtlTimer(Date.now() + 30 * 24 * 3600 * 1000, () => { fired = true; });
  assert.equal(await waitFor(() => fired, 200), false);
  timer.cancel();
  let soon = false;
  const t2 = new TtlTimer(Date.now() + 20, () => { soon = true; });
  assert.ok(await waitFor(() => soon, 1_000));
  t2.cancel();
});

test('a TTL never fires before its deadline, even when it was armed from a clock that ran ahead', async () => {
  // Armed while "now" reads 40 ms ahead (as Node's cached loop time can differ from the clock),
  // setTimeout comes 40 ms before the deadline; the timer must wait out the rest.
  let skew = 40;
  const at = Date.now() + 100;
  let firedAt;
  const timer = new TtlTimer(at, () => { firedAt = Date.now(); }, () => Date.now() + skew);
  skew = 0;
  assert.ok(await waitFor(() => firedAt !== undefined, 2_000));
  assert.ok(firedAt >= at, `fired ${at - firedAt} ms early`);
  timer.cancel();
});
