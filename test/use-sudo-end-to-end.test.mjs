// MANAGER_QEMU_USE_SUDO=true as it is meant to be used: the daemon runs as an unprivileged system
// user whose sudoers rule allows only the QEMU binary, and QEMU runs as root. The daemon can
// neither signal that QEMU nor read its /proc fds: QMP (QEMU connects to the daemon's socket)
// carries readiness, state and the stop. create → info → remove → create → daemon killed and
// restarted (re-adoption through QMP reconnect) → remove, with real QEMU, and nothing left.
// Needs root to set up the user and the rule (CI runs as root); skipped otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon, call, isAlive, portIsFree, tcgEnv, waitFor } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL } from './guest.mjs';

const USER = 'cocos-sudo-test';
const QEMU = '/usr/bin/qemu-system-x86_64';
const SUDOERS = `/etc/sudoers.d/${USER}`;
const isRoot = process.getuid?.() === 0;
const haveSudo = fs.existsSync('/usr/bin/sudo');

function ensureUserAndRule() {
  try {
    execFileSync('id', ['-u', USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', USER]);
  }
  const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim());
  // Only the QEMU binary, as root, without a password; checked by visudo before it is put in place.
  const rule = `${USER} ALL=(root) NOPASSWD: ${QEMU}\n`;
  const tmp = `${SUDOERS}.tmp`;
  fs.writeFileSync(tmp, rule, { mode: 0o440 });
  execFileSync('visudo', ['-cf', tmp], { stdio: 'ignore' });
  fs.renameSync(tmp, SUDOERS);
  return { uid, gid };
}

/** Processes (any user) whose command line names the state directory. */
function processesNaming(dir) {
  return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && isAlive(Number(e))).filter((e) => {
    try {
      return fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(dir);
    } catch {
      return false;
    }
  });
}

test('USE_SUDO: a non-root daemon drives a root QEMU through QMP: create, info, remove, restart with re-adoption, remove; nothing left', {
  skip: !isRoot ? 'needs root to create the system user and sudoers rule' : !haveSudo ? 'sudo is not installed (make system-deps)' : false,
  timeout: 300_000,
}, async () => {
  const { uid, gid } = ensureUserAndRule();
  // The daemon's user must refuse anything but QEMU through sudo.
  assert.throws(() => execFileSync('sudo', ['-n', '-u', 'root', '/bin/true'], { uid, gid, stdio: 'ignore' }));
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-sudo-'));
  fs.chownSync(state, uid, gid);
  const env = tcgEnv(state, {
    MANAGER_QEMU_BIN_PATH: QEMU,
    MANAGER_QEMU_USE_SUDO: 'true',
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    MANAGER_QEMU_MEMORY_SIZE: '256M',
    MANAGER_LOG_LEVEL: 'info',
  });
  let daemon = await Daemon.start(env, { uid, gid });
  let client = daemon.client();
  let admin = daemon.adminClient();
  const ports = [];
  try {
    // create → info → remove
    const a = await call(client, 'CreateVm', {}, 60_000);
    ports.push(Number(a.forwarded_port));
    const info = await call(admin, 'GetVm', { id: a.cvm_id });
    assert.equal(info.state, 'running');
    const sudoPid = info.pid;
    assert.match(fs.readFileSync(`/proc/${sudoPid}/cmdline`, 'utf8'), /^sudo\0/);
    const qemuPid = Number(fs.readFileSync(`/proc/${sudoPid}/task/${sudoPid}/children`, 'utf8').trim().split(/\s+/)[0]);
    assert.equal(fs.statSync(`/proc/${qemuPid}`).uid, 0, 'QEMU runs as root');
    const cvm = await call(client, 'CVMInfo', { id: a.cvm_id });
    assert.equal(cvm.id, a.cvm_id);
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id }, 60_000);
    assert.equal(isAlive(qemuPid), false);
    assert.equal(isAlive(sudoPid), false);
    assert.ok(daemon.logs.lines.some((l) => l.cvm_id === a.cvm_id && l.msg === 'QEMU stopped' && l.via === 'qmp'), 'stopped through QMP quit');

    // create → daemon killed → restarted: re-adopted through QMP reconnect → remove
    const b = await call(client, 'CreateVm', {}, 60_000);
    ports.push(Number(b.forwarded_port));
    const bPid = (await call(admin, 'GetVm', { id: b.cvm_id })).pid;
    client.close();
    admin.close();
    daemon = await daemon.restart({ whileDown: () => assert.ok(isAlive(bPid), 'QEMU outlives the daemon') });
    client = daemon.client();
    admin = daemon.adminClient();
    assert.ok(daemon.logs.lines.some((l) => l.cvm_id === b.cvm_id && l.msg === 're-adopted a running VM'));
    // QEMU reconnects to the new daemon's socket (chardev reconnect) and is asked its status.
    await daemon.waitForLog((l) => l.cvm_id === b.cvm_id && l.msg === 'QMP reattached', 15_000);
    assert.equal((await call(admin, 'GetVm', { id: b.cvm_id })).state, 'running');
    await call(client, 'RemoveVm', { cvm_id: b.cvm_id }, 60_000);
    assert.ok(await waitFor(() => !isAlive(bPid), 5_000));
    assert.ok(daemon.logs.lines.some((l) => l.cvm_id === b.cvm_id && l.msg === 'QEMU stopped' && l.via === 'qmp'), 'stopped through QMP quit');

    // Nothing left: no process, no port, no directory.
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
    assert.deepEqual(processesNaming(path.join(state, 'vms')), []); // the daemon's lock holder names the state dir itself
    for (const p of ports) assert.ok(await portIsFree(p), `port ${p} free`);
  } finally {
    client.close();
    admin.close();
    await daemon.stop();
    fs.rmSync(state, { recursive: true, force: true });
  }
});
