// MANAGER_QEMU_USE_SUDO=true as it is meant to be used: the daemon runs as an unprivileged system
// user whose sudoers rule allows only the QEMU binary, and only as a dedicated unprivileged QEMU
// user (never root). The daemon can neither signal that QEMU nor read its /proc fds: QMP (QEMU
// connects to the daemon's socket, shared through the QEMU user's group) carries readiness, state
// and the stop. create → info → remove → create → daemon killed and restarted (re-adoption
// through QMP reconnect) → remove, with real QEMU, and nothing left. A local caller running as
// the QEMU user is refused as a guest. Needs root to set up the users and the rule (CI runs as
// root); skipped otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon, call, isAlive, portIsFree, tcgEnv, waitFor } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL } from './guest.mjs';
import { QEMU, cleanUpSudo, setUpSudo, skipReason } from './sudo-users.mjs';

const TAG = 'e2e';

/** The HTTP status of GET /health made by a process of `uid` (bounded). */
function healthStatusAs(uid, gid, port) {
  // A bare socket: what the daemon answered ("200"), or "closed" when it closed the connection
  // without a byte of answer (a guest's), or the error. Bounded by a timer that keeps node alive.
  const script = `const s = require('net').connect(${port}, '127.0.0.1'); let got = '';
    const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 5000);
    s.on('connect', () => s.write('GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'));
    s.on('data', (d) => { got += d; });
    s.on('error', (e) => { if (!got) { console.log('error ' + e.code); process.exit(0); } });
    s.on('close', () => { clearTimeout(t); console.log(got ? got.split(' ')[1] : 'closed'); });`;
  const r = spawnSync(process.execPath, ['-e', script], { uid, gid, encoding: 'utf8', timeout: 15_000 });
  return r.stdout.trim() || `(nothing printed: status ${r.status}, signal ${r.signal}, stderr ${r.stderr.trim()})`;
}

/** mode & 0o7777 and gid of a path. */
function modeOf(p) {
  const st = fs.statSync(p);
  return { mode: (st.mode & 0o7777).toString(8), gid: st.gid };
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

test('USE_SUDO: a non-root daemon drives QEMU run as an unprivileged user through QMP: create, info, remove, restart with re-adoption, remove; that user is refused as a guest; nothing left', {
  skip: skipReason,
  timeout: 300_000,
}, async (t) => {
  const { daemon: { uid, gid }, qemu, qemuUser } = setUpSudo(TAG);
  t.after(() => cleanUpSudo(TAG));
  // The daemon's user may run QEMU as the QEMU user only: not as root, and nothing else.
  assert.throws(() => execFileSync('sudo', ['-n', '-u', 'root', '/bin/true'], { uid, gid, stdio: 'ignore' }));
  assert.throws(() => execFileSync('sudo', ['-n', '-u', 'root', QEMU, '--version'], { uid, gid, stdio: 'ignore' }));
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-sudo-'));
  fs.chownSync(state, uid, gid);
  const env = tcgEnv(state, {
    MANAGER_QEMU_BIN_PATH: QEMU,
    MANAGER_QEMU_USE_SUDO: 'true',
    MANAGER_QEMU_SUDO_USER: qemuUser,
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    MANAGER_QEMU_MEMORY_SIZE: '256M',
    MANAGER_LOG_LEVEL: 'info',
  });
  // As systemd's User= would start it: with the QEMU user's group among its groups.
  let daemon = await Daemon.start(env, { uid, gid, groups: [gid, qemu.gid] });
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
    assert.match(fs.readFileSync(`/proc/${sudoPid}/cmdline`, 'utf8'), new RegExp(`^sudo\0-n\0-u\0${qemuUser}\0--\0${QEMU}\0`));
    const qemuPid = Number(fs.readFileSync(`/proc/${sudoPid}/task/${sudoPid}/children`, 'utf8').trim().split(/\s+/)[0]);
    assert.equal(fs.statSync(`/proc/${qemuPid}`).uid, qemu.uid, 'QEMU runs as the QEMU user');
    assert.match(fs.readFileSync(`/proc/${qemuPid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${qemu.uid}\\s+${qemu.uid}\\s+${qemu.uid}\\s+${qemu.uid}$`, 'm'), 'real, effective, saved and fs uid');
    // What QEMU opens is its group's, and no one else's; the rest stays the daemon's alone.
    const dir = path.join(state, 'vms', a.cvm_id);
    assert.deepEqual(modeOf(state), { mode: '710', gid: qemu.gid });
    assert.deepEqual(modeOf(path.join(state, 'vms')), { mode: '710', gid: qemu.gid });
    assert.deepEqual(modeOf(dir), { mode: '710', gid: qemu.gid });
    for (const d of ['env', 'certs']) assert.deepEqual(modeOf(path.join(dir, d)), { mode: '750', gid: qemu.gid }, d);
    assert.deepEqual(modeOf(path.join(dir, 'env', 'environment')), { mode: '640', gid: qemu.gid });
    assert.deepEqual(modeOf(path.join(dir, 'OVMF_VARS.fd')), { mode: '660', gid: qemu.gid });
    assert.deepEqual(modeOf(path.join(dir, 'qmp.sock')), { mode: '660', gid: qemu.gid });
    for (const f of ['record.json', 'console.log', 'qemu.log']) assert.equal(modeOf(path.join(dir, f)).mode, '600', f);
    // A local caller of the QEMU user is a guest's (its VM cannot be named): its connection is
    // closed unanswered. The daemon's own user, another local user, is served.
    assert.match(healthStatusAs(qemu.uid, qemu.gid, daemon.httpPort), /^(closed|error ECONNRESET)$/);
    assert.equal(healthStatusAs(uid, gid, daemon.httpPort), '200');
    await daemon.waitForLog((l) => l.msg === 'call from a guest refused' && /MANAGER_QEMU_SUDO_USER/.test(l.reason), 5_000);
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
    assert.deepEqual(modeOf(path.join(state, 'vms', b.cvm_id, 'qmp.sock')), { mode: '660', gid: qemu.gid }, 'the new socket is the QEMU group\'s too');
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
