// The operator CLI: `vm` against a running daemon (create, ls, info, policy, rm; --json and
// human output), and `check` telling what this host has and lacks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, baseEnv, runCli } from './helpers.mjs';
import { Daemon, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { makePki } from './pki.mjs';

let daemon;
let dir;
before(async () => {
  dir = tmpDir('cocos-cli-');
  daemon = await Daemon.start(fakeQemuEnv(tmpDir()));
});
after(async () => {
  await daemon?.stop();
});

/** The CLI runs asynchronously here: the daemon under test lives in this process's event loop. */
function cli(args, env = {}) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: baseEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (status) => { clearTimeout(t); resolve({ status, stdout, stderr }); });
  });
}

test('vm create / ls / info / policy / rm round-trip, human and --json', async () => {
  const addr = ['--addr', `127.0.0.1:${daemon.port}`];
  // ls and info go to the admin socket (ManagerAdmin is not on TCP by default).
  const admin = ['--admin-socket', daemon.adminSocket];
  const cert = path.join(dir, 'cert.pem');
  fs.writeFileSync(cert, 'CERT');
  const secret = path.join(dir, 'secret');
  fs.writeFileSync(secret, 'from-a-file\n');
  const created = await cli(['vm', 'create', ...addr, '--json', '--log-level', 'debug', '--ttl', '1h', '--client-cert', cert, '--aws-secret-access-key', `@${secret}`, '--kbs-params', 'kbs1']);
  assert.equal(created.status, 0, created.stderr);
  const { cvm_id: id, forwarded_port: port } = JSON.parse(created.stdout);
  const env = fs.readFileSync(path.join(daemon.logs.lines.find((l) => l.msg === 'starting QEMU' && l.cvm_id === id).command.match(/path=([^,]+\/env),/)[1], 'environment'), 'utf8');
  assert.ok(env.includes('AWS_SECRET_ACCESS_KEY=from-a-file\n'));
  assert.ok(env.includes('AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem\n'));

  const ls = await cli(['vm', 'ls', '--json'], { MANAGER_ADMIN_SOCKET: daemon.adminSocket });
  const vms = JSON.parse(ls.stdout);
  assert.equal(vms.length, 1);
  assert.equal(vms[0].id, id);
  assert.equal(vms[0].state, 'running');
  assert.equal(vms[0].forwarded_port, port);
  assert.ok(vms[0].pid > 0);
  assert.ok(Date.parse(vms[0].ttl_deadline) - Date.parse(vms[0].created_at) === 3_600_000);

  const human = await cli(['vm', 'ls', ...admin]);
  assert.match(human.stdout, /^ID\s+STATE\s+PID\s+PORT\s+CREATED\s+TTL DEADLINE\s+EXIT\n/);
  assert.ok(human.stdout.includes(id));

  const info = await cli(['vm', 'info', id, ...admin]);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /kernel command line\s+quiet console=null agent\.aa_kbc_params=kbs1/);
  assert.match(info.stdout, /state\s+running/);

  const policy = await cli(['vm', 'policy', id, ...addr]);
  assert.equal(policy.status, 1);
  assert.match(policy.stderr, /^cocos-manager: AttestationPolicy: FAILED_PRECONDITION: VM .* is neither SEV-SNP nor TDX/);

  const rm = await cli(['vm', 'rm', id, ...addr]);
  assert.equal(rm.status, 0);
  assert.equal(rm.stdout.trim(), `removed ${id}`);
  const gone = await cli(['vm', 'info', id, ...admin]);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /GetVm: NOT_FOUND/);
  assert.equal((await cli(['vm', 'ls', ...admin])).stdout.trim(), 'no VMs');
  // Over TCP, ManagerAdmin is not served unless asked for (and then only with mutual TLS).
  const tcp = await cli(['vm', 'ls', ...addr]);
  assert.equal(tcp.status, 1);
  assert.match(tcp.stderr, /ListVms: UNIMPLEMENTED/);
});

test('vm ls with no admin socket names the socket it tried, and what to do', async () => {
  const sock = path.join(dir, 'none.sock');
  const r = await cli(['vm', 'ls', '--timeout', '10s'], { MANAGER_ADMIN_SOCKET: sock });
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `cocos-manager: no daemon at ${sock}: is cocos-manager running? (make run, or systemctl start cocos-manager; --admin-socket sets where to look)\n`);
});

test('vm against no daemon fails with one line that says what to do', async () => {
  // Nothing listens on port 1 of loopback.
  const r = await cli(['vm', 'ls', '--addr', '127.0.0.1:1', '--timeout', '10s']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'cocos-manager: no daemon at 127.0.0.1:1: is cocos-manager running? (make run, or systemctl start cocos-manager; --addr sets where to look)\n');
  assert.doesNotMatch(r.stderr, /Resolution note|Last error/);
});

