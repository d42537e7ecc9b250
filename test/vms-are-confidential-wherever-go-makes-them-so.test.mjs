// SEV-SNP and TDX are decided from the host as the Go manager decides them, and no value of a Go
// manager's env file gives plain VMs where the Go manager gives confidential ones: unset is the
// host's answer, `false` on a capable host is ignored with a warning (the Go env file's own
// value), only the named opt-out gives plain VMs there (with its warning), `true` on a host
// without stays on (check fails, CreateVm FAILED_PRECONDITION, the daemon still starts), both
// on is exit 2. Real daemon, stand-in QEMU, hosts faked for real (fake-host.mjs): the daemon
// reads /proc/cpuinfo and /sys/module as it does on any host.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { PLAIN_HOST, SEV_SNP_HOST, TDX_HOST, cpuinfoWithFlags, fakeHostUnavailable } from './fake-host.mjs';
import { runCli } from './helpers.mjs';

const unavailable = fakeHostUnavailable();
const BOTH_HOST = {
  cpuinfo: cpuinfoWithFlags('sev_snp', 'tdx_host_platform'),
  modules: { kvm_amd: { sev_snp: 'Y\n' }, kvm_intel: { tdx: 'Y\n' } },
};

let files;
before(() => {
  const dir = tmpDir('cocos-cvm-files-');
  files = {
    MANAGER_QEMU_IGVM_FILE: path.join(dir, 'coconut-qemu.igvm'),
    MANAGER_QEMU_OVMF_FILE: path.join(dir, 'OVMF.fd'),
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: path.join(dir, 'bzImage'),
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: path.join(dir, 'rootfs.cpio.gz'),
  };
  for (const f of Object.values(files)) fs.writeFileSync(f, `bytes of ${path.basename(f)}`);
});

/**
 * The environment of a daemon with the stand-in QEMU as a Go manager's env file would leave SEV-SNP
 * and TDX (each `undefined` is unset): fakeQemuEnv's plain-VM choices taken out again.
 */
function goEnv(extra = {}) {
  return fakeQemuEnv(tmpDir(), {
    ...files,
    MANAGER_QEMU_ENABLE_SEV_SNP: undefined,
    MANAGER_QEMU_ENABLE_TDX: undefined,
    MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: undefined,
    ...extra,
  });
}

/** Starts a daemon on `host`, creates a VM, and returns what it launched and said; stops the daemon. */
async function launchOn(host, env) {
  const d = await Daemon.start(env, { host });
  const client = d.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    const command = d.logs.lines.find((l) => l.msg === 'starting QEMU' && l.cvm_id === vm.cvm_id).command;
    const admin = d.adminClient();
    const status = await call(admin, 'GetVm', { id: vm.cvm_id }).finally(() => admin.close());
    const info = runCli(['vm', 'info', vm.cvm_id, '--admin-socket', d.adminSocket]);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    return { d, command, status, info, warnings: d.logs.lines.filter((l) => l.level === 'warn').map((l) => l.msg), decided: d.logs.lines.find((l) => /^VMs are /.test(l.msg ?? '')) };
  } finally {
    client.close();
    await d.stop();
  }
}

const kindOf = (command) => (command.includes('sev-snp-guest') ? 'sev-snp' : command.includes('tdx-guest') ? 'tdx' : 'plain');

