/**
 * Preflight of this host for the current configuration: what QEMU, the kernel and the files the
 * configuration names can and cannot do here. Each check says pass, warn or fail, and how to fix.
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SANDBOX_OPTION } from '../qemu/args.js';
import { probeSandbox } from '../vm/qemu-version.js';
import { loadExeca } from '../vm/spawner.js';
import { checkSharing, resolveQemuUser } from './qemu-user.js';
import type { Config, QemuConfig } from '../config/types.js';
import { gpuChecks } from './gpu-checks.js';
import { isolationChecks } from './isolation-checks.js';

import type { CheckResult } from './check-result.js';

export type { CheckResult, CheckStatus } from './check-result.js';

const pass = (check: string, detail: string): CheckResult => ({ check, status: 'pass', detail, remedy: '' });
const fail = (check: string, detail: string, remedy: string): CheckResult => ({ check, status: 'fail', detail, remedy });
const warn = (check: string, detail: string, remedy: string): CheckResult => ({ check, status: 'warn', detail, remedy });

async function findOnPath(bin: string): Promise<string | undefined> {
  const candidates = bin.includes('/') ? [bin] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, bin));
  for (const c of candidates) {
    try {
      await fs.access(c, constants.X_OK);
      return path.resolve(c);
    } catch {
      /* next */
    }
  }
  return undefined;
}

interface QemuAnswer {
  text: string;
  /** Why QEMU did not answer (non-zero exit, signal, timeout), in its own first words; undefined when it did. */
  failure: string | undefined;
}

async function askQemu(bin: string, args: string[]): Promise<QemuAnswer> {
  const { execa } = await loadExeca();
  const r = await execa(bin, args, { reject: false, timeout: 10_000, stdin: 'ignore' });
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  if (r.exitCode === 0 && !r.timedOut && !r.signal) return { text, failure: undefined };
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`;
  const said = (r.stderr ?? '').split('\n').find((l) => l.trim() !== '')?.trim();
  return { text, failure: said ? `${how}: ${said}` : how };
}

async function qemuHelp(bin: string, args: string[]): Promise<string> {
  return (await askQemu(bin, args)).text;
}

/** A QEMU that cannot list what it supports says nothing about any one device or object. */
const listingFailed = (what: string, args: string, failure: string): CheckResult =>
  fail(`qemu ${what}`, `\`${args}\` failed (${failure})`, 'QEMU must load modules from its own build (a QEMU outside /usr needs a wrapper: see README)');

async function readable(check: string, file: string, setting: string): Promise<CheckResult> {
  try {
    await fs.access(file, constants.R_OK);
    return pass(check, file);
  } catch (err) {
    return fail(check, `${file}: ${(err as NodeJS.ErrnoException).code}`, `install it or point ${setting} at it`);
  }
}

/** What the QEMU binary says it supports, asked of the binary itself (options differ between versions). */
async function checkQemu(qemu: string, q: QemuConfig, results: CheckResult[], sandbox: boolean): Promise<void> {
  const versionAnswer = await askQemu(qemu, ['--version']);
  const version = versionAnswer.text.split('\n')[0]?.trim() ?? '';
  if (versionAnswer.failure) {
    results.push(fail('qemu binary', `${qemu} does not run: --version ${versionAnswer.failure}`, 'repair the QEMU installation, or set MANAGER_QEMU_BIN_PATH'));
    return;
  }
  results.push(pass('qemu binary', `${qemu} (${version})`));
  const objectList = await askQemu(qemu, ['-object', 'help']);
  const deviceList = await askQemu(qemu, ['-device', 'help']);
  const objects = objectList.text;
  const devices = deviceList.text;
  if (objectList.failure) results.push(listingFailed('objects', '-object help', objectList.failure));
  if (deviceList.failure) results.push(listingFailed('devices', '-device help', deviceList.failure));
  const needObject = (name: string, remedy: string) => {
    if (objectList.failure) return;
    results.push(new RegExp(`^\\s*${name}\\s*$`, 'm').test(objects) ? pass(`qemu object ${name}`, 'supported') : fail(`qemu object ${name}`, 'not supported by this QEMU', remedy));
  };
  if (q.enableSevSnp) {
    needObject('sev-snp-guest', 'SEV-SNP guests need QEMU 9.1 or later');
    needObject('igvm-cfg', 'IGVM needs QEMU 10.1 or later built with IGVM support');
    needObject('memory-backend-memfd', 'QEMU built without memfd support');
    if (q.enableHostData && !objectList.failure && /^\s*sev-snp-guest\s*$/m.test(objects)) {
      const props = await qemuHelp(qemu, ['-object', 'sev-snp-guest,help']);
      results.push(props.includes('host-data') ? pass('sev-snp-guest host-data', 'supported') : fail('sev-snp-guest host-data', 'property missing', 'host-data needs QEMU 9.1 or later'));
    }
  }
  if (q.enableTdx) {
    needObject('tdx-guest', 'TDX guests with a quote-generation socket need QEMU 10.1 or later');
    needObject('memory-backend-memfd', 'QEMU built without memfd support');
  }
  for (const dev of deviceList.failure ? [] : ['virtio-net-pci', 'virtio-9p-pci']) {
    results.push(devices.includes(`"${dev}"`) ? pass(`qemu device ${dev}`, 'supported') : fail(`qemu device ${dev}`, 'not supported by this QEMU', 'use a QEMU built with virtio and 9P (virtfs) support'));
  }
  if (!sandbox) return;
  // The same trial start as the daemon's, through the same prefix (sudo): VMs still launch
  // without the sandbox, so this warns.
  const trial = await probeSandbox(q);
  results.push(
    trial.supported
      ? pass('qemu sandbox', `-sandbox ${SANDBOX_OPTION}`)
      : warn('qemu sandbox', `${qemu} does not take -sandbox, VMs run without it: ${trial.reason}`, 'use a QEMU built with seccomp (Debian\'s qemu-system-x86 is)'),
  );
}

