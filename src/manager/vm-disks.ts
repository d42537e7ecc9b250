/**
 * Each VM's own writable disk (MANAGER_QEMU_ENABLE_DISK), a resource of the VM like its port
 * and uid: made in the VM's directory at CreateVm, owned by QEMU's user alone, gone with the VM.
 *
 * With MANAGER_QEMU_DISK_FORMAT=qcow2 (the default) the disk is a qcow2 overlay whose backing
 * file is the source: a few hundred KiB written, whatever the source's size, and the source is
 * only ever read (QEMU opens a backing file read-only). Another format is a whole copy in that
 * format, as the Go manager makes every disk (qemu-img convert, then resize), and costs as
 * much as the source holds. Either way the disk's virtual size is the source's, rounded up to
 * whole GiB, plus 1 GiB (Go's room for the guest's encrypted partition).
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { QemuAccess } from '../vm/vm-dir.js';
import type { VmDisk } from '../vm/vm-record.js';
import { DiskImageError, type DiskImages } from './disk-images.port.js';
import { type DiskSource, type PinnedSource, SOURCE_FORMAT } from './disk-source.js';
import { ManagerError } from './errors.js';

const GIB = 1024 ** 3;
/** Go's encryptedPartitionSizeDeltaGB: room on the disk beyond the source, for the guest's encrypted partition. */
const ROOM_GIB = 1;

/** The disk's virtual size, as Go sizes it (GetVirtualSizeGB + encryptedPartitionSizeDeltaGB). */
export function diskSize(sourceVirtualSize: number): number {
  return (Math.ceil(sourceVirtualSize / GIB) + ROOM_GIB) * GIB;
}

/** A byte count exactly, and in GiB for a person. */
function bytes(n: number): string {
  return `${BigInt(Math.floor(n))} bytes (${(n / GIB).toFixed(1)} GiB)`;
}

/** VM disks as the launcher and each VM (SupervisedVm) use them. */
export interface VmDiskHolder {
  /** Makes a VM's disk in its directory `dir`, for QEMU's user (`access`). */
  create(dir: string, access: QemuAccess | undefined, log: Logger): Promise<VmDisk>;
  /** The VM holds this disk (made now, or re-adopted): an overlay depends on its source from now on. */
  hold(vmId: string, disk: VmDisk): void;
  /** The disk is gone with its VM. */
  release(vmId: string): void;
  /** Deletes the disk's file (a rolled-back launch; a removed VM's goes with its directory). */
  remove(disk: VmDisk): Promise<void>;
}

/** Bytes free to an unprivileged writer on the file system of `dir`. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await fs.statfs(dir);
  return s.bavail * s.bsize;
}

export class VmDisks implements VmDiskHolder {
  private readonly d: Config['qemu']['disk'];

  constructor(
    private readonly config: Pick<Config, 'qemu' | 'stateDir' | 'diskFreeReserve'>,
    readonly source: DiskSource,
    private readonly images: DiskImages,
    private readonly free: (dir: string) => Promise<number> = freeBytes,
  ) {
    this.d = config.qemu.disk;
  }

  /** An overlay on the source, unless another format asks for a whole copy. */
  get kind(): VmDisk['kind'] {
    return this.d.format === SOURCE_FORMAT ? 'overlay' : 'copy';
  }

  /** Makes the VM's disk in its directory `dir`, for QEMU's user (`access`), from the pinned source. */
  async create(dir: string, access: QemuAccess | undefined, log: Logger): Promise<VmDisk> {
    const source = await this.source.forCreate();
    await this.checkFreeSpace(dir, source);
    const file = path.join(dir, `disk.${this.d.format}`);
    const size = diskSize(source.virtualSize);
    await this.createFile(file, access);
    const { virtualSize: _, ...identity } = source;
    const disk: VmDisk = { id: this.d.id, file, format: this.d.format, kind: this.kind, virtualSize: size, source: identity };
    try {
      if (disk.kind === 'overlay') {
        await this.images.createOverlay(file, source.path, SOURCE_FORMAT, size);
      } else {
        await this.copy(source, disk, log);
      }
    } catch (err) {
      if (err instanceof DiskImageError) throw new ManagerError('internal', `the VM's disk could not be made: ${err.message}`);
      throw err;
    }
    return disk;
  }

  hold(vmId: string, disk: VmDisk): void {
    if (disk.kind === 'overlay') this.source.depend(vmId, disk.source);
  }

  release(vmId: string): void {
    this.source.release(vmId);
  }

  async remove(disk: VmDisk): Promise<void> {
    await fs.rm(disk.file, { force: true });
  }

  /**
   * Free space for the disk beyond MANAGER_DISK_FREE_RESERVE: an overlay starts at a few hundred
   * KiB and grows as the guest writes, which the reserve is for; a copy needs what the source
   * holds at once.
   */
  private async checkFreeSpace(dir: string, source: PinnedSource): Promise<void> {
    const reserve = this.config.diskFreeReserve;
    const now = this.kind === 'copy' ? Number(source.size) : 0;
    if (reserve === 0 && now === 0) return;
    const free = await this.free(dir);
    const needed = reserve + now;
    if (free < needed) {
      const what = now > 0 ? `MANAGER_DISK_FREE_RESERVE (${bytes(reserve)}) plus ${bytes(now)} for a copy of the source` : `MANAGER_DISK_FREE_RESERVE (${bytes(reserve)})`;
      throw new ManagerError('resource-exhausted', `the state directory's file system (${this.config.stateDir}) has ${bytes(free)} free; a VM disk needs ${bytes(needed)}: ${what}`);
    }
  }

  /**
   * The file exists, QEMU's user's alone, before qemu-img writes it (qemu-img truncates it and
   * keeps its owner and mode): never a moment readable by anyone else. With guest isolation the
   * VM's own user and 0600; under sudo QEMU's group and 0660 (its user is every VM's).
   */
  private async createFile(file: string, access: QemuAccess | undefined): Promise<void> {
    const fh = await fs.open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
    try {
      if (access?.uid !== undefined) {
        await fh.chown(access.uid, access.gid);
        await fh.chmod(0o600);
      } else if (access !== undefined) {
        await fh.chown(-1, access.gid);
        await fh.chmod(0o660);
      } else {
        await fh.chmod(0o600);
      }
    } finally {
      await fh.close();
    }
  }

  /** Go's way: the whole source converted, then resized; logged with what it cost. */
  private async copy(source: PinnedSource, disk: VmDisk, log: Logger): Promise<void> {
    const t0 = performance.now();
    await this.images.convert(source.path, SOURCE_FORMAT, disk.file, disk.format);
    await this.images.resize(disk.file, disk.format, disk.virtualSize);
    const st = await fs.stat(disk.file);
    // What was copied must be what was pinned.
    const now = await fs.stat(source.path, { bigint: true });
    if (String(now.dev) !== source.dev || String(now.ino) !== source.ino || String(now.size) !== source.size || String(now.mtimeNs) !== source.mtimeNs) {
      throw new ManagerError('unavailable', `the disk source ${source.path} changed while it was copied; try again`);
    }
    log.info(
      { format: disk.format, ms: Math.round(performance.now() - t0), bytes_written: st.blocks * 512, source_bytes: Number(source.size) },
      `VM disk made as a whole copy of the source (MANAGER_QEMU_DISK_FORMAT=${disk.format}; qcow2 would make an overlay instead)`,
    );
  }
}
