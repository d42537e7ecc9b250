// Recovery compares paths after realpath: a daemon restarted with a symlinked or relative
// MANAGER_STATE_DIR re-adopts the VMs an earlier run started through the real path (and never
// deletes their directories). A VM directory that cannot be removed is logged and counted; the
// daemon starts and serves anyway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, tmpDir } from './daemon.mjs';

const record = (state, id) => JSON.parse(fs.readFileSync(path.join(state, 'vms', id, 'record.json'), 'utf8'));

test('a symlinked or relative MANAGER_STATE_DIR re-adopts the VMs started through the real path', async () => {
  const base = tmpDir('cocos-realpath-');
  const real = path.join(base, 'real');
  fs.mkdirSync(real);
  fs.symlinkSync(real, path.join(base, 'link'));
  const env = fakeQemuEnv(real);
  const first = await Daemon.start(env);
  const [vm] = await first.createVms({});
  const { pid } = record(real, vm.cvm_id);
  let d = first;
  let client;
  try {
    for (const stateDir of [path.join(base, 'link'), 'link']) {
      d = await d.restart({ env: { MANAGER_STATE_DIR: stateDir }, cwd: base });
      assert.ok(d.logs.lines.some((l) => l.cvm_id === vm.cvm_id && l.msg === 're-adopted a running VM'), `re-adopted with MANAGER_STATE_DIR=${stateDir}`);
      assert.ok(fs.existsSync(path.join(real, 'vms', vm.cvm_id, 'record.json')), 'its directory is kept');
      assert.ok(isAlive(pid));
    }
    d = await d.restart({ env: { MANAGER_STATE_DIR: real }, cwd: undefined });
    client = d.client();
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    assert.equal(isAlive(pid), false);
  } finally {
    client?.close();
    await d.stop();
  }
});

test('a VM directory recovery cannot remove is logged and counted; the daemon serves', { skip: process.getuid?.() !== 0 ? 'needs root (a bind mount makes the directory busy)' : false }, async () => {
  const state = tmpDir('cocos-busy-');
  const dead = path.join(state, 'vms', '0e3c4a8e-5b1f-4a43-9d0e-2b7f3c1d9a10');
  const busy = path.join(dead, 'certs');
  fs.mkdirSync(busy, { recursive: true });
  const gone = path.join(state, 'vms', '7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d');
  fs.mkdirSync(gone, { recursive: true });
  const src = tmpDir('cocos-busy-src-');
  execFileSync('mount', ['--bind', src, busy]);
  try {
    const d = await Daemon.start(fakeQemuEnv(state));
    try {
      const line = d.logs.lines.find((l) => l.msg === 'state recovered');
      assert.equal(line.failed, 1);
      assert.equal(line.cleaned, 1);
      const err = d.logs.lines.find((l) => /could not remove the directory/.test(l.msg ?? ''));
      assert.equal(err.level, 'error');
      assert.match(err.msg, /EBUSY/);
      const client = d.client();
      const vm = await call(client, 'CreateVm', {});
      await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
      client.close();
    } finally {
      await d.stop();
    }
  } finally {
    execFileSync('umount', [busy]);
    fs.rmSync(state, { recursive: true, force: true });
    fs.rmSync(src, { recursive: true, force: true });
  }
});
