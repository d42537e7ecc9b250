/**
 * COSE_Sign1 (RFC 9052) over a CoRIM: tag 18, ES256, content type application/rim+cbor.
 * Node's crypto signs (ECDSA P-256, r‖s form); no COSE library needed for one algorithm.
 */
import { createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { decode, encode, Tag } from 'cbor2';

export const TAG_COSE_SIGN1 = 18;
export const COSE_ALG_ES256 = -7;
export const CORIM_CONTENT_TYPE = 'application/rim+cbor';

/**
 * A plain Uint8Array view: cbor2 encodes a Node Buffer through its toJSON ({type, data}), not as a
 * byte string, so bytes decoded from a Buffer must be unwrapped before they are encoded again.
 */
export function plainBytes(b: Uint8Array): Uint8Array {
  return Buffer.isBuffer(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : b;
}

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return encode(['Signature1', plainBytes(protectedBytes), new Uint8Array(0), plainBytes(payload)]);
}

export function signCorim(payload: Uint8Array, key: KeyObject, signer = 'cocos-manager'): Uint8Array {
  const protectedHeader = new Map<number, unknown>([
    [1, COSE_ALG_ES256],
    [3, CORIM_CONTENT_TYPE],
    [8, encode(new Map([[0, new Map([[0, signer]])]]))], // corim-meta: signer name
  ]);
  const protectedBytes = encode(protectedHeader);
  const signature = sign('sha256', sigStructure(protectedBytes, payload), { key, dsaEncoding: 'ieee-p1363' });
  return encode(new Tag(TAG_COSE_SIGN1, [protectedBytes, new Map(), plainBytes(payload), Uint8Array.from(signature)]));
}

export interface Sign1 {
  protectedHeader: Map<unknown, unknown>;
  payload: Uint8Array;
  verified: boolean | undefined;
}

/** Splits a COSE_Sign1; verifies it when a public key is given. */
export function openSign1(bytes: Uint8Array, publicKey?: KeyObject): Sign1 {
  const outer = decode(bytes) as Tag;
  if (!(outer instanceof Tag) || Number(outer.tag) !== TAG_COSE_SIGN1) throw new Error('not a COSE_Sign1 (CBOR tag 18)');
  const [protectedBytes, , payload, signature] = outer.contents as [Uint8Array, unknown, Uint8Array, Uint8Array];
  const protectedHeader = decode(protectedBytes) as Map<unknown, unknown>;
  let verified: boolean | undefined;
  if (publicKey) {
    if (protectedHeader.get(1) !== COSE_ALG_ES256) throw new Error(`unsupported COSE algorithm ${String(protectedHeader.get(1))}`);
    verified = verify('sha256', sigStructure(protectedBytes, payload), { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  }
  return { protectedHeader, payload, verified };
}

export function publicKeyOf(key: KeyObject): KeyObject {
  return createPublicKey(key);
}
