// `qemu-args --shell` pasted into sh gives the binary exactly the vector `qemu-args` prints.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers.mjs';

let dir;
const PRINT_ARGV = `#!/usr/bin/env node
process.stdout.write(JSON.stringify({ argv0: require('path').basename(process.argv[1]), args: process.argv.slice(2) }));
`;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-shell-'));
  // CommonJS on purpose: the stand-ins are tiny scripts with no package.json around them.
  for (const name of ['print-argv', 'sudo']) {
    fs.writeFileSync(path.join(dir, name), PRINT_ARGV.replace("require('path')", "require('node:path')"), { mode: 0o755 });
  }
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const envs = {
  'TDX JSON object': { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true' },
  'kernel command line with spaces and quotes': {
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_KERNEL_CMDLINE: `console=ttyS0 quiet msg="it's $HOME" x='y' \\back \`tick\``,
  },
  'SEV-SNP with host data': {
    MANAGER_QEMU_ENABLE_HOST_DATA: 'true',
    MANAGER_QEMU_HOST_DATA: Buffer.alloc(32, 0xfe).toString('base64'),
  },
  'paths with spaces and commas': {
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_OVMF_VARS_FILE: '/srv/my vms/a,b/OVMF_VARS.fd',
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: '/srv/my vms/bzImage',
  },
};

for (const [name, env] of Object.entries(envs)) {
  test(`--shell survives a paste into sh: ${name}`, () => {
    const fullEnv = { ...env, MANAGER_QEMU_BIN_PATH: path.join(dir, 'print-argv') };
    const json = runCli(['qemu-args'], fullEnv);
    const shell = runCli(['qemu-args', '--shell'], fullEnv);
    assert.equal(json.status, 0, json.stderr);
    assert.equal(shell.status, 0, shell.stderr);
    assert.equal(shell.stdout.trimEnd().split('\n').length, 1, 'one line');
    const out = execFileSync('sh', ['-c', shell.stdout], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH, HOME: '/nonexistent' } });
    assert.deepEqual(JSON.parse(out).args, JSON.parse(json.stdout));
  });
}

test('--shell puts sudo, as the QEMU user, in front of the binary when MANAGER_QEMU_USE_SUDO=true', () => {
  const env = { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_USE_SUDO: 'true', MANAGER_QEMU_BIN_PATH: '/usr/bin/qemu-system-x86_64' };
  const json = runCli(['qemu-args'], env);
  const shell = runCli(['qemu-args', '--shell'], env);
  assert.match(shell.stdout, /^sudo -n -u cocos-qemu -- \/usr\/bin\/qemu-system-x86_64 -enable-kvm /);
  // A numeric id is sudo's #uid.
  assert.match(runCli(['qemu-args', '--shell'], { ...env, MANAGER_QEMU_SUDO_USER: '4242' }).stdout, /^sudo -n -u '#4242' -- \/usr\/bin\/qemu-system-x86_64 /);
  const out = execFileSync('sh', ['-c', shell.stdout], {
    encoding: 'utf8', timeout: 10_000, env: { PATH: `${dir}:${process.env.PATH}` },
  });
  const got = JSON.parse(out);
  assert.equal(got.argv0, 'sudo');
  assert.deepEqual(got.args, ['-n', '-u', 'cocos-qemu', '--', '/usr/bin/qemu-system-x86_64', ...JSON.parse(json.stdout)]);
});

test('--shell leaves plain arguments unquoted so the line stays readable', () => {
  const r = runCli(['qemu-args', '--shell'], { MANAGER_QEMU_ENABLE_SEV_SNP: 'false' });
  assert.equal(
    r.stdout.trimEnd(),
    "qemu-system-x86_64 -enable-kvm -machine q35 -cpu EPYC -smp 4,maxcpus=64 -m 2048M,slots=5,maxmem=30G " +
      '-drive if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE.fd,readonly=on ' +
      '-drive if=pflash,format=raw,unit=1,file=/usr/share/OVMF/OVMF_VARS.fd ' +
      '-netdev user,id=vmnic,hostfwd=tcp::7020-:7002 ' +
      '-device virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,addr=0x2,romfile= ' +
      "-kernel img/bzImage -append 'quiet console=null' -initrd img/rootfs.cpio.gz -nographic -monitor pty " +
      '-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
  );
});
