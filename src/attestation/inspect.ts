/**
 * Reads an attestation policy in any form this project or another CoRIM producer writes
 * (COSE-signed CoRIM, unsigned CoRIM, the Go CoRIM 1.1.x tag form, or the JSON policy) and
 * turns it into plain JSON for a person to read.
 */
import type { KeyObject } from 'node:crypto';
import { decode, Tag } from 'cbor2';
import { openSign1, TAG_COSE_SIGN1 } from './cose.js';
import { LAUNCH_INPUTS_KEY, TAG_COMID, TAG_UNSIGNED_CORIM } from './corim.js';

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

/** What a policy holds a VM to, and which launch files those values were pinned from. */
export interface Pins {
  /** The reference values a verifier checks: measurement keys (CoRIM) or the fields set (JSON). */
  asserts: string[];
  /** When the launch values were taken; absent when the policy does not say (another producer). */
  pinned?: string;
  /** The files the launch values describe, by SHA-384 (hex). */
  fromFiles?: { role: string; path: string; sha384: string }[];
}

export interface Inspected {
  format: 'signed-corim' | 'corim' | 'comid' | 'json';
  signature?: 'verified' | 'not checked';
  contentType?: string;
  pins: Pins;
  corim?: unknown;
  comid?: unknown;
  policy?: unknown;
}

const WHEN: Record<string, string> = {
  create: 'at CreateVm, before QEMU started (and checked unchanged once it was up)',
  adoption: 'when a restarted manager re-adopted the VM, after its launch (the VM predates pinning)',
};

const hexOf = (v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : String(v));

/** A field of a decoded CBOR map (a Map, or a plain object when all its keys are text). */
function field(m: unknown, key: string): unknown {
  if (m instanceof Map) return m.get(key);
  return m !== null && typeof m === 'object' && !Array.isArray(m) ? (m as Record<string, unknown>)[key] : undefined;
}

function pinsOfComids(comids: Map<unknown, unknown>[]): Pins {
  const pins: Pins = { asserts: [] };
  for (const comid of comids) {
    const triples = (comid.get(4) as Map<unknown, unknown> | undefined)?.get(0);
    for (const triple of Array.isArray(triples) ? triples : []) {
      const measurements = Array.isArray(triple) ? triple[1] : undefined;
      for (const [i, m] of (Array.isArray(measurements) ? measurements : []).entries()) {
        const mkey = m instanceof Map ? m.get(0) : undefined;
        pins.asserts.push(mkey === undefined ? `measurement ${i}` : typeof mkey === 'string' ? mkey : JSON.stringify(toReadable(mkey)));
      }
    }
    const launch = comid.get(LAUNCH_INPUTS_KEY);
    if (launch !== undefined) {
      const pinned = String(field(launch, 'pinned'));
      pins.pinned = WHEN[pinned] ?? pinned;
      const files = field(launch, 'files');
      pins.fromFiles = (Array.isArray(files) ? files : []).map((f: unknown) => ({
        role: String(field(f, 'role')),
        path: String(field(f, 'path')),
        sha384: hexOf((field(f, 'digest') as unknown[] | undefined)?.[1]),
      }));
    }
  }
  return pins;
}

function pinsOfJson(doc: Record<string, unknown>): Pins {
  const set = (v: unknown): boolean =>
    v !== null && v !== undefined && !(Array.isArray(v) && v.every((x) => x === null)) && !(typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => !set(x)));
  const policy = (doc.policy ?? {}) as Record<string, unknown>;
  const pins: Pins = { asserts: Object.keys(policy).filter((k) => set(policy[k])) };
  if (set(doc.pcr_values)) pins.asserts.push('pcr_values');
  const launch = doc.launch_inputs as { pinned?: string; files?: Pins['fromFiles'] } | undefined;
  if (launch) {
    pins.pinned = WHEN[String(launch.pinned)] ?? String(launch.pinned);
    pins.fromFiles = launch.files ?? [];
  }
  return pins;
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

function readableCorim(tagged: unknown): { pins: Pins; corim: unknown } {
  if (!(tagged instanceof Tag) || Number(tagged.tag) !== TAG_UNSIGNED_CORIM) throw new Error('not an unsigned CoRIM (CBOR tag 501)');
  const corim = tagged.contents as Map<unknown, unknown>;
  const comids = comidsOf(corim);
  return { pins: pinsOfComids(comids), corim: { id: toReadable(corim.get(0)), comids: comids.map(toReadable) } };
}

export function inspectPolicy(bytes: Uint8Array, publicKey?: KeyObject): Inspected {
  const first = bytes[0];
  if (first === 0x7b /* { */ || first === 0x20 || first === 0x0a) {
    const policy = JSON.parse(Buffer.from(bytes).toString('utf8'));
    return { format: 'json', pins: pinsOfJson(policy), policy };
  }
  const top = decode(bytes);
  if (top instanceof Tag && Number(top.tag) === TAG_COSE_SIGN1) {
    const s = openSign1(bytes, publicKey);
    if (publicKey && !s.verified) throw new Error('signature does not verify with the given key');
    return {
      format: 'signed-corim',
      signature: publicKey ? 'verified' : 'not checked',
      contentType: String(s.protectedHeader.get(3)),
      ...readableCorim(decode(s.payload)),
    };
  }
  if (top instanceof Map) return { format: 'comid', pins: pinsOfComids([top]), comid: toReadable(top) };
  return { format: 'corim', ...readableCorim(top) };
}