/**
 * `portIsFree` undefined: skip the port scan (the running daemon must not bind ports QEMU may be
 * taking). `sandbox` false: skip the -sandbox trial start (the daemon makes its own, once, with
 * the version probe, and warns about it itself).
 */
export async function preflight(config: Config, portIsFree?: (port: number) => Promise<boolean>, { sandbox = true } = {}): Promise<CheckResult[]> {
  const q = config.qemu;
  const results: CheckResult[] = [];
  const qemu = await findOnPath(q.binPath);
  if (!qemu) {
    results.push(fail('qemu binary', `${q.binPath} not found`, 'apt-get install qemu-system-x86, or set MANAGER_QEMU_BIN_PATH'));
  } else {
    await checkQemu(qemu, q, results, sandbox);
  }
  if (q.useSudo) {
    // The daemon refuses to start without these (src/host/qemu-user.ts): said here first.
    try {
      const user = await resolveQemuUser(q.sudoUser);
      checkSharing(user, undefined, '');
      results.push(pass('qemu sudo user', `QEMU runs as ${user.name} (uid ${user.uid}); the VMs' files are shared through gid ${user.gid}, of which this user is a member`));
    } catch (err) {
      results.push(fail('qemu sudo user', (err as Error).message, 'see docs/configuration.md, MANAGER_QEMU_USE_SUDO: the host setup'));
    }
  }

  if (q.enableKvm) {
    try {
      // Opening it is what QEMU does; permission bits alone can mislead (device cgroups, containers).
      await (await fs.open('/dev/kvm', 'r+')).close();
      results.push(pass('/dev/kvm', 'present and usable'));
    } catch (err) {
      results.push(fail('/dev/kvm', `${(err as NodeJS.ErrnoException).code}`, 'enable virtualization in firmware and load kvm_amd/kvm_intel, or set MANAGER_QEMU_ENABLE_KVM=false'));
    }
  }

  // Whether the host supports SEV-SNP or TDX was read once, as the Go manager reads it, and
  // decided from (src/config/cvm.ts); `check` shows that decision (cvmChecks) before these rows.
  if (q.enableSevSnp) {
    const igvmmeasure = path.join(config.attestationPolicyBinaryPath, 'igvmmeasure');
    try {
      await fs.access(igvmmeasure, constants.X_OK);
      results.push(pass('igvmmeasure', igvmmeasure));
    } catch {
      results.push(fail('igvmmeasure', `${igvmmeasure} not found`, 'install igvmmeasure (COCONUT-SVSM) or set MANAGER_ATTESTATION_POLICY_BINARY_PATH'));
    }
    results.push(await readable('IGVM file', q.igvmFile, 'MANAGER_QEMU_IGVM_FILE'));
  }
  if (q.enableTdx) {
    results.push(await readable('OVMF (TDX)', q.ovmfFile, 'MANAGER_QEMU_OVMF_FILE'));
  }
  if (!q.enableSevSnp && !q.enableTdx) {
    results.push(await readable('OVMF code', q.ovmfCode.file, 'MANAGER_QEMU_OVMF_CODE_FILE'));
    results.push(await readable('OVMF variables', q.ovmfVars.file, 'MANAGER_QEMU_OVMF_VARS_FILE'));
  }
  results.push(await readable('guest kernel', q.kernelFile, 'MANAGER_QEMU_DISK_IMG_KERNEL_FILE'));
  results.push(await readable('guest initramfs', q.rootfsFile, 'MANAGER_QEMU_DISK_IMG_ROOTFS_FILE'));

  if (portIsFree) await checkPorts(results, config, portIsFree);
  results.push(await stateDirCheck(config.stateDir));
  results.push(...(await isolationChecks(config)));
  results.push(...gpuChecks(config));
  return results;
}

async function checkPorts(results: CheckResult[], config: Config, portIsFree: (port: number) => Promise<boolean>): Promise<void> {
  const { first, last } = config.qemu.hostFwdRange;
  let free = 0;
  for (let p = first; p <= last; p++) if (await portIsFree(p)) free++;
  const total = last - first + 1;
  const range = `MANAGER_QEMU_HOST_FWD_RANGE=${first}-${last}`;
  if (free === 0) results.push(fail('host ports', `none of ${total} free in ${range}`, 'free some ports or widen the range'));
  else if (config.maxVms > 0 && free < config.maxVms) results.push(warn('host ports', `${free} of ${total} free, fewer than MANAGER_MAX_VMS=${config.maxVms}`, 'free some ports or widen the range'));
  else results.push(pass('host ports', `${free} of ${total} free in ${range}`));
}

/** Writable, or creatable in the nearest existing parent; nothing is created here. */
async function stateDirCheck(dir: string): Promise<CheckResult> {
  let probe = path.resolve(dir);
  while (true) {
    try {
      const st = await fs.stat(probe);
      if (!st.isDirectory()) return fail('state directory', `${probe} is not a directory`, 'set MANAGER_STATE_DIR to a directory');
      await fs.access(probe, constants.W_OK);
      return pass('state directory', probe === path.resolve(dir) ? probe : `${path.resolve(dir)} (will be created)`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' || probe === '/') return fail('state directory', `${probe}: ${code}`, 'make it writable by the daemon or set MANAGER_STATE_DIR');
      probe = path.dirname(probe);
    }
  }
}
