/**
 * Each VM's own writable disk (MANAGER_QEMU_ENABLE_DISK), a resource of the VM like its port
 * and uid: made in the VM's directory at CreateVm, owned by QEMU's user alone, gone with the VM.
 *
 * With MANAGER_QEMU_DISK_FORMAT=qcow2 (the default) the disk is a qcow2 overlay whose backing
 * file is the source: a few hundred KiB, whatever the source's size, and the source is only
 * ever read (QEMU opens a backing file read-only). That overlay is made once per pin of the
 * source, off the call path (`qemu-img create -f qcow2 -b <source> -F qcow2 <file> <size>`, into
 * the state directory), and each VM's disk is a copy of it: an empty overlay holds nothing of
 * its VM, and a copy costs a fraction of a millisecond where qemu-img's start and flushes cost
 * 10 to 20. Another format is a whole copy of the source in that format, as the Go manager makes
 * every disk (qemu-img convert, then resize), and costs as much as the source holds. Either way
 * the disk's virtual size is the source's, rounded up to whole GiB, plus 1 GiB (Go's room for
 * the guest's encrypted partition).
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
/** The empty overlay each VM's disk is a copy of, in the state directory: `disk-template-<digest>.qcow2`. */
const TEMPLATE = /^disk-template-[0-9a-f]{16}\.qcow2$/;
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
  /** The overlay of the current pin that VMs' disks are copies of (made once per pin). */
  private template: { key: string; file: Promise<string> } | undefined;

  constructor(
    private readonly config: Pick<Config, 'qemu' | 'stateDir' | 'diskFreeReserve'>,
    readonly source: DiskSource,
    private readonly images: DiskImages,
    private readonly free: (dir: string) => Promise<number> = freeBytes,
    log?: Logger,
  ) {
    this.d = config.qemu.disk;
    if (this.kind === 'overlay') {
      // Made as soon as the source is pinned: the first CreateVm finds it ready.
      source.onPinned((pin) => {
        this.templateFor(pin).catch((err: unknown) => log?.warn({ err: (err as Error).message }, 'could not make the overlay VM disks are copied from; CreateVm makes it again'));
      });
    }
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
    const { virtualSize: _, ...identity } = source;
    const disk: VmDisk = { id: this.d.id, file, format: this.d.format, kind: this.kind, virtualSize: size, source: identity };
    try {
      if (disk.kind === 'overlay') {
        // COPYFILE_EXCL: never over (or through) anything already there; the copy has the template's 0600.
        await fs.copyFile(await this.templateFor(source), file, constants.COPYFILE_EXCL);
      } else {
        await this.createFile(file);
        await this.copy(source, disk, log);
      }
      await this.giveTo(file, access);
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
   * The overlay made for this pin of the source, which VMs' disks are copies of: made once, by
   * qemu-img, 0600 in the state directory; a template of an earlier pin (or run) is removed.
   */
  private templateFor(pin: PinnedSource): Promise<string> {
    const key = `${pin.sha384}:${pin.virtualSize}`;
    if (this.template?.key === key) return this.template.file;
    const file = path.join(this.config.stateDir, `disk-template-${pin.sha384.slice(0, 16)}.qcow2`);
    const making = (async () => {
      await fs.mkdir(this.config.stateDir, { recursive: true, mode: 0o700 });
      await fs.rm(file, { force: true });
      await this.createFile(file);
      await this.images.createOverlay(file, pin.path, SOURCE_FORMAT, diskSize(pin.virtualSize));
      for (const name of await fs.readdir(this.config.stateDir)) {
        if (TEMPLATE.test(name) && name !== path.basename(file)) await fs.rm(path.join(this.config.stateDir, name), { force: true });
      }
      return file;
    })();
    this.template = { key, file: making };
    making.catch(() => {
      if (this.template?.file === making) this.template = undefined; // the next CreateVm tries again
    });
    return making;
  }

  /** A new file, the daemon's alone (0600), never anything that was there. */
  private async createFile(file: string): Promise<void> {
    const fh = await fs.open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
    await fh.close();
  }

  /**
   * The disk becomes QEMU's user's alone, from 0600 (never a moment readable by anyone else):
   * with guest isolation the VM's own user and 0600; under sudo QEMU's group and 0660 (its user
   * is every VM's); otherwise the daemon's, 0600.
   */
  private async giveTo(file: string, access: QemuAccess | undefined): Promise<void> {
    if (access?.uid !== undefined) await fs.chown(file, access.uid, access.gid);
    else if (access !== undefined) await fs.chown(file, -1, access.gid);
    await fs.chmod(file, access !== undefined && access.uid === undefined ? 0o660 : 0o600);
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
