/**
 * SHA-384 of a file, read as a stream (a large initramfs never blocks the event loop for more
 * than one chunk), together with the file's identity: device, inode, size, modification and
 * change times. The change time (ctime) cannot be set by a user (utimes sets it to now), so
 * an unchanged identity before and after some step means the bytes were not touched in between.
 */
import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';

export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export interface HashedFile {
  path: string;
  sha384: string;
  identity: FileIdentity;
}

/** The file changed while it was read, or between two looks at it. */
export class FileChangedError extends Error {}

const identity = (s: BigIntStats): FileIdentity => ({ dev: s.dev, ino: s.ino, size: s.size, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs });

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

export async function identityOf(file: string): Promise<FileIdentity> {
  return identity(await fs.stat(file, { bigint: true }));
}

// 256 KiB: as fast as larger reads, and each hash step holds the event loop ~0.5 ms.
const CHUNK = 256 << 10;

/** A file opened for hashing: its identity when it was opened, and its digest to come. */
export interface HashingFile {
  path: string;
  identity: FileIdentity;
  /** Rejects with FileChangedError if the file changed while it was read. */
  sha384: Promise<string>;
}

/**
 * Opens the file and takes its identity now; the digest follows, read as a stream. A caller
 * can start something that reads the same file meanwhile and check the identity afterwards.
 */
export async function startHashing(file: string): Promise<HashingFile> {
  const fh = await fs.open(file, 'r');
  let before: FileIdentity;
  try {
    before = identity(await fh.stat({ bigint: true }));
  } catch (err) {
    await fh.close();
    throw err;
  }
  const sha384 = (async () => {
    try {
      const hash = createHash('sha384');
      for await (const chunk of fh.createReadStream({ start: 0, highWaterMark: CHUNK, autoClose: false })) hash.update(chunk as Buffer);
      const after = identity(await fh.stat({ bigint: true }));
      if (!sameIdentity(before, after)) throw new FileChangedError(`${file} changed while it was being hashed`);
      return hash.digest('hex');
    } finally {
      await fh.close();
    }
  })();
  sha384.catch(() => undefined); // the caller sees the rejection; nothing is left unhandled if it never looks
  return { path: file, identity: before, sha384 };
}

export async function hashFile(file: string): Promise<HashedFile> {
  const h = await startHashing(file);
  return { path: file, sha384: await h.sha384, identity: h.identity };
}

/** Throws FileChangedError unless `file` is still the file that was hashed, untouched. */
export async function assertUnchanged(h: Pick<HashedFile, 'path' | 'identity'>): Promise<void> {
  let now: FileIdentity;
  try {
    now = await identityOf(h.path);
  } catch (err) {
    throw new FileChangedError(`${h.path} is gone (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (!sameIdentity(now, h.identity)) throw new FileChangedError(`${h.path} was replaced or written to`);
}
