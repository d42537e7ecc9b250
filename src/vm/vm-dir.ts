/**
 * A VM's directory under MANAGER_STATE_DIR/vms/<id>/: the two 9P shares, the firmware variables
 * copy, QEMU's output and the record. Directories 0700; secrets and the env file 0600.
 *
 * With guest isolation (QEMU runs as the VM's own uid and gid), QEMU gets exactly what it must
 * open and nothing else: the directory is root:<vm gid> 0710 (enter, not list), the shares
 * root:<vm gid> read-only (0750 / 0440: QEMU reads them, cannot change them, and no other VM's
 * user can), the firmware variables copy <vm uid> 0600 (the firmware writes it). The record,
 * QEMU's output and the lock stay the daemon's alone.
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
async function writePrivateFile(file: string, data: string | Uint8Array, mode: number): Promise<void> {
  // 'wx': never follow or reuse something already there.
  const fh = await fs.open(file, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // exactly this mode, whatever the umask
  } finally {
    await fh.close();
  }
}

/** Creates the VM's directory and shares. On failure the caller removes the directory. */
export async function createVmDir(
  p: VmPaths,
  id: string,
  req: VmRequest,
  ovmfVarsTemplate: string | undefined,
  owner?: { uid: number; gid: number },
): Promise<void> {
  await fs.mkdir(path.dirname(p.dir), { recursive: true, mode: owner ? 0o711 : 0o700 });
  await fs.mkdir(p.dir, { mode: 0o700 });
  await fs.mkdir(p.envDir, { mode: 0o700 });
  await fs.mkdir(p.certsDir, { mode: 0o700 });
  const fileMode = owner ? 0o440 : 0o600;
  await writePrivateFile(path.join(p.envDir, 'environment'), renderEnvironmentFile(id, req), fileMode);
  for (const f of certificateFiles(req)) {
    await writePrivateFile(path.join(p.certsDir, f.name), f.data, fileMode);
  }
  if (owner) {
    // Files first, directories after, the VM's own directory last: until then QEMU's user
    // cannot even enter it.
    for (const f of [path.join(p.envDir, 'environment'), ...certificateFiles(req).map((f) => path.join(p.certsDir, f.name))]) await fs.chown(f, 0, owner.gid);
    for (const d of [p.envDir, p.certsDir]) {
      await fs.chown(d, 0, owner.gid);
      await fs.chmod(d, 0o750);
    }
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
    if (owner) await fs.chown(p.ovmfVars, owner.uid, owner.gid);
  }
  if (owner) {
    await fs.chown(p.dir, 0, owner.gid);
    await fs.chmod(p.dir, 0o710);
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
  await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

export async function listVmDirs(stateDir: string): Promise<string[]> {
  try {
    return (await fs.readdir(vmsRoot(stateDir), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
