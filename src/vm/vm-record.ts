/**
 * A VM's record on disk (MANAGER_STATE_DIR/vms/<id>/record.json): what a restarted daemon needs
 * to re-adopt the VM. Written atomically; read back through a schema so a corrupt file is reported.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { z as Z } from 'zod';

export const RECORD_STATES = ['starting', 'running', 'paused', 'stopping', 'stopped', 'crashed', 'failed', 'exited'] as const;
export type RecordState = (typeof RECORD_STATES)[number];

/** A VM's record as written by this daemon. */
export interface VmRecord {
  version: 1;
  id: string;
  /** The VM's state (src/manager/vm-state.ts) when last written; 'exited' in records of earlier versions. */
  state: RecordState;
  pid: number | null;
  /** /proc/<pid>/stat start time, so a reused PID is never taken for this VM's QEMU. */
  pidStartTime: string | null;
  command: string[];
  hostPort: number;
  kernelCmdline: string;
  createdAt: string;
  expiresAt: string | null;
  exit: { code: number | null; signal: string | null; at: string; cause?: string } | null;
  /** What the VM was launched as, for its attestation policy (the configuration may change across restarts). */
  launch: {
    kind: 'sev-snp' | 'tdx' | 'plain';
    /** How the daemon decided the kind (src/config/cvm.ts); absent in records of earlier versions. */
    decision?: string;
    cpu: string;
    hostData: string | null;
    igvmFile: string | null;
  };
  /** The launch inputs as measured for this VM (absent in records written before pinning). */
  pinned?: LaunchPin;
  /**
   * The unprivileged identity QEMU runs as (a uid of MANAGER_VM_UID_RANGE, its own gid and the
   * device groups); null or absent: QEMU runs as the daemon's user (guest isolation off, or a
   * VM started before it existed).
   */
  runAs?: VmIdentity | null;
  /** The host GPU passed through to the VM (VFIO) and its IOMMU group; null or absent: none. */
  gpu?: VmGpu | null;
}

export interface VmGpu {
  bdf: string;
  iommuGroup: string;
}

/** A VM's own user: uid and gid (the same number) and the supplementary groups of its devices. */
export interface VmIdentity {
  uid: number;
  gid: number;
  groups: number[];
}

/** One file QEMU was given, by its SHA-384; `error` says why there is no digest. */
export interface PinnedFile {
  role: 'igvm' | 'firmware' | 'kernel' | 'initramfs';
  path: string;
  sha384: string | null;
  error: string | null;
}

/**
 * What a VM was launched from. 'create': hashed before QEMU started and found unchanged once it
 * was up; 'adoption': the record predates pinning, so the files were hashed when a restarted
 * daemon re-adopted the VM, after its launch.
 */
export interface LaunchPin {
  takenAt: 'create' | 'adoption';
  at: string;
  files: PinnedFile[];
  /** SEV-SNP: igvmmeasure's launch digest of the pinned IGVM content, hex (48 bytes). */
  snpLaunchMeasurement: string | null;
  /** Why there is no launch digest (SEV-SNP only). */
  measurementError: string | null;
}

/**
 * The schema records are checked against when read back. zod is loaded on first use: it costs
 * ~100 ms and ~10 MiB, and a daemon with no VM to re-adopt never needs it.
 */
