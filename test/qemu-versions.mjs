// The QEMU binaries the real-QEMU tests run on, each asked for its version: the host's own
// (Debian 12: QEMU 7.2) and QEMU 11 from Debian trixie-backports in the test bed that
// scripts/build-qemu-bed.sh makes under build/qemu-11/ (`make test` builds it). A binary that
// is not there carries the reason its tests are skipped.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';

export const BED_DIR = path.join(ROOT, 'build', 'qemu-11');
export const BED_QEMU = path.join(BED_DIR, 'qemu-system-x86_64');
export const BED_TREE = path.join(BED_DIR, 'tree');

function onPath(name) {
  for (const d of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return undefined;
}

/** The first line of `<bin> --version`, and the version in it; bounded to 20 s. */
function askVersion(bin) {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const line = (r.stdout ?? '').split('\n')[0].trim();
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(line);
  if (r.status !== 0 || !m) return { error: `${bin} --version: ${(r.stderr || r.error?.message || line || `exit ${r.status}`).trim().split('\n')[0]}` };
  return { line, version: `${m[1]}.${m[2]}.${m[3] ?? 0}`, major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * One QEMU under test. `env` is what a daemon or the CLI needs to use it under TCG with plain
 * OVMF (its binary and its own firmware); `name` ("QEMU 7.2") goes into test names.
 */
function describeQemu({ label, bin, missing, env }) {
  if (!bin) return { name: label, skip: missing, env: {} };
  const v = askVersion(bin);
  if (v.error) return { name: label, bin, skip: v.error, env: {} };
  return { name: `QEMU ${v.major}.${v.minor}`, bin, version: v.version, versionLine: v.line, major: v.major, minor: v.minor, skip: false, env };
}

function hostQemu() {
  const bin = onPath('qemu-system-x86_64');
  // The configuration's defaults (binary looked up on PATH, /usr/share/OVMF firmware) are Debian 12's.
  return describeQemu({ label: 'host QEMU', bin, missing: 'no qemu-system-x86_64 on PATH (make system-deps installs it)', env: {} });
}

function bedQemu() {
  const unavailable = path.join(BED_DIR, 'UNAVAILABLE');
  if (!fs.existsSync(BED_QEMU)) {
    const why = fs.existsSync(unavailable) ? fs.readFileSync(unavailable, 'utf8').trim() : 'not built (make qemu-bed)';
    return describeQemu({ label: 'QEMU 11 (build/qemu-11)', missing: `QEMU 11 bed: ${why}` });
  }
  // ovmf 2025.02 ships only the 4 MB pflash images under /usr/share/OVMF, and OVMF.fd (the
  // one-file build TDX boots with) under /usr/share/ovmf.
  return describeQemu({
    label: 'QEMU 11 (build/qemu-11)',
    bin: BED_QEMU,
    env: {
      MANAGER_QEMU_BIN_PATH: BED_QEMU,
      MANAGER_QEMU_OVMF_CODE_FILE: path.join(BED_TREE, 'usr/share/OVMF/OVMF_CODE_4M.fd'),
      MANAGER_QEMU_OVMF_VARS_FILE: path.join(BED_TREE, 'usr/share/OVMF/OVMF_VARS_4M.fd'),
      MANAGER_QEMU_OVMF_FILE: path.join(BED_TREE, 'usr/share/ovmf/OVMF.fd'),
    },
  });
}

export const HOST_QEMU = hostQemu();
export const NEW_QEMU = bedQemu();
/** Every QEMU the real-QEMU tests run on, oldest first. */
export const QEMUS = [HOST_QEMU, NEW_QEMU];

/** Whether `cmdline` (from /proc) is a QEMU's: the binary first, second behind a loader, or behind `sudo … --`. */
export function isQemuCommandLine(cmdline) {
  const isQemu = (a) => a !== undefined && path.basename(a) === 'qemu-system-x86_64';
  if (cmdline.slice(0, 2).some(isQemu)) return true;
  return path.basename(cmdline[0] ?? '') === 'sudo' && cmdline.includes('--') && isQemu(cmdline[cmdline.indexOf('--') + 1]);
}
