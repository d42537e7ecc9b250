// Every CreateVm pins the SHA-384 of the files its QEMU loads (firmware, kernel, initramfs).
// A file whose identity (device, inode, size, modification and change times) is the one it had
// when it was last hashed is not read again; any write, even at once, makes it read again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startHashing } from '../dist/manager/file-digest.js';
import { tmpDir } from './daemon.mjs';

// The firmware the tests' VMs are given: installed long before any test runs.
const FIRMWARE = '/usr/share/OVMF/OVMF_CODE.fd';
const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');

/** Counts the read streams opened on file handles (what a hash reads the file with). */
async function countReads(fn) {
  const probe = await fs.promises.open(FIRMWARE, 'r');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  const original = proto.createReadStream;
  let reads = 0;
  proto.createReadStream = function (...args) {
    reads++;
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto.createReadStream = original;
  }
  return reads;
}

test('a file unchanged since its last hash is not read again, and its digest is the same', async () => {
  const first = await startHashing(FIRMWARE);
  assert.equal(await first.sha384, sha384(FIRMWARE));
  let again;
  const reads = await countReads(async () => {
    again = await startHashing(FIRMWARE);
    await again.sha384;
  });
  assert.equal(reads, 0);
  assert.equal(await again.sha384, sha384(FIRMWARE));
  assert.deepEqual(again.identity, first.identity);
});

test('a file written a moment ago is read every time: a write within the same timestamp tick must not go unseen', async () => {
  const file = path.join(tmpDir('cocos-digest-'), 'kernel');
  fs.writeFileSync(file, 'kernel v1');
  const reads = await countReads(async () => {
    assert.equal(await (await startHashing(file)).sha384, sha384(file));
    fs.writeFileSync(file, 'kernel v2'); // same size, same instant
    assert.equal(await (await startHashing(file)).sha384, sha384(file));
  });
  assert.equal(reads, 2);
});

test('a file replaced under the same path is read again', async () => {
  const dir = tmpDir('cocos-digest-');
  const file = path.join(dir, 'firmware');
  fs.symlinkSync(FIRMWARE, file);
  await (await startHashing(file)).sha384;
  const other = path.join(dir, 'other');
  fs.writeFileSync(other, 'other firmware');
  fs.rmSync(file);
  fs.symlinkSync(other, file);
  const h = await startHashing(file);
  assert.equal(await h.sha384, sha384(other));
});
