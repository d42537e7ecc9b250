/**
 * A VM's directory under MANAGER_STATE_DIR/vms/<id>/: the two 9P shares, the firmware variables
 * copy, QEMU's output and the record. Directories 0700; secrets and the env file 0600.
 *
 * With guest isolation (a root daemon: QEMU runs as the VM's own uid and gid) or under sudo (as
 * an unprivileged user, whose primary group that is), what QEMU opens itself is given that group: the VM's directory 0710 (traversed, not listed), the
 * shares 0750 with their files 0640 (read, never written: security_model=mapped reads xattrs,
 * which needs read access), the OVMF_VARS copy 0660 under sudo, the VM user's own
 * 0600 with isolation. The group is set before any group bit, so
 * no one else can get in between. The record, the logs (QEMU gets them as open descriptors) and
 * everything else stay the daemon's alone.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { VmRequest } from '../request/create-request.js';
import { certificateFiles, renderEnvironmentFile } from '../request/guest-files.js';

export interface VmPaths {
  dir: string;
  envDir: string;
  certsDir: string;
  ovmfVars: string;
  consoleLog: string;
  qemuLog: string;
  /** The VM's QMP socket: the daemon listens, QEMU connects. */
  qmpSocket: string;
}

export function vmsRoot(stateDir: string): string {
  return path.resolve(stateDir, 'vms');
}

export function vmPaths(stateDir: string, id: string): VmPaths {
  const dir = path.join(vmsRoot(stateDir), id);
  return {
    dir,
    envDir: path.join(dir, 'env'),
    certsDir: path.join(dir, 'certs'),
    ovmfVars: path.join(dir, 'OVMF_VARS.fd'),
    consoleLog: path.join(dir, 'console.log'),
    qemuLog: path.join(dir, 'qemu.log'),
    qmpSocket: path.join(dir, 'qmp.sock'),
  };
}

/**
 * No fsync: these files matter only while the VM runs, and a host crash that could lose them
 * ends the VM too. (The record, which must survive a daemon restart, is written atomically.)
 */
async function writePrivateFile(file: string, data: string | Uint8Array, mode: number, gid?: number): Promise<void> {
  // 'wx': never follow or reuse something already there.
  const fh = await fs.open(file, 'wx', mode & 0o700);
  try {
    if (gid !== undefined) await fh.chown(-1, gid);
    await fh.writeFile(data);
    await fh.chmod(mode); // exactly this mode, whatever the umask
  } finally {
    await fh.close();
  }
}

/** A directory of this mode, in group `gid` when given (group first, then the group's bits). */
async function makeDir(dir: string, mode: number, gid?: number): Promise<void> {
  await fs.mkdir(dir, { mode: 0o700 });
  if (gid === undefined) return;
  await fs.chown(dir, -1, gid);
  await fs.chmod(dir, mode);
}

/**
 * Who QEMU runs as, when not as the daemon's user: `gid` is the group its files are given (a
 * VM's own gid with guest isolation, the sudo user's group under MANAGER_QEMU_USE_SUDO);
 * `uid`, with guest isolation, owns the firmware variables copy.
 */
export interface QemuAccess {
  gid: number;
  uid?: number;
}

/** Creates the VM's directory and shares. On failure the caller removes the directory. */
export async function createVmDir(
  p: VmPaths,
  id: string,
  req: VmRequest,
  ovmfVarsTemplate: string | undefined,
  access?: QemuAccess,
): Promise<void> {
  const qemuGid = access?.gid;
  const shared = qemuGid !== undefined;
  await fs.mkdir(path.dirname(p.dir), { recursive: true, mode: 0o700 });
  await makeDir(p.dir, 0o710, qemuGid);
  await makeDir(p.envDir, 0o750, qemuGid);
  await makeDir(p.certsDir, 0o750, qemuGid);
  await writePrivateFile(path.join(p.envDir, 'environment'), renderEnvironmentFile(id, req), shared ? 0o640 : 0o600, qemuGid);
  for (const f of certificateFiles(req)) {
    await writePrivateFile(path.join(p.certsDir, f.name), f.data, shared ? 0o640 : 0o600, qemuGid);
  }
  if (ovmfVarsTemplate !== undefined) {
    // The firmware writes its variables: each VM gets its own copy.
    try {
      await fs.access(ovmfVarsTemplate, fs.constants.R_OK);
    } catch (err) {
      throw new VarsTemplateError(ovmfVarsTemplate, (err as NodeJS.ErrnoException).code ?? String(err));
    }
    await fs.copyFile(ovmfVarsTemplate, p.ovmfVars, fs.constants.COPYFILE_EXCL);
    await fs.chmod(p.ovmfVars, 0o600);
    if (access?.uid !== undefined) {
      // The firmware writes its variables: with a user of its own, the copy is that user's alone.
      await fs.chown(p.ovmfVars, access.uid, access.gid);
    } else if (shared) {
      // Under sudo QEMU's user is not this VM's alone: its group may write the copy.
      await fs.chown(p.ovmfVars, -1, qemuGid);
      await fs.chmod(p.ovmfVars, 0o660);
    }
  }
}

/** The host's OVMF_VARS template cannot be read: the operator's setting, not the VM's files. */
export class VarsTemplateError extends Error {
  constructor(
    readonly file: string,
    readonly code: string,
  ) {
    super(`MANAGER_QEMU_OVMF_VARS_FILE=${JSON.stringify(file)} cannot be read (${code === 'ENOENT' ? 'no such file' : code}): install the OVMF firmware (Debian: ovmf) or point the setting at its OVMF_VARS file`);
    this.name = 'VarsTemplateError';
  }
}

export async function removeVmDir(dir: string): Promise<void> {
  // Something may still add a file meanwhile (an output file's rotation finishing): tried again.
  for (let attempt = 1; ; attempt++) {
    try {
      await removeTree(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (attempt >= 4 || (code !== 'ENOTEMPTY' && code !== 'EBUSY')) throw err;
    }
  }
}

/**
 * Every entry of a directory removed at once, then the directory. On a disk with online discard
 * each removal that frees blocks takes milliseconds: fs.rm's walk (lstat, a failing rmdir, then
 * readdir, at every level) ran them one level after another, ~2.5 ms for a VM's directory.
 */
async function removeTree(dir: string): Promise<void> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') return ignoreGone(fs.unlink(dir));
    throw err;
  }
  await Promise.all(entries.map((e) => (e.isDirectory() ? removeTree(path.join(dir, e.name)) : ignoreGone(fs.unlink(path.join(dir, e.name))))));
  await ignoreGone(fs.rmdir(dir));
}

async function ignoreGone(op: Promise<void>): Promise<void> {
  try {
    await op;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export async function listVmDirs(stateDir: string): Promise<string[]> {
  try {
    return (await fs.readdir(vmsRoot(stateDir), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
