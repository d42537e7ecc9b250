// `cocos-manager check` on guest isolation: a launch file the VM users cannot read, a uid range
// that collides with an account or subordinate ids, and isolation turned off are each named,
// with the setting to change. (The uid range logic itself: a pure function, tested with texts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCli } from './helpers.mjs';
import { tmpDir } from './daemon.mjs';
import { uidRangeConflicts } from '../dist/isolation/uid-range.js';

const isRoot = process.getuid?.() === 0;

function checkEnv(dir, extra = {}) {
  const kernel = path.join(dir, 'bzImage');
  const initrd = path.join(dir, 'initrd');
  for (const f of [kernel, initrd]) fs.writeFileSync(f, 'x', { mode: 0o644 });
  return {
    MANAGER_STATE_DIR: path.join(dir, 'state'),
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_ENABLE_KVM: 'false',
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: kernel,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: initrd,
    ...extra,
  };
}

const line = (out, check) => out.split('\n').find((l) => l.includes(check)) ?? '';

test('check fails a launch file the VMs\' users cannot read, naming the setting', { skip: isRoot ? false : 'needs root' }, () => {
  const dir = tmpDir('cocos-check-iso-');
  const env = checkEnv(dir);
  fs.chmodSync(env.MANAGER_QEMU_DISK_IMG_ROOTFS_FILE, 0o600);
  const r = runCli(['check'], env);
  assert.match(line(r.stdout, 'readable by VM users: MANAGER_QEMU_DISK_IMG_ROOTFS_FILE'), /^FAIL .*not readable by others/);
  assert.match(line(r.stdout, 'readable by VM users: MANAGER_QEMU_DISK_IMG_KERNEL_FILE'), /^PASS/);
  assert.equal(r.status, 1);
});

test('check fails a uid range that collides with an account of /etc/passwd (the system accounts from uid 1 up are in it)', { skip: isRoot ? false : 'needs root' }, () => {
  const r = runCli(['check'], checkEnv(tmpDir('cocos-check-iso-'), { MANAGER_VM_UID_RANGE: '1-100000', MANAGER_MAX_VMS: '10' }));
  assert.match(line(r.stdout, 'VM uid range'), /^FAIL .*\/etc\/passwd has \w+ with id \d+/);
});

test('check warns when guest isolation is off', () => {
  const r = runCli(['check'], checkEnv(tmpDir('cocos-check-iso-'), { MANAGER_GUEST_ISOLATION: 'false' }));
  assert.match(line(r.stdout, 'guest isolation'), /^WARN .*MANAGER_GUEST_ISOLATION=false/);
});

test('uid range conflicts: systemd\'s ranges, accounts, groups and subordinate ids are named; a clear range has none', () => {
  const files = {
    passwd: 'root:x:0:0::/root:/bin/sh\nalice:x:1900000005:100::/home/alice:/bin/sh\n',
    group: 'vms:x:1900000007:\n',
    subuid: 'alice:1899999000:2000\n',
    subgid: 'bob:100000:65536\n',
  };
  assert.deepEqual(uidRangeConflicts({ first: 1_900_000_000, last: 1_900_000_099 }, files), [
    '/etc/passwd has alice with id 1900000005',
    '/etc/group has vms with id 1900000007',
    '/etc/subuid gives alice ids 1899999000-1900000999',
  ]);
  assert.deepEqual(uidRangeConflicts({ first: 61_000, last: 61_200 }, {}), ['overlaps systemd\'s DynamicUser= range (61184-65519)']);
  assert.deepEqual(uidRangeConflicts({ first: 1_900_000_000, last: 1_900_009_999 }, { ...files, passwd: 'root:x:0:0::/root:/bin/sh\n', group: '', subuid: '' }), []);
});
