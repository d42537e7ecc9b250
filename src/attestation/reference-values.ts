/**
 * What a genuine launch of a VM must show, per technology: the values an attestation policy
 * carries, independent of how it is encoded (CoRIM or JSON).
 */
import type { AttestationConfig, SnpProduct } from '../config/types.js';
import type { PcrValues } from './pcr-values.js';

/**
 * Where the values come from: the files the VM was launched from, by SHA-384, and when they
 * were pinned ('create': before the launch; 'adoption': after it, for an older VM).
 */
export interface LaunchProvenance {
  pinned: 'create' | 'adoption';
  files: { role: string; path: string; sha384: string }[];
}

export interface SnpReferenceValues {
  kind: 'sev-snp';
  /** SNP launch digest, 48 bytes. */
  measurement: Uint8Array;
  /** 32 bytes, when the VM was launched with host data. */
  hostData: Uint8Array | undefined;
  guestPolicy: bigint;
  vmpl: number;
  minimumLaunchTcb: bigint;
  product: SnpProduct;
  pcrs: PcrValues | undefined;
  launch?: LaunchProvenance | undefined;
}

export interface TdxReferenceValues {
  kind: 'tdx';
  mrtd: Uint8Array | undefined;
  rtmrs: (Uint8Array | undefined)[];
  mrseam: Uint8Array | undefined;
  tdAttributes: Uint8Array | undefined;
  xfam: Uint8Array | undefined;
  minTeeTcbSvn: Uint8Array | undefined;
  pcrs: PcrValues | undefined;
  launch?: LaunchProvenance | undefined;
}

export type ReferenceValues = SnpReferenceValues | TdxReferenceValues;

/** EPYC (and anything unknown) → Milan, unless the operator says otherwise. */
export function snpProduct(cpu: string, configured: SnpProduct | ''): SnpProduct {
  if (configured !== '') return configured;
  const c = cpu.toLowerCase();
  if (c.includes('turin')) return 'Turin';
  if (c.includes('genoa')) return 'Genoa';
  return 'Milan';
}

const hex = (s: string): Uint8Array | undefined => (s === '' ? undefined : Uint8Array.from(Buffer.from(s, 'hex')));

export function snpReferenceValues(
  a: AttestationConfig,
  launch: { measurement: Uint8Array; hostDataBase64: string | null; cpu: string },
  pcrs: PcrValues | undefined,
): SnpReferenceValues {
  return {
    kind: 'sev-snp',
    measurement: launch.measurement,
    hostData: launch.hostDataBase64 ? Uint8Array.from(Buffer.from(launch.hostDataBase64, 'base64')) : undefined,
    guestPolicy: a.snpGuestPolicy,
    vmpl: a.snpVmpl,
    minimumLaunchTcb: a.snpMinLaunchTcb,
    product: snpProduct(launch.cpu, a.snpProduct),
    pcrs,
  };
}

export function tdxReferenceValues(a: AttestationConfig, pcrs: PcrValues | undefined): TdxReferenceValues {
  return {
    kind: 'tdx',
    mrtd: hex(a.tdx.mrtd),
    rtmrs: a.tdx.rtmr.map(hex),
    mrseam: hex(a.tdx.mrseam),
    tdAttributes: hex(a.tdx.tdAttributes),
    xfam: hex(a.tdx.xfam),
    minTeeTcbSvn: hex(a.tdx.minTeeTcbSvn),
    pcrs,
  };
}

/** A 64-bit unsigned integer as 8 big-endian bytes. */
export function u64be(n: bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return Uint8Array.from(b);
}
