/**
 * Reference values as a CoRIM (draft-ietf-rats-corim): the unsigned-corim-map under tag 501,
 * holding one CoMID (tag 506 over a byte string) with one reference-value triple.
 *
 * Measurement mapping (mkey is a text naming what is measured):
 *   SEV-SNP  "launch-measurement"  digests [[7 (sha-384), 48 bytes]]
 *            "host-data"           raw-value 560(32 bytes)        (only when launched with host data)
 *            "guest-policy"        raw-value 560(8 bytes, big-endian)
 *            "vmpl"                raw-value 560(1 byte)
 *            "minimum-launch-tcb"  svn 553(min-svn: the 64-bit TCB)
 *   TDX      "MRTD", "RTMR0".."RTMR3", "MRSEAM"  digests [[7, 48 bytes]]
 *            "td-attributes", "xfam", "minimum-tee-tcb-svn"  raw-value 560(bytes)
 *   vTPM     "vtpm-pcrs"           integrity-registers {index: [[1, sha256], [7, sha384]]}
 *
 * The CoMID also says which files the values were pinned from, under the text key
 * "launch-inputs" (an extension of the CoMID map, outside the triples, so a verifier that does
 * not know it matches nothing against it): {"pinned": "create" | "adoption",
 * "files": [{"role", "path", "digest": [7, 48 bytes]}]}.
 */
import { encode, Tag } from 'cbor2';
import { plainBytes } from './cose.js';
import type { PcrValues } from './pcr-values.js';
import { type ReferenceValues, u64be } from './reference-values.js';

export const TAG_UNSIGNED_CORIM = 501;
export const TAG_COMID = 506;
export const TAG_UUID = 37;
export const TAG_BYTES = 560;
export const TAG_MIN_SVN = 553;
/** CoMID map key of the launch provenance (see above). */
export const LAUNCH_INPUTS_KEY = 'launch-inputs';

/** IANA Named Information hash algorithm ids. */
export const ALG_SHA256 = 1;
export const ALG_SHA384 = 7;
export const ALG_SHA512 = 8;

/** The algorithm id whose digest length is `length` bytes. */
export function algForLength(length: number): number {
  switch (length) {
    case 32:
      return ALG_SHA256;
    case 48:
      return ALG_SHA384;
    case 64:
      return ALG_SHA512;
    default:
      throw new Error(`no digest algorithm has ${length}-byte values`);
  }
}

type Measurement = Map<number, unknown>;

const digest = (mkey: string, value: Uint8Array): Measurement =>
  new Map<number, unknown>([
    [0, mkey],
    [1, new Map([[2, [[algForLength(value.length), plainBytes(value)]]]])],
  ]);

const raw = (mkey: string, value: Uint8Array): Measurement =>
  new Map<number, unknown>([
    [0, mkey],
    [1, new Map([[4, new Tag(TAG_BYTES, plainBytes(value))]])],
  ]);

function pcrMeasurement(p: PcrValues): Measurement | undefined {
  const registers = new Map<number, [number, Uint8Array][]>();
  const add = (index: number, hex: string) => {
    const bytes = Uint8Array.from(Buffer.from(hex, 'hex'));
    const list = registers.get(index) ?? [];
    list.push([algForLength(bytes.length), bytes]);
    registers.set(index, list);
  };
  for (const [i, v] of p.sha256) add(i, v);
  for (const [i, v] of p.sha384) add(i, v);
  if (registers.size === 0) return undefined;
  const sorted = new Map([...registers.entries()].sort(([a], [b]) => a - b));
  return new Map<number, unknown>([
    [0, 'vtpm-pcrs'],
    [1, new Map([[14, sorted]])],
  ]);
}

function environmentAndMeasurements(rv: ReferenceValues): [Map<number, unknown>, Measurement[]] {
  const m: Measurement[] = [];
  let vendor: string;
  let model: string;
  if (rv.kind === 'sev-snp') {
    vendor = 'AMD';
    model = `SEV-SNP ${rv.product}`;
    m.push(digest('launch-measurement', rv.measurement));
    if (rv.hostData) m.push(raw('host-data', rv.hostData));
    m.push(raw('guest-policy', u64be(rv.guestPolicy)));
    m.push(raw('vmpl', Uint8Array.of(rv.vmpl)));
    m.push(new Map<number, unknown>([[0, 'minimum-launch-tcb'], [1, new Map([[1, new Tag(TAG_MIN_SVN, rv.minimumLaunchTcb)]])]]));
  } else {
    vendor = 'Intel';
    model = 'TDX';
    if (rv.mrtd) m.push(digest('MRTD', rv.mrtd));
    rv.rtmrs.forEach((r, i) => r && m.push(digest(`RTMR${i}`, r)));
    if (rv.mrseam) m.push(digest('MRSEAM', rv.mrseam));
    if (rv.tdAttributes) m.push(raw('td-attributes', rv.tdAttributes));
    if (rv.xfam) m.push(raw('xfam', rv.xfam));
    if (rv.minTeeTcbSvn) m.push(raw('minimum-tee-tcb-svn', rv.minTeeTcbSvn));
  }
  if (rv.pcrs) {
    const pcr = pcrMeasurement(rv.pcrs);
    if (pcr) m.push(pcr);
  }
  const env = new Map<number, unknown>([[0, new Map<number, unknown>([[1, vendor], [2, model]])]]);
  return [env, m];
}

export function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replaceAll('-', '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a UUID: ${uuid}`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** The CoMID map of the VM `vmId`. */
export function comidMap(vmId: string, rv: ReferenceValues): Map<number | string, unknown> {
  const [env, measurements] = environmentAndMeasurements(rv);
  // The CDDL asks for [+ measurement-map]; an empty list would hold a verifier to nothing.
  if (measurements.length === 0) throw new Error('refusing to write a reference-value triple without measurements');
  const comid = new Map<number | string, unknown>([
    [1, new Map([[0, uuidBytes(vmId)]])],
    [2, [new Map<number, unknown>([[0, 'cocos-manager'], [2, [0]]])]], // role 0: tag-creator
    [4, new Map([[0, [[env, measurements]]]])],
  ]);
  if (rv.launch) {
    comid.set(
      LAUNCH_INPUTS_KEY,
      new Map<string, unknown>([
        ['pinned', rv.launch.pinned],
        [
          'files',
          rv.launch.files.map(
            (f) =>
              new Map<string, unknown>([
                ['role', f.role],
                ['path', f.path],
                ['digest', [ALG_SHA384, Uint8Array.from(Buffer.from(f.sha384, 'hex'))]],
              ]),
          ),
        ],
      ]),
    );
  }
  return comid;
}

/** The tagged unsigned CoRIM, encoded. */
export function encodeUnsignedCorim(vmId: string, rv: ReferenceValues): Uint8Array {
  const comid = encode(comidMap(vmId, rv));
  const corim = new Map<number, unknown>([
    [0, uuidBytes(vmId)],
    [1, [new Tag(TAG_COMID, comid)]],
  ]);
  return encode(new Tag(TAG_UNSIGNED_CORIM, corim));
}
