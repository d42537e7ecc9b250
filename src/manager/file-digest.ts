/**
 * SHA-384 of a file, read as a stream (a large initramfs never blocks the event loop for more
 * than one chunk), together with the file's identity: device, inode, size, modification and
 * change times. The change time (ctime) cannot be set by a user (utimes sets it to now), so
 * an unchanged identity before and after some step means the bytes were not touched in between.
 *
 * For the same reason a digest is remembered with the identity it was taken at: a file opened
 * again with that identity is not read again (every CreateVm pins the same firmware, kernel and
 * initramfs; reading and hashing them each time cost each launch milliseconds of the event loop).
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
 * A file's change time is kept at the file system's granularity (a jiffy on ext4, up to 2 s on
 * others): a write in the same tick as the end of a hash could leave the identity as it was.
 * A digest is remembered only for a file whose ctime was this long before the hash began, so any
 * later write moves the ctime past the one remembered.
 */
const SETTLED_NS = 2_000_000_000n;

/** The digest of each file by path, with the identity the file kept throughout its hash. */
const digests = new Map<string, { identity: FileIdentity; sha384: string }>();

/**
 * Opens the file and takes its identity now; the digest follows, read as a stream (or is the
 * one remembered for this very identity). A caller can start something that reads the same
 * file meanwhile and check the identity afterwards.
 */
export async function startHashing(file: string): Promise<HashingFile> {
  const openedAtNs = BigInt(Date.now()) * 1_000_000n;
  const fh = await fs.open(file, 'r');
  let before: FileIdentity;
  try {
    before = identity(await fh.stat({ bigint: true }));
  } catch (err) {
    await fh.close();
    throw err;
  }
  const known = digests.get(file);
  if (known && sameIdentity(known.identity, before)) {
    await fh.close();
    return { path: file, identity: before, sha384: Promise.resolve(known.sha384) };
  }
  const sha384 = (async () => {
    try {
      const hash = createHash('sha384');
      for await (const chunk of fh.createReadStream({ start: 0, highWaterMark: CHUNK, autoClose: false })) hash.update(chunk as Buffer);
      const after = identity(await fh.stat({ bigint: true }));
      if (!sameIdentity(before, after)) throw new FileChangedError(`${file} changed while it was being hashed`);
      const digest = hash.digest('hex');
      if (before.ctimeNs + SETTLED_NS < openedAtNs) digests.set(file, { identity: before, sha384: digest });
      else digests.delete(file);
      return digest;
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
