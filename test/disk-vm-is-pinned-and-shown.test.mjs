// What an operator and a verifier see of a VM that boots from its disk, through the daemon (the
// stand-in QEMU, the real qemu-img): its attestation policy and launch pin cover what it really
// boots, the IGVM file and the disk's source by its SHA-384, not the kernel and initramfs it no
// longer boots (`policy inspect` shows it); `vm info` and GetVm show the disk and its source; a
// source replaced while QEMU starts fails the CreateVm; a pause on the disk names it; the
// settings Go accepts but this daemon does not use (DST_DISK_FILE) and the request fields that
// cannot reach the guest (aa_kbs_params) are warned about; `check` warns about a source others
// may write.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';
import { runCli } from './helpers.mjs';
import { makeIgvmmeasureStandIns } from './fixtures-igvmmeasure.mjs';
import { SEV_SNP_HOST, fakeHostUnavailable } from './fake-host.mjs';
import { makeDiskSource } from './manager-harness.mjs';

const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');
const readRecord = (state, id) => JSON.parse(fs.readFileSync(path.join(state, 'vms', id, 'record.json'), 'utf8'));

let root;
let source;
let igvm;
let dirOf;

before(() => {
  root = tmpDir('cocos-diskvm-');
  source = makeDiskSource(root);
  igvm = path.join(root, 'snp.igvm');
  fs.writeFileSync(igvm, 'IGVM of a disk-booted guest');
  dirOf = makeIgvmmeasureStandIns(path.join(root, 'bin'));
});

function diskEnv(state, extra = {}) {
  return fakeQemuEnv(state, {
    MANAGER_QEMU_ENABLE_DISK: 'true',
    MANAGER_QEMU_SRC_DISK_FILE: source,
    // The kernel and initramfs are not booted, so not looked at: these do not exist.
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: '/nonexistent/bzImage',
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: '/nonexistent/rootfs.cpio.gz',
    FAKE_QEMU_CHECK_KERNEL: '1',
    ...extra,
  });
}

/** The CLI, asynchronously (the daemon's clients live in this process's event loop). */
async function cli(args) {
  const { spawn } = await import('node:child_process');
  const { CLI, baseEnv } = await import('./helpers.mjs');
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    p.stdout.on('data', (d) => { stdout += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (status) => { clearTimeout(t); resolve({ status, stdout }); });
  });
}

test('SEV-SNP from a disk: the pin and the policy cover the IGVM file and the disk\'s source, not a kernel; vm info shows the disk', { skip: fakeHostUnavailable() }, async () => {
  const state = tmpDir();
  const d = await Daemon.start(diskEnv(state, {
    MANAGER_QEMU_ENABLE_SEV_SNP: 'true',
    MANAGER_QEMU_IGVM_FILE: igvm,
    MANAGER_ATTESTATION_POLICY_BINARY_PATH: dirOf('content'),
    MANAGER_QEMU_DST_DISK_FILE: '/tmp/cvmDisk.qcow2',
  }), { host: SEV_SNP_HOST });
  const client = d.client();
  const admin = d.adminClient();
  try {
    const unused = await d.waitForLog((l) => l.setting === 'MANAGER_QEMU_DST_DISK_FILE');
    assert.equal(unused.level, 'warn');
    assert.match(unused.msg, /MANAGER_QEMU_DST_DISK_FILE is set but not used/);
    await d.waitForLog((l) => l.msg === 'disk source pinned');

    const vm = await call(client, 'CreateVm', { aa_kbs_params: 'cc_kbc::http://10.0.2.2:8080' });
    await d.waitForLog((l) => l.cvm_id === vm.cvm_id && l.field === 'aa_kbs_params' && l.level === 'warn');
    const record = readRecord(state, vm.cvm_id);
    const digest = sha384(source);
    assert.deepEqual(record.pinned.files.map((f) => [f.role, f.path, f.sha384]), [
      ['igvm', igvm, sha384(igvm)],
      ['disk', source, digest],
    ]);
    assert.equal(record.disk.source.sha384, digest);

    const policy = (await call(client, 'AttestationPolicy', { id: vm.cvm_id })).info;
    const file = path.join(root, `policy-${vm.cvm_id}.cbor`);
    fs.writeFileSync(file, policy);
    const r = runCli(['policy', 'inspect', file]);
    assert.equal(r.status, 0, r.stderr);
    const shown = JSON.parse(r.stdout);
    assert.deepEqual(shown.pins.fromFiles, [
      { role: 'igvm', path: igvm, sha384: sha384(igvm) },
      { role: 'disk', path: source, sha384: digest },
    ]);
    assert.ok(shown.pins.asserts.includes('launch-measurement'));

    const status = await call(admin, 'GetVm', { id: vm.cvm_id });
    assert.deepEqual(status.disk, {
      file: path.join(d.stateDir, 'vms', vm.cvm_id, 'disk.qcow2'),
      kind: 'overlay',
      format: 'qcow2',
      virtual_size: String(2 * 1024 ** 3),
      source,
      source_sha384: digest,
    });
    assert.equal(status.kernel_cmd, '');
    const info = await cli(['vm', 'info', vm.cvm_id, '--admin-socket', d.adminSocket, '--addr', `127.0.0.1:${d.port}`]);
    assert.equal(info.status, 0, info.stdout);
    assert.match(info.stdout, new RegExp(`^disk +${status.disk.file.replace(/[.]/g, '\\.')} \\(qcow2 overlay on the source, 2 GiB virtual\\)$`, 'm'));
    assert.match(info.stdout, new RegExp(`^disk source +${source.replace(/[.]/g, '\\.')}$`, 'm'));
    assert.match(info.stdout, new RegExp(`^disk source sha384 +${digest}$`, 'm'));
    assert.match(info.stdout, /^kernel command line +\(the disk's own boot loader's\)$/m);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
  } finally {
    client.close();
    admin.close();
    await d.stop();
  }
});

