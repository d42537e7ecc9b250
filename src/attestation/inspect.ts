/**
 * Reads an attestation policy in any form this project or another CoRIM producer writes
 * (COSE-signed CoRIM, unsigned CoRIM, the Go CoRIM 1.1.x tag form, or the JSON policy) and
 * turns it into plain JSON for a person to read.
 */
import type { KeyObject } from 'node:crypto';
import { decode, Tag } from 'cbor2';
import { openSign1, TAG_COSE_SIGN1 } from './cose.js';
import { TAG_COMID, TAG_UNSIGNED_CORIM } from './corim.js';

/** Bytes d9 01 fa: tag 506 written inside the byte string, as Go CoRIM 1.1.x readers expect. */
const GO_COMID_PREFIX = [0xd9, 0x01, 0xfa];

/** The CoMID maps of an unsigned CoRIM, whichever form each tag is in. */
export function comidsOf(corim: Map<unknown, unknown>): Map<unknown, unknown>[] {
  const tags = corim.get(1);
  if (!Array.isArray(tags)) throw new Error('CoRIM has no tag list (key 1)');
  return tags.map((t, i) => {
    let inner: unknown = t;
    if (inner instanceof Tag) {
      if (Number(inner.tag) !== TAG_COMID) throw new Error(`tag ${i} is CBOR tag ${inner.tag}, not a CoMID (506)`);
      inner = inner.contents;
    }
    if (inner instanceof Uint8Array) {
      const bytes = GO_COMID_PREFIX.every((b, j) => inner instanceof Uint8Array && inner[j] === b) ? inner.subarray(3) : inner;
      inner = decode(bytes);
    }
    if (!(inner instanceof Map)) throw new Error(`tag ${i} is not a CoMID map`);
    return inner;
  });
}

export interface Inspected {
  format: 'signed-corim' | 'corim' | 'comid' | 'json';
  signature?: 'verified' | 'not checked';
  contentType?: string;
  corim?: unknown;
  comid?: unknown;
  policy?: unknown;
}

/** CBOR values as JSON: maps keep their keys, bytes become hex, tags {"tag": n, "value": v}. */
export function toReadable(v: unknown): unknown {
  if (v instanceof Tag) return { tag: Number(v.tag), value: toReadable(v.contents) };
  if (v instanceof Uint8Array) return `h'${Buffer.from(v).toString('hex')}'`;
  if (v instanceof Map) return Object.fromEntries([...v.entries()].map(([k, x]) => [String(k), toReadable(x)]));
  if (Array.isArray(v)) return v.map(toReadable);
  if (typeof v === 'bigint') return v.toString();
  return v;
}

function readableCorim(tagged: unknown): unknown {
  if (!(tagged instanceof Tag) || Number(tagged.tag) !== TAG_UNSIGNED_CORIM) throw new Error('not an unsigned CoRIM (CBOR tag 501)');
  const corim = tagged.contents as Map<unknown, unknown>;
  return { id: toReadable(corim.get(0)), comids: comidsOf(corim).map(toReadable) };
}

export function inspectPolicy(bytes: Uint8Array, publicKey?: KeyObject): Inspected {
  const first = bytes[0];
  if (first === 0x7b /* { */ || first === 0x20 || first === 0x0a) {
    return { format: 'json', policy: JSON.parse(Buffer.from(bytes).toString('utf8')) };
  }
  const top = decode(bytes);
  if (top instanceof Tag && Number(top.tag) === TAG_COSE_SIGN1) {
    const s = openSign1(bytes, publicKey);
    if (publicKey && !s.verified) throw new Error('signature does not verify with the given key');
    return {
      format: 'signed-corim',
      signature: publicKey ? 'verified' : 'not checked',
      contentType: String(s.protectedHeader.get(3)),
      corim: readableCorim(decode(s.payload)),
    };
  }
  if (top instanceof Map) return { format: 'comid', comid: toReadable(top) };
  return { format: 'corim', corim: readableCorim(top) };
}
