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

export async function hashFile(file: string): Promise<HashedFile> {
  const fh = await fs.open(file, 'r');
  try {
    const before = identity(await fh.stat({ bigint: true }));
    const hash = createHash('sha384');
    for await (const chunk of fh.createReadStream({ start: 0, highWaterMark: CHUNK, autoClose: false })) hash.update(chunk as Buffer);
    const after = identity(await fh.stat({ bigint: true }));
    if (!sameIdentity(before, after)) throw new FileChangedError(`${file} changed while it was being hashed`);
    return { path: file, sha384: hash.digest('hex'), identity: before };
  } finally {
    await fh.close();
  }
}

/** Throws FileChangedError unless `file` is still the file that was hashed, untouched. */
export async function assertUnchanged(h: HashedFile): Promise<void> {
  let now: FileIdentity;
  try {
    now = await identityOf(h.path);
  } catch (err) {
    throw new FileChangedError(`${h.path} is gone (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (!sameIdentity(now, h.identity)) throw new FileChangedError(`${h.path} was replaced or written to`);
}