test('a source replaced while QEMU starts fails the CreateVm (what the disk holds is not known) and leaves nothing', async () => {
  const state = tmpDir();
  const gate = path.join(root, 'qemu-may-listen');
  const mine = makeDiskSource(tmpDir('cocos-racy-src-'));
  const d = await Daemon.start(diskEnv(state, { MANAGER_QEMU_SRC_DISK_FILE: mine, FAKE_QEMU_MODE: `listen-when:${gate}` }));
  const client = d.client();
  try {
    await d.waitForLog((l) => l.msg === 'disk source pinned');
    const creating = call(client, 'CreateVm', {});
    await d.waitForLog((l) => l.msg === 'starting QEMU');
    const next = makeDiskSource(path.dirname(mine), { name: 'next.qcow2', pattern: 0x33 });
    fs.renameSync(next, mine);
    fs.writeFileSync(gate, '');
    await assert.rejects(creating, (e) => e.code === 9 && /disk source .* \(MANAGER_QEMU_SRC_DISK_FILE\) changed while the VM was starting/.test(e.details));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), [], 'rolled back, disk and all');
    // The replacement is pinned, and the next VM is made on it.
    const vm = await call(client, 'CreateVm', {});
    assert.equal(readRecord(state, vm.cvm_id).disk.source.sha384, sha384(mine));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('a VM that QEMU pauses on a full disk shows it, naming the VM\'s disk', async () => {
  const dir = tmpDir('cocos-diskfull-');
  const trigger = path.join(dir, 'full');
  const d = await Daemon.start(diskEnv(path.join(dir, 'state'), { FAKE_QEMU_MODE: `io-error-when:${trigger}` }));
  const client = d.client();
  const admin = d.adminClient();
  try {
    const vm = await call(client, 'CreateVm', {});
    fs.writeFileSync(trigger, '');
    let status;
    assert.ok(await waitFor(async () => (status = await call(admin, 'GetVm', { id: vm.cvm_id })).state === 'paused', 10_000));
    assert.equal(status.pause_reason, "I/O error on the VM's disk disk0 (write, no space left)");
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    admin.close();
    await d.stop();
  }
});

test('check: the disk source must be a qcow2 image only root can write, and qemu-img must be there', { skip: process.getuid?.() !== 0 && 'the source is root\'s' }, () => {
  const env = { ...diskEnv(tmpDir()), MANAGER_QEMU_BIN_PATH: 'qemu-system-x86_64' };
  const row = (out, name) => out.split('\n').find((l) => new RegExp(`^\\S+\\s+${name}\\s`).test(l)) ?? '';
  const ok = runCli(['check'], env);
  assert.match(row(ok.stdout, 'disk source owner'), /^PASS .*only root can write/);
  assert.match(row(ok.stdout, 'disk source'), /^PASS .*\(qcow2, 67108864 bytes virtual\)/);
  assert.match(row(ok.stdout, 'qemu-img'), /^PASS /);
  assert.equal(row(ok.stdout, 'guest kernel'), '', 'the kernel is not booted, so not checked');

  const loose = path.join(tmpDir('cocos-loose-'), 'loose.qcow2');
  fs.copyFileSync(source, loose);
  fs.chmodSync(loose, 0o666);
  const bad = runCli(['check'], { ...env, MANAGER_QEMU_SRC_DISK_FILE: loose });
  assert.match(row(bad.stdout, 'disk source owner'), /^WARN .*writable by its group or others \(mode 0666, uid 0\): written in place, every VM disk made on it is corrupt/);
  fs.chownSync(loose, 1234, 1234);
  fs.chmodSync(loose, 0o644);
  const other = runCli(['check'], { ...env, MANAGER_QEMU_SRC_DISK_FILE: loose });
  assert.match(row(other.stdout, 'disk source owner'), /^WARN .*writable by uid 1234/);
});
