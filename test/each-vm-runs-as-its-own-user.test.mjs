// Guest isolation with a root daemon (CI runs as root; skipped otherwise): each VM's QEMU runs
// as a uid and gid of its own from MANAGER_VM_UID_RANGE, exec'd in place (the PID the daemon
// records is QEMU's), with only what it must open made its own; the uid is free again once the
// VM is gone; the guest firewall is in place while VMs run, put back when removed behind the
// daemon's back, and gone with the last VM; a daemon that cannot install it does not start.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, baseEnv } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, firewallTable, firewallTablePresent, isAlive, nextUidRange, tmpDir, waitFor } from './daemon.mjs';

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root (a uid per VM, nftables)';
const daemons = [];
after(async () => {
  for (const d of daemons) await d.stop();
});

function ids(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status)[1].trim().split(/\s+/).map(Number);
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups') };
}

function getVm(d, id) {
  const admin = d.adminClient();
  return call(admin, 'GetVm', { id }).finally(() => admin.close());
}

const mode = (p) => (fs.statSync(p).mode & 0o7777).toString(8);
const owner = (p) => `${fs.statSync(p).uid}:${fs.statSync(p).gid}`;

test('each VM\'s QEMU runs as a uid of its own, owns only what it must open, and its uid is handed out again once the VM is gone', { skip }, async () => {
  const range = nextUidRange(3);
  const first = Number(range.split('-')[0]);
  const d = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-uid-'), 'state'), { MANAGER_VM_UID_RANGE: range, MANAGER_MAX_VMS: '0' }));
  daemons.push(d);
  const [a, b] = await d.createVms({}, {});
  const va = await getVm(d, a.cvm_id);
  const vb = await getVm(d, b.cvm_id);
  const ia = ids(va.pid);
  const ib = ids(vb.pid);
  assert.deepEqual(ia.uid, [first, first, first, first], 'real, effective, saved and file-system uid');
  assert.deepEqual(ia.gid, [first, first, first, first]);
  assert.ok(ia.groups.includes(first) && !ia.groups.includes(0), `groups ${ia.groups}`);
  assert.deepEqual(ib.uid, [first + 1, first + 1, first + 1, first + 1], 'the second VM has another uid');
  // setpriv exec'd QEMU in place: the recorded PID runs the stand-in itself, not a wrapper.
  assert.match(fs.readFileSync(`/proc/${va.pid}/cmdline`, 'utf8'), /fake-qemu\.mjs/);
  assert.match(fs.readFileSync(`/proc/${va.pid}/status`, 'utf8'), /^NoNewPrivs:\s+1$/m);

  const vms = path.join(d.stateDir, 'vms');
  const dir = path.join(vms, a.cvm_id);
  assert.equal(mode(d.stateDir), '711', 'the state directory: passed through, not listed');
  assert.equal(mode(vms), '711');
  assert.equal(`${mode(dir)} ${owner(dir)}`, `710 0:${first}`, 'the VM\'s directory: entered by its QEMU, listed by nobody else');
  assert.equal(`${mode(path.join(dir, 'env'))} ${owner(path.join(dir, 'env'))}`, `750 0:${first}`);
  assert.equal(`${mode(path.join(dir, 'env', 'environment'))} ${owner(path.join(dir, 'env', 'environment'))}`, `640 0:${first}`, 'the share is read-only to QEMU');
  assert.equal(`${mode(path.join(dir, 'OVMF_VARS.fd'))} ${owner(path.join(dir, 'OVMF_VARS.fd'))}`, `600 ${first}:${first}`, 'the firmware writes its variables');
  assert.equal(owner(path.join(dir, 'qmp.sock')), `${first}:${first}`);
  assert.equal(`${mode(path.join(dir, 'record.json'))} ${owner(path.join(dir, 'record.json'))}`, '600 0:0', 'the record is the daemon\'s alone');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'record.json'), 'utf8')).runAs.uid, first);

  // The other VM's user can reach nothing of this one (as the kernel says, not as modes suggest).
  const asB = (args) => spawnSync('setpriv', [`--reuid=${first + 1}`, `--regid=${first + 1}`, '--clear-groups', ...args], { encoding: 'utf8' });
  assert.notEqual(asB(['cat', path.join(dir, 'env', 'environment')]).status, 0, 'VM b cannot read VM a\'s environment');
  assert.notEqual(asB(['ls', vms]).status, 0, 'VM b cannot list the VMs');
  const asA = (args) => spawnSync('setpriv', [`--reuid=${first}`, `--regid=${first}`, `--groups=${first}`, ...args], { encoding: 'utf8' });
  assert.equal(asA(['cat', path.join(dir, 'env', 'environment')]).status, 0, 'VM a reads its own environment');
  assert.notEqual(asA(['sh', '-c', `echo x > ${path.join(dir, 'env', 'extra')}`]).status, 0, 'VM a cannot write into its share');

  const client = d.client();
  try {
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    // Round the range: the last uid first, then the one freed (the range is 3 uids).
    const c = await call(client, 'CreateVm', {});
    assert.equal(ids((await getVm(d, c.cvm_id)).pid).uid[0], first + 2, 'a uid just freed is the last to be reused');
    const e = await call(client, 'CreateVm', {});
    assert.equal(ids((await getVm(d, e.cvm_id)).pid).uid[0], first, 'a removed VM\'s uid is handed out again');
    await assert.rejects(call(client, 'CreateVm', {}), (err) => err.code === 8 && /no free uid left in MANAGER_VM_UID_RANGE/.test(err.details));
  } finally {
    client.close();
  }
});