let schema: Promise<Z.ZodType<VmRecord>> | undefined;
function recordSchema(): Promise<Z.ZodType<VmRecord>> {
  schema ??= import('zod').then(({ z }) =>
    z.object({
      version: z.literal(1),
      id: z.uuid(),
      state: z.enum(RECORD_STATES),
      pid: z.number().int().positive().nullable(),
      pidStartTime: z.string().nullable(),
      command: z.array(z.string()).min(1),
      hostPort: z.number().int().min(1).max(65535),
      kernelCmdline: z.string(),
      createdAt: z.iso.datetime(),
      expiresAt: z.iso.datetime().nullable(),
      exit: z.object({ code: z.number().nullable(), signal: z.string().nullable(), at: z.iso.datetime(), cause: z.string().optional() }).nullable(),
      launch: z.object({
        kind: z.enum(['sev-snp', 'tdx', 'plain']),
        decision: z.string().optional(),
        cpu: z.string(),
        hostData: z.string().nullable(),
        igvmFile: z.string().nullable(),
      }),
      pinned: z
        .object({
          takenAt: z.enum(['create', 'adoption']),
          at: z.iso.datetime(),
          files: z.array(
            z.object({
              role: z.enum(['igvm', 'firmware', 'kernel', 'initramfs']),
              path: z.string(),
              sha384: z.string().regex(/^[0-9a-f]{96}$/).nullable(),
              error: z.string().nullable(),
            }),
          ),
          snpLaunchMeasurement: z.string().regex(/^[0-9a-f]{96}$/).nullable(),
          measurementError: z.string().nullable(),
        })
        .optional(),
      runAs: z
        .object({ uid: z.number().int().positive(), gid: z.number().int().positive(), groups: z.array(z.number().int().nonnegative()) })
        .nullable()
        .optional(),
      gpu: z
        .object({ bdf: z.string().regex(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/), iommuGroup: z.string().regex(/^\d+$/) })
        .nullable()
        .optional(),
    }),
  );
  return schema;
}

export const RECORD_FILE = 'record.json';

export async function writeRecordAtomically(dir: string, record: VmRecord): Promise<void> {
  const target = path.join(dir, RECORD_FILE);
  const tmp = `${target}.tmp`;
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(record)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  // rename(2) is atomic: a reader (a restarted daemon) sees the old record or the new one, whole.
  await fs.rename(tmp, target);
}

export type RecordReadResult = { ok: true; record: VmRecord } | { ok: false; reason: string };

/** The record file's text, or why there is none ('no record file' when it does not exist). */
export async function readRecordText(dir: string): Promise<{ ok: true; text: string } | { ok: false; reason: string }> {
  try {
    return { ok: true, text: await fs.readFile(path.join(dir, RECORD_FILE), 'utf8') };
  } catch (err) {
    return { ok: false, reason: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no record file' : String(err) };
  }
}

/** What a starting daemon must know of a VM before it serves: which process and port it holds. */
export interface RecordPeek {
  id: string;
  state: string;
  pid: number | null;
  hostPort: number | null;
  /** The VM's own uid, held until recovery has decided the VM. */
  uid: number | null;
  /** Its GPU, held until recovery has decided the VM. */
  gpu: VmGpu | null;
}

/**
 * The fields a starting daemon reserves before it serves, without the schema (zod's load is
 * not worth holding the port closed for); parseRecord checks the whole record afterwards.
 */
export function peekRecord(text: string): RecordPeek | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof json !== 'object' || json === null) return undefined;
  const r = json as Record<string, unknown>;
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : null);
  if (typeof r.id !== 'string' || typeof r.state !== 'string') return undefined;
  const runAs = typeof r.runAs === 'object' && r.runAs !== null ? (r.runAs as Record<string, unknown>) : undefined;
  const g = typeof r.gpu === 'object' && r.gpu !== null ? (r.gpu as Record<string, unknown>) : undefined;
  const gpu = typeof g?.bdf === 'string' && typeof g.iommuGroup === 'string' ? { bdf: g.bdf, iommuGroup: g.iommuGroup } : null;
  return { id: r.id, state: r.state, pid: int(r.pid), hostPort: int(r.hostPort), uid: int(runAs?.uid), gpu };
}

export async function parseRecord(text: string): Promise<RecordReadResult> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'record is not valid JSON (truncated or corrupt)' };
  }
  const parsed = (await recordSchema()).safeParse(json);
  if (!parsed.success) return { ok: false, reason: `record does not match its schema: ${parsed.error.issues[0]?.message ?? ''}` };
  return { ok: true, record: parsed.data };
}