test('unset on a plain host: a plain VM (OVMF pflash, no sev-snp-guest), said at start and by vm info', { skip: unavailable }, async () => {
  const r = await launchOn(PLAIN_HOST, goEnv());
  assert.equal(kindOf(r.command), 'plain', r.command);
  assert.match(r.command, /if=pflash/);
  assert.equal(r.decided.msg, 'VMs are plain (not confidential)');
  assert.equal(r.decided.cvm, 'plain');
  assert.match(r.decided.sev_snp, /^SEV-SNP off: MANAGER_QEMU_ENABLE_SEV_SNP is unset \(auto\) and this host lacks it \(\/proc\/cpuinfo has no sev_snp flag; /);
  assert.equal(r.status.cvm_kind, 'plain');
  assert.match(r.status.cvm_decision, /SEV-SNP off: .*; TDX off: .*tdx_host_platform/);
  assert.equal(r.info.status, 0, r.info.stderr);
  assert.match(r.info.stdout, /^confidential computing\s+plain \(SEV-SNP off: MANAGER_QEMU_ENABLE_SEV_SNP is unset \(auto\) and this host lacks it/m);
  assert.deepEqual(r.warnings.filter((w) => /SEV-SNP|TDX|NON_CONFIDENTIAL/.test(w)), []);
});

test('unset on an SEV-SNP host: an SEV-SNP VM', { skip: unavailable }, async () => {
  const r = await launchOn(SEV_SNP_HOST, goEnv());
  assert.equal(kindOf(r.command), 'sev-snp', r.command);
  assert.match(r.command, /confidential-guest-support=sev0,memory-backend=ram1,igvm-cfg=igvm0/);
  assert.doesNotMatch(r.command, /if=pflash/);
  assert.equal(r.decided.msg, 'VMs are SEV-SNP');
  assert.equal(r.status.cvm_kind, 'sev-snp');
  assert.equal(r.status.cvm_decision, 'SEV-SNP on: MANAGER_QEMU_ENABLE_SEV_SNP is unset (auto) and this host supports it');
  assert.match(r.info.stdout, /^confidential computing\s+sev-snp \(SEV-SNP on: MANAGER_QEMU_ENABLE_SEV_SNP is unset \(auto\) and this host supports it\)$/m);
});

test('unset on a TDX host: a TDX VM', { skip: unavailable }, async () => {
  const r = await launchOn(TDX_HOST, goEnv());
  assert.equal(kindOf(r.command), 'tdx', r.command);
  assert.match(r.command, /-bios \S*OVMF\.fd/);
  assert.equal(r.decided.msg, 'VMs are TDX');
  assert.equal(r.status.cvm_kind, 'tdx');
});

test("the Go manager's env file (ENABLE_SEV_SNP=false, ENABLE_TDX=false) on an SEV-SNP host: an SEV-SNP VM, and a warning that false is ignored", { skip: unavailable }, async () => {
  const r = await launchOn(SEV_SNP_HOST, goEnv({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'false' }));
  assert.equal(kindOf(r.command), 'sev-snp', r.command);
  assert.ok(
    r.warnings.includes('MANAGER_QEMU_ENABLE_SEV_SNP="false" is ignored: this host supports SEV-SNP, and the Go manager launches SEV-SNP guests on such a host whatever the variable says; to launch plain (non-confidential) VMs here, also set MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true'),
    r.warnings.join('\n'),
  );
  assert.equal(r.status.cvm_decision, 'SEV-SNP on: this host supports it, so MANAGER_QEMU_ENABLE_SEV_SNP="false" is ignored, as the Go manager ignores it');
  // TDX's false is honoured: the host lacks TDX, so nothing is ignored there.
  assert.ok(!r.warnings.some((w) => /ENABLE_TDX/.test(w)), r.warnings.join('\n'));
});

test('the opt-out with false on an SEV-SNP host: a plain VM, and a warning at start that VMs here are not confidential', { skip: unavailable }, async () => {
  const r = await launchOn(SEV_SNP_HOST, goEnv({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: 'true' }));
  assert.equal(kindOf(r.command), 'plain', r.command);
  assert.ok(
    r.warnings.includes('SEV-SNP is off on a host that supports it (MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true): VMs launched here are not confidential, where the Go manager would launch SEV-SNP guests'),
    r.warnings.join('\n'),
  );
  assert.equal(r.status.cvm_kind, 'plain');
  assert.match(r.status.cvm_decision, /^SEV-SNP off: MANAGER_QEMU_ENABLE_SEV_SNP="false" and MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true, on a host that supports it; /);
});

test('the opt-out alone changes nothing on an SEV-SNP host (an SEV-SNP VM), and says so at every start', { skip: unavailable }, async () => {
  const r = await launchOn(SEV_SNP_HOST, goEnv({ MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: 'true' }));
  assert.equal(kindOf(r.command), 'sev-snp', r.command);
  assert.ok(r.warnings.some((w) => w.startsWith('MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true changes nothing now (VMs are sev-snp)')), r.warnings.join('\n'));
});

test('true on a plain host: the daemon starts, check names what is missing, CreateVm is FAILED_PRECONDITION naming it', { skip: unavailable }, async () => {
  const env = goEnv({ MANAGER_QEMU_ENABLE_SEV_SNP: 'true' });
  const check = runCli(['check'], env, { host: PLAIN_HOST });
  assert.equal(check.status, 1);
  assert.match(check.stdout, /^FAIL\s+SEV-SNP\s+SEV-SNP on: MANAGER_QEMU_ENABLE_SEV_SNP="true", but this host lacks it \(\/proc\/cpuinfo has no sev_snp flag; kvm_amd has no sev_snp parameter \(no \/sys\/module\/kvm_amd\/parameters\/sev_snp: kvm_amd is not loaded, or its kernel lacks the support\)\): CreateVm fails \(FAILED_PRECONDITION\)\s+an AMD EPYC/m);
  const d = await Daemon.start(env, { host: PLAIN_HOST });
  const client = d.client();
  try {
    assert.ok(d.logs.lines.some((l) => l.level === 'error' && /^every CreateVm will fail: MANAGER_QEMU_ENABLE_SEV_SNP="true" but this host lacks it/.test(l.msg)));
    await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 9 && /MANAGER_QEMU_ENABLE_SEV_SNP="true" but this host lacks it \(\/proc\/cpuinfo has no sev_snp flag; kvm_amd has no sev_snp parameter/.test(e.details));
    // Nothing was launched, nothing is left.
    assert.deepEqual(fs.readdirSync(path.join(env.MANAGER_STATE_DIR, 'vms')), []);
    assert.ok(!d.logs.lines.some((l) => l.msg === 'starting QEMU'));
  } finally {
    client.close();
    await d.stop();
  }
});

test('both on stops the start with exit 2 and one line, whether declared or decided from a host that has both', { skip: unavailable }, () => {
  // Waits for the exit; a daemon that did start would be killed by the timeout (and fail the test).
  const serve = (env, host) => runCli(['serve'], env, { host, timeout: 20_000 });
  for (const [env, host, named] of [
    [goEnv({ MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_ENABLE_TDX: 'true' }), PLAIN_HOST, /\(MANAGER_QEMU_ENABLE_SEV_SNP="true"; MANAGER_QEMU_ENABLE_TDX="true"\)/],
    [goEnv(), BOTH_HOST, /\(MANAGER_QEMU_ENABLE_SEV_SNP is unset \(auto\) and the host supports it; MANAGER_QEMU_ENABLE_TDX is unset \(auto\) and the host supports it\)/],
    [goEnv({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false' }), BOTH_HOST, /MANAGER_QEMU_ENABLE_SEV_SNP="false", ignored as the host supports it; .*with MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true where the host supports it/],
  ]) {
    const r = serve(env, host);
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^cocos-manager: SEV-SNP and TDX cannot both be on /);
    assert.match(lines[0], named);
  }
});

test('the C-bit position under the Go manager\'s name reaches an SEV-SNP VM', { skip: unavailable }, async () => {
  const r = await launchOn(SEV_SNP_HOST, goEnv({ MANAGER_QEMU_SEV_SNP_CBIT_POS: '47' }));
  assert.match(r.command, /sev-snp-guest,id=sev0,cbitpos=47,reduced-phys-bits=1/);
});

test('a VM launched as SEV-SNP stays SEV-SNP in the record a restarted daemon reads, whatever the new start decides', { skip: unavailable }, async () => {
  const env = goEnv();
  const d = await Daemon.start(env, { host: SEV_SNP_HOST });
  const client = d.client();
  let next;
  try {
    const vm = await call(client, 'CreateVm', {});
    client.close();
    // The next start is on a host that lost SEV-SNP: new VMs would be plain, this one is not.
    next = await d.restart({ signal: 'SIGTERM', host: PLAIN_HOST });
    assert.ok(next.logs.lines.some((l) => l.msg === 'VMs are plain (not confidential)'));
    const admin = next.adminClient();
    const status = await call(admin, 'GetVm', { id: vm.cvm_id }).finally(() => admin.close());
    assert.equal(status.cvm_kind, 'sev-snp');
    assert.match(status.cvm_decision, /^SEV-SNP on: /);
  } finally {
    client.close();
    await (next ?? d).stop();
  }
});
