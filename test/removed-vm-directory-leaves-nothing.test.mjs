// RemoveVm answers once the VM's directory (its secrets included) is gone: everything in it,
// however deep, and a symlink in it removed as a link (what it points at is left alone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { removeVmDir } from '../dist/vm/vm-dir.js';
import { tmpDir } from './daemon.mjs';

test('the directory goes with everything in it; what a symlink in it points at stays', async () => {
  const root = tmpDir('cocos-rmdir-');
  const outside = path.join(root, 'outside');
  fs.mkdirSync(path.join(outside, 'keep'), { recursive: true });
  fs.writeFileSync(path.join(outside, 'keep', 'file'), 'not the VM\'s');
  const dir = path.join(root, 'vm');
  fs.mkdirSync(path.join(dir, 'env'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'certs', 'deeper', 'still'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'env', 'environment'), 'SECRET=1\n');
  fs.writeFileSync(path.join(dir, 'certs', 'key.pem'), 'private key');
  fs.writeFileSync(path.join(dir, 'certs', 'deeper', 'still', 'x'), 'x');
  fs.writeFileSync(path.join(dir, 'OVMF_VARS.fd'), Buffer.alloc(128 * 1024, 1));
  fs.symlinkSync(outside, path.join(dir, 'link-to-dir'));
  fs.symlinkSync(path.join(outside, 'keep', 'file'), path.join(dir, 'link-to-file'));
  await removeVmDir(dir);
  assert.equal(fs.existsSync(dir), false);
  assert.equal(fs.readFileSync(path.join(outside, 'keep', 'file'), 'utf8'), 'not the VM\'s');
});

test('a directory already gone is not an error; one that cannot be removed is', async () => {
  const root = tmpDir('cocos-rmdir-');
  await removeVmDir(path.join(root, 'never-made'));
  if (process.getuid?.() === 0) return; // root removes whatever the modes say
  const dir = path.join(root, 'vm');
  fs.mkdirSync(path.join(dir, 'env'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'env', 'environment'), 'x');
  fs.chmodSync(path.join(dir, 'env'), 0o500);
  try {
    await assert.rejects(removeVmDir(dir), (err) => err.code === 'EACCES');
  } finally {
    fs.chmodSync(path.join(dir, 'env'), 0o700);
  }
});