const tcgCheckEnv = () => {
  const kernel = path.join(dir, 'bzImage');
  fs.writeFileSync(kernel, 'k');
  return {
    MANAGER_QEMU_ENABLE_KVM: 'false', MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: kernel, MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: kernel,
    MANAGER_STATE_DIR: path.join(dir, 'state'), MANAGER_QEMU_HOST_FWD_RANGE: '47000-47009',
  };
};

test('check passes what this host has (plain OVMF under TCG, mutual TLS) and exits 0', () => {
  const pki = makePki(tmpDir('cocos-check-pki-'));
  const r = runCli(['check'], {
    ...tcgCheckEnv(),
    MANAGER_GRPC_SERVER_CERT: pki.file('server.pem'), MANAGER_GRPC_SERVER_KEY: pki.file('server.key'),
    MANAGER_GRPC_CLIENT_CA_CERTS: pki.file('ca.pem'),
  });
  assert.equal(r.status, 0, r.stdout);
  assert.match(r.stdout, /^PASS\s+client authentication\s+ManagerService requires a client certificate/m);
  assert.match(r.stdout, /^PASS\s+calls from guests\s+on: calls from supervised QEMUs are refused/m);
  assert.match(r.stdout, /^PASS\s+admin socket\s+ManagerAdmin on \/run\/cocos-manager\/admin.sock \(mode 0660\); not on TCP/m);
  assert.match(r.stdout, /^PASS\s+qemu binary\s+\/usr\/bin\/qemu-system-x86_64 \(QEMU emulator version/m);
  assert.match(r.stdout, /^PASS\s+qemu device virtio-9p-pci/m);
  assert.match(r.stdout, /^PASS\s+OVMF variables\s+\/usr\/share\/OVMF\/OVMF_VARS.fd/m);
  assert.match(r.stdout, /^PASS\s+host ports\s+10 of 10 free/m);
  assert.match(r.stdout, /all checks passed/);
  assert.equal(fs.existsSync(path.join(dir, 'state')), false, 'check creates nothing');
});

test('check fails when ManagerService accepts calls without client authentication, naming risk and remedy', () => {
  const r = runCli(['check'], tcgCheckEnv());
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stdout, /^FAIL\s+client authentication\s+ManagerService accepts calls without client authentication: anyone who can reach localhost:7001 can create and remove VMs/m);
  assert.match(r.stdout, /configure mutual TLS for the control plane: MANAGER_GRPC_SERVER_CERT, MANAGER_GRPC_SERVER_KEY and MANAGER_GRPC_CLIENT_CA_CERTS$/m);
  assert.match(r.stdout, /1 check\(s\) failed/);
  const off = runCli(['check'], { ...tcgCheckEnv(), MANAGER_REFUSE_GUEST_CALLS: 'false' });
  assert.match(off.stdout, /can reach localhost:7001, guests included through 10\.0\.2\.2, can create and remove VMs/);
  assert.match(off.stdout, /^WARN\s+calls from guests\s+off: calls from guests/m);
});

test('check fails what this host lacks for SEV-SNP declared true, each with a remedy, and exits 1', () => {
  const r = runCli(['check'], { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_DISK_IMG_KERNEL_FILE: '/nonexistent/bzImage', MANAGER_QEMU_BIN_PATH: 'qemu-system-x86_64' });
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^FAIL\s+qemu object sev-snp-guest\s+not supported by this QEMU\s+SEV-SNP guests need QEMU 9\.1 or later$/m);
  assert.match(r.stdout, /^FAIL\s+SEV-SNP\s+SEV-SNP on: MANAGER_QEMU_ENABLE_SEV_SNP="true", but this host lacks it \(\/proc\/cpuinfo has no sev_snp flag; .*\): CreateVm fails \(FAILED_PRECONDITION\)\s+an AMD EPYC/m);
  assert.match(r.stdout, /^FAIL\s+guest kernel\s+\/nonexistent\/bzImage: ENOENT\s+install it or point MANAGER_QEMU_DISK_IMG_KERNEL_FILE at it$/m);
  assert.match(r.stdout, /^FAIL\s+igvmmeasure\s+/m);
  assert.match(r.stdout, /check\(s\) failed/);
});

test('check reports a missing QEMU binary with its remedy', () => {
  const r = runCli(['check'], { MANAGER_QEMU_BIN_PATH: '/nonexistent/qemu', MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_KVM: 'false' });
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^FAIL\s+qemu binary\s+\/nonexistent\/qemu not found\s+apt-get install qemu-system-x86, or set MANAGER_QEMU_BIN_PATH$/m);
});
