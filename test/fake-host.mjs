// Runs a command as on another host: in a mount namespace of its own (`unshare -m`, as root) where
// /proc/cpuinfo is a file of the test's and /sys/module a tmpfs holding only the module parameters
// given (and, if given, /etc/hosts a file of the test's). The real host is untouched: the mounts
// go with the namespace when the command ends. runOnFakeHost waits for the command; spawnOnFakeHost
// (a daemon, with everything it starts) does not.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SEV_SNP, TDX, cvmSupport } from '../dist/host/cvm-host.js';

// $1: the cpuinfo file, $2: the tree to copy into the tmpfs, $3: a hosts file or '-', then the command.
const SCRIPT = 'set -e; mount --bind "$1" /proc/cpuinfo; mount -t tmpfs -o mode=0755 fake-sys-module /sys/module; cp -a "$2"/. /sys/module/; [ "$3" = - ] || mount --bind "$3" /etc/hosts; shift 3; exec "$@"';

/** Why a fake host cannot be made here (not root, no unshare), or undefined when it can. */
export function fakeHostUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root (unshare -m and mount)';
  const r = spawnSync('unshare', ['-m', '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0 ? undefined : 'unshare -m fails here';
}

/**
 * The files of a fake host in a directory of their own, and the `unshare` argv that runs `argv`
 * there. `cpuinfo`: the text /proc/cpuinfo shows; `modules`: { kvm_amd: { sev_snp: 'Y\n' } }
 * becomes /sys/module/kvm_amd/parameters/sev_snp; `hosts`: the text /etc/hosts shows (absent: the
 * real one). `cleanup` removes the directory (the mounts hold what they need).
 */
function fakeHost({ cpuinfo, modules = {}, hosts }, argv) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-fake-host-'));
  const cpu = path.join(dir, 'cpuinfo');
  fs.writeFileSync(cpu, cpuinfo);
  const tree = path.join(dir, 'module');
  fs.mkdirSync(tree);
  for (const [module, params] of Object.entries(modules)) {
    const pdir = path.join(tree, module, 'parameters');
    fs.mkdirSync(pdir, { recursive: true });
    for (const [name, value] of Object.entries(params)) fs.writeFileSync(path.join(pdir, name), value);
  }
  let hostsFile = '-';
  if (hosts !== undefined) {
    hostsFile = path.join(dir, 'hosts');
    fs.writeFileSync(hostsFile, hosts, { mode: 0o644 });
  }
  return {
    command: 'unshare',
    args: ['-m', '--propagation', 'private', '--', 'sh', '-c', SCRIPT, 'fake-host', cpu, tree, hostsFile, ...argv],
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** Runs `argv` on the fake `host` (see fakeHost), bounded, and returns spawnSync's result; `env`: its environment (default: this one's). */
export function runOnFakeHost(host, argv, { timeout = 20_000, env } = {}) {
  const h = fakeHost(host, argv);
  try {
    return spawnSync(h.command, h.args, { encoding: 'utf8', timeout, ...(env === undefined ? {} : { env }) });
  } finally {
    h.cleanup();
  }
}

/**
 * Starts `argv` on the fake `host` (see fakeHost) with child_process.spawn's `options` and returns
 * the child: once `sh` has mounted the fake files it execs `argv` in place, so the child's pid is
 * the command's (a daemon's), and whatever it starts (QEMU) runs on the same fake host.
 */
export function spawnOnFakeHost(host, argv, options) {
  const h = fakeHost(host, argv);
  const child = spawn(h.command, h.args, options);
  child.once('exit', h.cleanup);
  child.once('error', h.cleanup);
  return child;
}

/** A /proc/cpuinfo of two processors with these flags (each processor lists them, as Linux does). */
export function cpuinfoWithFlags(...flags) {
  const base = ['fpu', 'vme', 'de', 'pse', 'tsc', 'msr', 'sse2', 'svm', 'vmx'];
  return [0, 1].map((n) => `processor\t: ${n}\nvendor_id\t: FakeVendor\nflags\t\t: ${[...base, ...flags].join(' ')}\n\n`).join('');
}

/** Hosts as the Go manager tells them apart: neither technology, SEV-SNP (AMD), TDX (Intel). */
export const PLAIN_HOST = { cpuinfo: cpuinfoWithFlags() };
export const SEV_SNP_HOST = { cpuinfo: cpuinfoWithFlags('sev', 'sev_es', 'sev_snp'), modules: { kvm_amd: { sev: 'Y\n', sev_snp: 'Y\n' } } };
export const TDX_HOST = { cpuinfo: cpuinfoWithFlags('tdx_host_platform'), modules: { kvm_intel: { tdx: 'Y\n' } } };

/**
 * What src/host/cvm-host.ts answers on a fake host, without mounting anything (its decision from
 * the two files' contents): the host facts of a configuration loaded in-process.
 */
export function hostFacts({ cpuinfo, modules = {} }) {
  const answer = (r) => {
    const value = modules[r.module]?.[r.parameter];
    return cvmSupport(r, { bytes: Buffer.from(cpuinfo, 'latin1') }, value === undefined ? { error: 'ENOENT' } : { bytes: Buffer.from(value) });
  };
  return { sevSnp: answer(SEV_SNP), tdx: answer(TDX) };
}

export const FACTS = { plain: hostFacts(PLAIN_HOST), sevSnp: hostFacts(SEV_SNP_HOST), tdx: hostFacts(TDX_HOST) };