test('two daemons sharing a uid range never give two VMs one uid; a removed VM\'s uid is retired: what still runs as it is killed', { skip }, async () => {
  const range = nextUidRange(4);
  const first = Number(range.split('-')[0]);
  const one = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-uid-a-'), 'state'), { MANAGER_VM_UID_RANGE: range, MANAGER_MAX_VMS: '0' }));
  daemons.push(one);
  const two = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-uid-b-'), 'state'), { MANAGER_VM_UID_RANGE: range, MANAGER_MAX_VMS: '0' }));
  daemons.push(two);
  const [a] = await one.createVms({});
  const [b] = await two.createVms({});
  const ua = ids((await getVm(one, a.cvm_id)).pid).uid[0];
  const ub = ids((await getVm(two, b.cvm_id)).pid).uid[0];
  assert.equal(ua, first);
  assert.notEqual(ub, ua, 'the second daemon skips the uid a process runs as');

  // Something a QEMU left behind (an escape's detached child) runs on as the VM's uid.
  const stray = spawn('setpriv', [`--reuid=${ua}`, `--regid=${ua}`, '--clear-groups', 'sleep', '600'], { stdio: 'ignore', detached: true });
  stray.unref();
  assert.ok(await waitFor(() => { try { return ids(stray.pid).uid[0] === ua; } catch { return false; } }, 5_000));
  const client = one.client();
  try {
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    assert.ok(await waitFor(() => !isAlive(stray.pid), 5_000), 'the stray process of the removed VM\'s uid was killed');
  } finally {
    client.close();
  }
});

test('a root daemon does not run QEMU through sudo: it gives each VM a user of its own (exit 2 naming MANAGER_QEMU_USE_SUDO)', { skip }, async () => {
  const r = await serveExit(fakeQemuEnv(path.join(tmpDir('cocos-rootsudo-'), 'state'), { MANAGER_QEMU_USE_SUDO: 'true', MANAGER_VM_UID_RANGE: nextUidRange() }));
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /MANAGER_QEMU_USE_SUDO=true is for a daemon that is not root/);
});

test('the guest firewall is in place while VMs run, put back when removed behind the daemon\'s back, and gone with the last VM', { skip }, async () => {
  const d = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-fw-'), 'state')));
  daemons.push(d);
  const table = firewallTable(d.stateDir);
  assert.ok(d.logs.lines.some((l) => l.msg === 'guest firewall installed' && l.table === table), 'installed at start');
  assert.ok(await waitFor(() => !firewallTablePresent(d.stateDir), 10_000), 'no VM: the table goes once recovery found none');
  const [vm] = await d.createVms({});
  assert.ok(firewallTablePresent(d.stateDir), 'in place before the first QEMU runs');
  const rules = spawnSync('nft', ['list', 'table', 'inet', table], { encoding: 'utf8' }).stdout;
  const [first, last] = d.env.MANAGER_VM_UID_RANGE.split('-');
  assert.match(rules, new RegExp(`meta skuid != ${first}-${last} accept`));
  assert.match(rules, /fib daddr type != local accept/);
  assert.match(rules, /tcp flags syn \/ fin,syn,rst,ack reject with tcp reset/);
  assert.match(rules, /meta l4proto \{ udp, dccp, sctp, udplite \} reject/);

  spawnSync('nft', ['delete', 'table', 'inet', table]);
  assert.ok(!firewallTablePresent(d.stateDir));
  assert.ok(await waitFor(() => firewallTablePresent(d.stateDir), 15_000, 100), 'put back');
  await d.waitForLog((l) => l.level === 'warn' && /the table was removed behind the manager's back/.test(l.msg), 5_000);

  const client = d.client();
  try {
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
  }
  assert.ok(await waitFor(() => !firewallTablePresent(d.stateDir), 10_000), 'gone with the last VM');
});

/** Starts `serve` with `wrap` in front of node; resolves { code, stderr } once it exits (bounded). */
function serveExit(env, wrap = [], opts = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(wrap[0] ?? process.execPath, [...wrap.slice(1), ...(wrap.length ? [process.execPath] : []), CLI, 'serve'], {
      env: baseEnv({ MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: '0', MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: '0', MANAGER_ADMIN_SOCKET: '', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...opts,
    });
    let stderr = '';
    p.stderr.on('data', (x) => (stderr += x));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`still running after 20 s; stderr: ${stderr}`)); }, 20_000);
    p.once('exit', (code) => { clearTimeout(t); resolve({ code, stderr }); });
  });
}

test('a daemon that cannot install the guest firewall does not start: exit 2, one line naming MANAGER_GUEST_ISOLATION', { skip }, async () => {
  // As the unit would be without CAP_NET_ADMIN: root, but nft is refused by the kernel.
  const r = await serveExit(fakeQemuEnv(path.join(tmpDir('cocos-nofw-'), 'state'), { MANAGER_VM_UID_RANGE: nextUidRange() }), ['setpriv', '--bounding-set=-net_admin']);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /guest firewall \(nftables table cocos_manager_[0-9a-f]{12}\) could not be installed: .*MANAGER_GUEST_ISOLATION=false/);
});

test('guest isolation needs a root daemon: a non-root one exits 2 naming the setting', { skip }, async () => {
  const dir = tmpDir('cocos-nonroot-');
  fs.chownSync(dir, 65534, 65534);
  const r = await serveExit(fakeQemuEnv(path.join(dir, 'state')), [], { uid: 65534, gid: 65534 });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /MANAGER_GUEST_ISOLATION=true needs a root daemon/);
});
