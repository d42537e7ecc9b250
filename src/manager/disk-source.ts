/**
 * The source every VM disk is made from (MANAGER_QEMU_SRC_DISK_FILE), pinned: its identity
 * (device, inode, size, modification time), its SHA-384 and its virtual size, taken at start and
 * again whenever it changes (fs.watch on its directory, and a poll where no event comes, e.g. over
 * NFS), off the call path: CreateVm takes the pin as it is, and waits only for a hash that could
 * not have been had earlier (the file changed a moment ago).
 *
 * An overlay reads its source for every block the guest has not written, so the source is its
 * base: written in place, every overlay on it is corrupt. Each VM whose disk is an overlay is a
 * dependent (with the content its disk was made on). When the source's inode gets other content
 * while dependents were made on its earlier content, those VMs are reported at error and
 * CreateVm refuses until it is **settled: none of those VMs is left** (RemoveVm, TTL). Their
 * corruption is not forgotten by a restart: a restarted daemon re-adopts them with the content
 * their records name and finds the difference again. A source replaced by a new file (rename
 * over it, another inode) leaves running VMs alone (their QEMU holds the old file open) and is
 * simply pinned anew.
 */
import { type BigIntStats, watch, type FSWatcher } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DiskSourceIdentity } from '../vm/vm-record.js';
import type { DiskImages } from './disk-images.port.js';
import { ManagerError } from './errors.js';
import { FileChangedError, startHashing } from './file-digest.js';

/** The format Go reads the source as (manager/qemu/vm.go: sourceDiskFormat). */
export const SOURCE_FORMAT = 'qcow2';
const SETTING = 'MANAGER_QEMU_SRC_DISK_FILE';
/** How often the source is looked at where no watch event comes (one stat). */
const POLL_MS = 2_000;
/** A source being written is hashed again once it has been still for this long; at most this many times in a row. */
const RETRY_MS = 500;
const MAX_TRIES = 20;

/** The source as pinned: what a disk made now is made of. */
export interface PinnedSource extends DiskSourceIdentity {
  virtualSize: number;
}

/** `seen`: the file found unusable, not read again until it changes. */
type State = { kind: 'pinning' } | { kind: 'pinned'; pin: PinnedSource } | { kind: 'unusable'; reason: string; seen?: DiskSourceIdentity };

/** Whether a stat still shows the file that was pinned (ctime left out: chmod and chown do not change content). */
function sameFile(s: BigIntStats, p: DiskSourceIdentity): boolean {
  return String(s.dev) === p.dev && String(s.ino) === p.ino && String(s.size) === p.size && String(s.mtimeNs) === p.mtimeNs;
}

/** Whether the source a disk was made on is still that file, unchanged. */
export async function sourceStillIs(p: DiskSourceIdentity): Promise<boolean> {
  try {
    return sameFile(await fs.stat(p.path, { bigint: true }), p);
  } catch {
    return false;
  }
}

const sameInode = (a: DiskSourceIdentity, b: DiskSourceIdentity) => a.path === b.path && a.dev === b.dev && a.ino === b.ino;

export class DiskSource {
  readonly path: string;
  private state: State = { kind: 'pinning' };
  /** VMs whose disks are overlays on this source, with the content each was made on. */
  private readonly dependents = new Map<string, DiskSourceIdentity>();
  /** Dependents whose source was written in place under them: corrupt until removed. */
  private readonly corrupt = new Set<string>();
  private checking: Promise<void> | undefined;
  private again = false;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private readonly pinnedListeners: ((pin: PinnedSource) => void)[] = [];
  /** How many times the source was hashed (never per CreateVm). */
  hashRuns = 0;

  constructor(
    file: string,
    private readonly images: DiskImages,
    private readonly log: Logger,
    private readonly pollMs = POLL_MS,
  ) {
    this.path = path.resolve(file);
  }

  /** Pins the source now, and again whenever it changes. */
  start(): void {
    void this.check();
    try {
      this.watcher = watch(path.dirname(this.path), { persistent: false }, (_event, name) => {
        if (name === null || name === path.basename(this.path)) void this.check();
      });
      this.watcher.on('error', () => undefined); // the poll goes on
    } catch {
      // No watch here (the directory is missing, or inotify is exhausted): the poll alone.
    }
    this.poll = setInterval(() => void this.check(), this.pollMs);
    this.poll.unref();
  }

  stop(): void {
    this.watcher?.close();
    clearInterval(this.poll);
  }

  /** Called with each new pin (work that depends on it is done ahead of CreateVm). */
  onPinned(fn: (pin: PinnedSource) => void): void {
    this.pinnedListeners.push(fn);
  }

  /** The current pin, or undefined while there is none (being hashed, or the source is unusable). */
  get pinned(): PinnedSource | undefined {
    return this.state.kind === 'pinned' ? this.state.pin : undefined;
  }

  /** The VMs whose disks are overlays on this source. */
  get dependentVms(): string[] {
    return [...this.dependents.keys()];
  }

  /** The VMs whose disks are corrupt because the source was written in place under them. */
  get corrupted(): string[] {
    return [...this.corrupt];
  }

