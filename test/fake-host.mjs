// Runs a command as on another host: in a mount namespace of its own (`unshare -m`, as root) where
// /proc/cpuinfo is a file of the test's and /sys/module a tmpfs holding only the module parameters
// given. The real host is untouched: the mounts go with the namespace when the command ends.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// $1: the cpuinfo file, $2: the tree to copy into the tmpfs, then the command.
const SCRIPT = 'set -e; mount --bind "$1" /proc/cpuinfo; mount -t tmpfs -o mode=0755 fake-sys-module /sys/module; cp -a "$2"/. /sys/module/; shift 2; exec "$@"';

/** Why a fake host cannot be made here (not root, no unshare), or undefined when it can. */
export function fakeHostUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root (unshare -m and mount)';
  const r = spawnSync('unshare', ['-m', '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0 ? undefined : 'unshare -m fails here';
}

/**
 * `cpuinfo`: the text /proc/cpuinfo shows; `modules`: { kvm_amd: { sev_snp: 'Y\n' } } becomes
 * /sys/module/kvm_amd/parameters/sev_snp. Runs `argv` there, bounded, and returns spawnSync's result.
 */
export function runOnFakeHost({ cpuinfo, modules = {} }, argv, { timeout = 20_000 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-fake-host-'));
  try {
    const cpu = path.join(dir, 'cpuinfo');
    fs.writeFileSync(cpu, cpuinfo);
    const tree = path.join(dir, 'module');
    fs.mkdirSync(tree);
    for (const [module, params] of Object.entries(modules)) {
      const pdir = path.join(tree, module, 'parameters');
      fs.mkdirSync(pdir, { recursive: true });
      for (const [name, value] of Object.entries(params)) fs.writeFileSync(path.join(pdir, name), value);
    }
    return spawnSync('unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', SCRIPT, 'fake-host', cpu, tree, ...argv], { encoding: 'utf8', timeout });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A /proc/cpuinfo of two processors with these flags (each processor lists them, as Linux does). */
export function cpuinfoWithFlags(...flags) {
  const base = ['fpu', 'vme', 'de', 'pse', 'tsc', 'msr', 'sse2', 'svm', 'vmx'];
  return [0, 1].map((n) => `processor\t: ${n}\nvendor_id\t: FakeVendor\nflags\t\t: ${[...base, ...flags].join(' ')}\n\n`).join('');
}
