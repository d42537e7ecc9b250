/**
 * The host side of "a user per VM": the device groups QEMU needs, whether the files every VM
 * reads are readable by the VM users, and whether the uid range is free on this host.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type IdRange, uidRangeConflicts } from '../isolation/uid-range.js';

/** Devices a QEMU opens on a confidential-computing host (KVM; SEV's firmware interface). */
export const VM_DEVICES = ['/dev/kvm', '/dev/sev'] as const;

export interface DeviceAccess {
  device: string;
  /** The group that may open it, when its mode lets the group read and write. */
  gid?: number;
  /** Why the VM users cannot open it (absent devices are not listed). */
  problem?: string;
}

/** For each device present: the group a VM user joins to open it, or why it cannot. */
export function deviceAccess(devices: readonly string[] = VM_DEVICES): DeviceAccess[] {
  const out: DeviceAccess[] = [];
  for (const device of devices) {
    let st: fs.Stats;
    try {
      st = fs.statSync(device);
    } catch {
      continue;
    }
    if ((st.mode & 0o006) === 0o006) out.push({ device });
    else if ((st.mode & 0o060) === 0o060 && st.gid !== 0) out.push({ device, gid: st.gid });
    else {
      out.push({
        device,
        problem: `${device} is ${(st.mode & 0o777).toString(8)} ${st.uid}:${st.gid}: the VMs' users cannot open it; give it a group with read and write (e.g. a udev rule KERNEL=="${path.basename(device)}", GROUP="kvm", MODE="0660")`,
      });
    }
  }
  return out;
}

/** The supplementary groups every VM's QEMU gets. */
export function deviceGroups(access: DeviceAccess[] = deviceAccess()): number[] {
  return [...new Set(access.flatMap((a) => (a.gid === undefined ? [] : [a.gid])))];
}

/**
 * Whether a user with no relation to the file's owner and group can read `file`: "other" may
 * read it and search every directory above it. (The VM users have their own gids; the device
 * groups are not expected to own firmware or kernels.)
 */
export function readableByVmUsers(file: string): { ok: true } | { ok: false; why: string } {
  let abs: string;
  try {
    abs = fs.realpathSync(file);
  } catch (err) {
    return { ok: false, why: `${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  const st = fs.statSync(abs);
  if ((st.mode & 0o004) === 0) return { ok: false, why: `${abs} is mode ${(st.mode & 0o777).toString(8)}: not readable by others (the VMs' users)` };
  for (let dir = path.dirname(abs); ; dir = path.dirname(dir)) {
    const d = fs.statSync(dir);
    if ((d.mode & 0o001) === 0) return { ok: false, why: `${dir} is mode ${(d.mode & 0o777).toString(8)}: the VMs' users cannot reach ${abs} through it` };
    if (dir === path.dirname(dir)) break;
  }
  return { ok: true };
}

/** Directories from `dir` up to / that the VM users cannot pass through (their own state dir aside). */
export function untraversableAncestors(dir: string): string[] {
  const out: string[] = [];
  let abs: string;
  try {
    abs = fs.realpathSync(dir);
  } catch {
    return out;
  }
  for (let d = path.dirname(abs); ; d = path.dirname(d)) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) out.push(d);
    } catch {
      /* gone: reported elsewhere */
    }
    if (d === path.dirname(d)) break;
  }
  return out;
}

function readIf(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** What on this host shares ids with MANAGER_VM_UID_RANGE. */
export function hostUidRangeConflicts(range: IdRange): string[] {
  return uidRangeConflicts(range, {
    passwd: readIf('/etc/passwd'),
    group: readIf('/etc/group'),
    subuid: readIf('/etc/subuid'),
    subgid: readIf('/etc/subgid'),
  });
}

/**
 * The processes of the VM users, from /proc. inUse: a process directory is owned by the
 * process's effective uid, so one readdir and a stat per process (~10 µs each), no file read.
 * killAll reads each process's status (~20 µs), which names all four of its uids.
 */
export const procUidProcesses = {
  inUse(): Set<number> {
    const uids = new Set<number>();
    for (const pid of procPids()) {
      const st = fs.statSync(`/proc/${pid}`, { throwIfNoEntry: false });
      if (st) uids.add(st.uid);
    }
    return uids;
  },
  killAll(targets: ReadonlySet<number>): Map<number, number> {
    const left = new Map<number, number>();
    for (const pid of procPids()) {
      const uid = processUids(pid)?.find((u) => targets.has(u));
      if (uid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
        left.set(uid, (left.get(uid) ?? 0) + 1);
      } catch {
        /* gone meanwhile */
      }
    }
    return left;
  },
};

function procPids(): number[] {
  try {
    return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number);
  } catch {
    return [];
  }
}

/** The process's uids (real, effective, saved, file system); undefined for a zombie or one gone. */
function processUids(pid: number): number[] | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    if (/^State:\s+Z/m.test(status)) return undefined;
    const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    return m === null ? undefined : m.slice(1).map(Number);
  } catch {
    return undefined;
  }
}