  /**
   * The pin a disk is made on now (CreateVm): the source is looked at once (a stat), and a hash
   * is waited for only if the source has just changed. Refuses while the source is unusable or
   * overlays on it are corrupt.
   */
  async forCreate(): Promise<PinnedSource> {
    await this.check();
    if (this.corrupt.size > 0) {
      throw new ManagerError(
        'failed-precondition',
        `the disk source ${this.path} (${SETTING}) was written in place while VM disks were overlays on it, so the disks of VMs ${this.corrupted.join(', ')} are corrupt: remove those VMs (RemoveVm); CreateVm accepts again once none is left. To update a source, write a new file and rename it over the old one`,
      );
    }
    if (this.state.kind === 'unusable') throw new ManagerError('failed-precondition', this.state.reason);
    if (this.state.kind !== 'pinned') throw new ManagerError('unavailable', `the disk source ${this.path} is being hashed; try again`);
    return this.state.pin;
  }

  /** A VM's disk is an overlay on this source (made now, or re-adopted after a restart). */
  depend(vmId: string, source: DiskSourceIdentity): void {
    this.dependents.set(vmId, source);
    const pin = this.pinned;
    if (pin) this.findCorrupt(pin);
  }

  /** The VM and its disk are gone. */
  release(vmId: string): void {
    this.dependents.delete(vmId);
    if (this.corrupt.delete(vmId) && this.corrupt.size === 0) {
      this.log.info({ path: this.path }, 'disk source settled: no VM disk made on its earlier content is left; CreateVm accepts again');
    }
  }

  /** One look at the source (stat), and a new pin if it changed; calls meanwhile share it. */
  private check(): Promise<void> {
    if (this.checking) {
      this.again = true;
      return this.checking;
    }
    this.checking = (async () => {
      let tries = 0;
      do {
        this.again = false;
        if (await this.lookOnce()) continue;
        // Written while it was read: again once it has been still for a moment, a few times.
        if (++tries >= MAX_TRIES) {
          this.setUnusable(`the disk source ${this.path} (${SETTING}) keeps changing: it could not be read whole in ${MAX_TRIES} tries`);
          break;
        }
        this.again = true;
        await new Promise((r) => setTimeout(r, RETRY_MS));
      } while (this.again);
    })().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  /** False when the source changed while it was being read. */
  private async lookOnce(): Promise<boolean> {
    let st: BigIntStats;
    try {
      st = await fs.stat(this.path, { bigint: true });
    } catch (err) {
      this.setUnusable(`the disk source ${this.path} (${SETTING}) cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return true;
    }
    const pin = this.pinned;
    if (pin && sameFile(st, pin)) return true;
    const seen = this.state.kind === 'unusable' ? this.state.seen : undefined;
    if (seen && sameFile(st, seen)) return true;
    const now = { path: this.path, sha384: '', dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs) };
    if (!st.isFile()) {
      this.setUnusable(`the disk source ${this.path} (${SETTING}) is not a file`, now);
      return true;
    }
    this.state = { kind: 'pinning' };
    const t0 = performance.now();
    let next: PinnedSource;
    try {
      this.hashRuns++;
      const hashing = await startHashing(this.path);
      const [sha384, info] = await Promise.all([hashing.sha384, this.images.info(this.path)]);
      if (info.format !== SOURCE_FORMAT) throw new SourceError(`is a ${info.format} image, not ${SOURCE_FORMAT} (what a VM disk is made from, as in the Go manager)`);
      if (info.backingFile !== undefined) throw new SourceError(`is itself an overlay on ${info.backingFile}: give the whole image (qemu-img convert)`);
      const id = hashing.identity;
      next = { path: this.path, sha384, dev: String(id.dev), ino: String(id.ino), size: String(id.size), mtimeNs: String(id.mtimeNs), virtualSize: info.virtualSize };
    } catch (err) {
      if (err instanceof FileChangedError) return false;
      const why = err instanceof SourceError ? err.message : `cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
      this.setUnusable(`the disk source ${this.path} (${SETTING}) ${why}`, now);
      return true;
    }
    this.state = { kind: 'pinned', pin: next };
    const known = pin?.sha384 === next.sha384;
    this.log.info({ path: this.path, sha384: next.sha384, virtual_size: next.virtualSize, ms: Math.round(performance.now() - t0) }, known ? 'disk source looked at again: same content' : 'disk source pinned');
    this.findCorrupt(next);
    for (const fn of this.pinnedListeners) fn(next);
    return true;
  }

  /** Dependents made on other content of the same inode: written in place under them. */
  private findCorrupt(pin: PinnedSource): void {
    const hit = [...this.dependents].filter(([id, d]) => sameInode(d, pin) && d.sha384 !== pin.sha384 && !this.corrupt.has(id)).map(([id]) => id);
    if (hit.length === 0) return;
    for (const id of hit) this.corrupt.add(id);
    this.log.error(
      { path: this.path, vms: this.corrupted, sha384: pin.sha384 },
      `the disk source was written in place while VM disks were overlays on it: the disks of ${this.corrupt.size} VM(s) are now corrupt; remove them (RemoveVm). CreateVm is refused until none is left`,
    );
  }

  private setUnusable(reason: string, seen?: DiskSourceIdentity): void {
    const was = this.state;
    this.state = { kind: 'unusable', reason, seen };
    if (was.kind !== 'unusable' || was.reason !== reason) this.log.error({ path: this.path }, `${reason}: CreateVm is refused until it is fixed`);
  }
}

class SourceError extends Error {}
