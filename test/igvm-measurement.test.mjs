// igvmmeasure is run without a shell, bounded in time, its output checked strictly, its result
// cached by the IGVM file's content (not its name, size or times), and concurrent first calls
// share one run.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { IgvmMeasurer } from '../dist/host/igvm-measurement.js';
import { tmpDir } from './daemon.mjs';
import { DIGEST, callsOf, contentDigest, makeIgvmmeasureStandIns } from './fixtures-igvmmeasure.mjs';

let dirOf;
let igvm;
before(() => {
  const root = tmpDir('cocos-igvm-');
  dirOf = makeIgvmmeasureStandIns(root);
  igvm = path.join(root, 'coconut-qemu.igvm');
  fs.writeFileSync(igvm, 'igvm image');
});

test('the digest is read from one line of hex; the tool gets "<igvm> measure -b"', async () => {
  const m = new IgvmMeasurer(dirOf('good'), 5_000);
  assert.equal(Buffer.from(await m.measure(igvm)).toString('hex'), DIGEST);
  assert.deepEqual(callsOf(dirOf('good')).slice(-1), [`${igvm} measure -b`]);
});

test('concurrent first calls run the tool once; later calls use the cache until the file changes', async () => {
  const file = path.join(path.dirname(igvm), 'other.igvm');
  fs.writeFileSync(file, 'v1');
  const m = new IgvmMeasurer(dirOf('good'), 5_000);
  const results = await Promise.all(Array.from({ length: 8 }, () => m.measure(file)));
  assert.equal(m.runs, 1);
  for (const r of results) assert.equal(Buffer.from(r).toString('hex'), DIGEST);
  await m.measure(file);
  assert.equal(m.runs, 1);
  fs.writeFileSync(file, 'version two, longer');
  await m.measure(file);
  assert.equal(m.runs, 2, 'a changed file is measured again');
});

test('a file replaced by one of the same size and modification time is measured again', async () => {
  const file = path.join(path.dirname(igvm), 'same-size.igvm');
  const t = new Date('2026-01-01T00:00:00Z'); // whole seconds: set back exactly
  fs.writeFileSync(file, 'AAAA');
  fs.utimesSync(file, t, t);
  const m = new IgvmMeasurer(dirOf('content'), 5_000);
  const first = Buffer.from(await m.measure(file)).toString('hex');
  assert.equal(first, contentDigest('AAAA'));
  const before = fs.statSync(file, { bigint: true });
  fs.writeFileSync(file, 'BBBB');
  fs.utimesSync(file, t, t);
  const after = fs.statSync(file, { bigint: true });
  assert.equal(after.mtimeNs, before.mtimeNs, 'same modification time');
  assert.equal(after.size, before.size, 'same size');
  assert.equal(after.ino, before.ino, 'same file');
  assert.equal(Buffer.from(await m.measure(file)).toString('hex'), contentDigest('BBBB'));
  assert.equal(m.runs, 2);
});

test('the same content under another name or path is not measured again', async () => {
  const root = path.dirname(igvm);
  const a = path.join(root, 'copy-a.igvm');
  const b = path.join(root, 'sub', 'copy-b.igvm');
  fs.mkdirSync(path.dirname(b), { recursive: true });
  fs.writeFileSync(a, 'shared content');
  fs.copyFileSync(a, b);
  const m = new IgvmMeasurer(dirOf('content'), 5_000);
  const [da, db] = await Promise.all([m.measure(a), m.measure(b)]);
  assert.deepEqual(da, db);
  assert.equal(m.runs, 1);
});

const failures = [
  ['two-lines', /printed 2 lines; expected exactly one line of hex/],
  ['exit-1', /exited with status 1; stderr: igvmmeasure: cannot parse IGVM file/],
  ['not-hex', /not hex/],
  ['short', /printed 32 bytes; expected the 48-byte SNP launch digest/],
];
for (const [kind, why] of failures) {
  test(`igvmmeasure that ${kind}: FAILED_PRECONDITION saying why`, async () => {
    const m = new IgvmMeasurer(dirOf(kind), 5_000);
    await assert.rejects(m.measure(igvm), (e) => e.kind === 'failed-precondition' && why.test(e.message));
  });
}

test('a hanging igvmmeasure is stopped after its timeout', async () => {
  const m = new IgvmMeasurer(dirOf('hang'), 300);
  const t0 = Date.now();
  await assert.rejects(m.measure(igvm), (e) => /did not finish within MANAGER_IGVMMEASURE_TIMEOUT \(300 ms\)/.test(e.message));
  assert.ok(Date.now() - t0 < 5_000);
});

test('a missing binary or IGVM file is named in the error; a failure is not cached', async () => {
  const m = new IgvmMeasurer('/nonexistent/bin', 5_000);
  await assert.rejects(m.measure(igvm), (e) => /not found \(MANAGER_ATTESTATION_POLICY_BINARY_PATH\)/.test(e.message));
  await assert.rejects(m.measure(igvm), /not found/);
  await assert.rejects(new IgvmMeasurer(dirOf('good'), 5_000).measure('/nonexistent.igvm'), /MANAGER_QEMU_IGVM_FILE/);
});
