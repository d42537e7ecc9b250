/**
 * What a starting daemon finds of the VMs an earlier run left: each VM directory is to be
 * re-adopted (its QEMU still runs: same PID start time, the VM's directory in its command line),
 * cleaned up (its QEMU is gone, or it never finished starting: its caller never got an answer),
 * or skipped (the record cannot be read: nothing of it is touched).
 *
 * It runs in two steps around the opening of the API: before, only the records are read
 * (findLeftovers), so the daemon knows which ports, slots and processes earlier VMs may hold;
 * after, each VM is checked in /proc and re-adopted or cleaned (recoverVms), while calls are
 * served (a call about a VM not yet decided waits for it; see VmRegistry.settled).
 *
 * Paths are compared after realpath: a symlinked or relative MANAGER_STATE_DIR names the same
 * VMs as the path an earlier run put in QEMU's command line.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { commandRunsBinary } from '../qemu/args.js';
import { listVmDirs, type VmPaths, vmPaths, vmsRoot } from '../vm/vm-dir.js';
import { parseRecord, peekRecord, type RecordPeek, readRecordText, type VmGpu, type VmRecord } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import { SupervisedVm, type VmSurroundings } from './supervised-vm.js';
import type { HostProcesses, OutputLimits, VmDriver } from './vm-driver.port.js';
import type { VmRegistry } from './vm-registry.js';

/** A VM directory an earlier run left, with its record's text as read at start (read once). */
export interface Leftover {
  name: string;
  paths: VmPaths;
  /** The record's text, or why it could not be read ('no record file' when there is none). */
  record: { ok: true; text: string } | { ok: false; reason: string };
  /** What the record says of the process and port, before the schema is checked. */
  peek: RecordPeek | undefined;
}

export type RecoveryAction =
  | { kind: 'adopt'; name: string; paths: VmPaths; record: VmRecord }
  | { kind: 'clean'; name: string; paths: VmPaths; state: string; orphans: number[] }
  | { kind: 'skip'; name: string; paths: VmPaths; reason: string };

/** States a record is written in while its QEMU runs. */
const LIVE_STATES = new Set(['running', 'paused', 'stopping']);
/** Record files read at once at start: enough to keep the thread pool busy, few enough descriptors. */
const READ_CONCURRENCY = 32;
/**
 * VMs re-adopted or cleaned at once: two hide the thread pool's latency and keep each turn of
 * the event loop short, so calls served meanwhile are not held back (figures: bench/README.md,
 * "restart at scale").
 */
const RECOVER_CONCURRENCY = 2;

async function realOrSame(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch {
    return path.resolve(p);
  }
}

/** Whether an argument names the VM's directory, however the state directory was spelled. */
async function namesDir(cmd: string[], paths: VmPaths, realDir: string): Promise<boolean> {
  const name = path.basename(paths.dir);
  for (const arg of cmd) {
    if (arg.includes(paths.dir)) return true;
    // e.g. "local,id=cert_fs,path=/srv/link/vms/<id>/certs,...": the path up to /vms/<id>
    const at = arg.indexOf(`/vms/${name}`);
    if (at < 0) continue;
    const start = Math.max(arg.lastIndexOf('=', at), arg.lastIndexOf(',', at)) + 1;
    const candidate = arg.slice(start, at + `/vms/${name}`.length);
    if (candidate.startsWith('/') && (await realOrSame(candidate)) === realDir) return true;
  }
  return false;
}

/**
 * Processes started as this VM's QEMU: the binary first, second behind an interpreter, or
 * behind `sudo … --`, and the VM's directory in the arguments (so an operator's `tail -f` is spared).
 */
async function orphanQemus(paths: VmPaths, realDir: string, qemuBinPath: string, commandLines: Map<number, string[]>): Promise<number[]> {
  const qemuName = path.basename(qemuBinPath);
  const found: number[] = [];
  for (const [pid, cmd] of commandLines) {
    if (!commandRunsBinary(cmd, qemuName)) continue;
    if (await namesDir(cmd, paths, realDir)) found.push(pid);
  }
  return found;
}

/** Runs fn over items, at most `limit` at a time, keeping the order of the results. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Every VM directory and its record's text: all a starting daemon reads before it serves
 * (no /proc, no schema), so the start grows by one small read per VM.
 */
export async function findLeftovers(stateDir: string): Promise<Leftover[]> {
  return mapLimit(await listVmDirs(stateDir), READ_CONCURRENCY, async (name) => {
    const paths = vmPaths(stateDir, name);
    const record = await readRecordText(paths.dir);
    return { name, paths, record, peek: record.ok ? peekRecord(record.text) : undefined };
  });
}

/**
 * The leftovers whose QEMU may still run, by what their records say: the daemon holds their
 * ports and slots, and treats their processes as guests, until recovery has decided each.
 */
export function mayStillRun(l: Leftover): { id: string; pids: number[]; hostPort: number | null; uid: number | null; gpu: VmGpu | null } | undefined {
  const p = l.peek;
  if (!p || p.id !== l.name || p.pid === null || !LIVE_STATES.has(p.state)) return undefined;
  return { id: p.id, pids: [p.pid], hostPort: p.hostPort, uid: p.uid, gpu: p.gpu };
}

/**
 * The QEMUs still running for leftovers that are to be cleaned (a start cut short by the
 * daemon's death: no record, or one still 'starting'). Recovery kills them after the port
 * opens; until then they are reserved like the others, so their guests are refused. Reads
 * /proc's command lines once, and only when there is such a leftover (rare).
 */
export async function orphansToReserve(
  leftovers: Leftover[],
  stateDir: string,
  qemuBinPath: string,
  processes: HostProcesses,
): Promise<{ id: string; pids: number[]; hostPort: null }[]> {
  const toClean = leftovers.filter((l) => !mayStillRun(l));
  if (toClean.length === 0) return [];
  const lines = await processes.commandLines();
  const root = await realOrSame(vmsRoot(stateDir));
  const out: { id: string; pids: number[]; hostPort: null }[] = [];
  for (const l of toClean) {
    const pids = await orphanQemus(l.paths, path.join(root, l.name), qemuBinPath, lines);
    if (pids.length > 0) out.push({ id: l.name, pids, hostPort: null });
  }
  return out;
}

/** What to do with one leftover: /proc is asked about its process only now, after the port is open. */
export async function planOne(
  l: Leftover,
  realVmsRoot: string,
  qemuBinPath: string,
  processes: HostProcesses,
  commandLines: () => Promise<Map<number, string[]>> = onceCommandLines(processes),
): Promise<RecoveryAction> {
  const { name, paths } = l;
  // listVmDirs returns real directories only (no symlinks), so the real path follows from the root's.
  const realDir = path.join(realVmsRoot, name);
  const read = l.record.ok ? await parseRecord(l.record.text) : l.record;
  if (!read.ok && read.reason !== 'no record file') return { kind: 'skip', name, paths, reason: read.reason };
  const record = read.ok ? read.record : undefined;
  if (record && record.id !== name) return { kind: 'skip', name, paths, reason: `the record names another id (${record.id})` };
  const alive = record && record.pid !== null && record.pidStartTime !== null && (await processes.startTime(record.pid)) === record.pidStartTime;
  if (record && alive) {
    const cmd = (await processes.commandLine(record.pid!)) ?? [];
    if (LIVE_STATES.has(record.state) && (await namesDir(cmd, paths, realDir))) {
      return { kind: 'adopt', name, paths, record };
    }
  }
  return { kind: 'clean', name, paths, state: record?.state ?? 'no record', orphans: await orphanQemus(paths, realDir, qemuBinPath, await commandLines()) };
}

/** /proc's command lines, read on first need and once, however many VMs need cleaning (a host back from a reboot). */
function onceCommandLines(processes: HostProcesses): () => Promise<Map<number, string[]>> {
  let lines: Promise<Map<number, string[]>> | undefined;
  return () => (lines ??= processes.commandLines());
}

export interface RecoveryResult {
  adopted: number;
  cleaned: number;
  skipped: number;
  /** Directories that could not be removed (logged; the daemon starts anyway). */
  failed: number;
  /** Leftovers not looked at because the daemon began to stop (the next start takes them). */
  deferred: number;
}

/**
 * Re-adopts the VMs an earlier run left running; cleans up what belonged to VMs that are gone
 * or never finished starting. A corrupt record is reported and left alone; a directory that
 * cannot be removed is reported and counted, never a reason not to start. Each leftover is
 * settled in the registry as soon as it is decided, so a call waiting for that VM goes on.
 */
/** What recovery works with. */
export interface RecoveryContext {
  stateDir: string;
  qemuBinPath: string;
  registry: VmRegistry;
  driver: VmDriver;
  /** What an adopted VM needs from around it (the same as a launched one's). */
  around: VmSurroundings;
  log: Logger;
  policies?: AttestationPolicies;
  output: OutputLimits;
  stopping?: () => boolean;
  /** Guest isolation is on: a VM without a uid of its own is worth a warning. */
  isolation: boolean;
  /** QEMU under sudo: the group its user connects to the QMP socket with. */
  qmpGroup?: number;
}

/**
 * Re-adopts the VMs an earlier run left running; cleans up what belonged to VMs that are gone
 * or never finished starting. A corrupt record is reported and left alone; a directory that
 * cannot be removed is reported and counted, never a reason not to start. Each leftover is
 * settled in the registry as soon as it is decided, so a call waiting for that VM goes on.
 */
export async function recoverVms(leftovers: Leftover[], ctx: RecoveryContext): Promise<RecoveryResult> {
  const { registry, log } = ctx;
  const result: RecoveryResult = { adopted: 0, cleaned: 0, skipped: 0, failed: 0, deferred: 0 };
  const lines = onceCommandLines(ctx.driver.processes);
  const root = await realOrSame(vmsRoot(ctx.stateDir));
  // A few VMs at a time: each one's steps are small reads through the thread pool, and one
  // after another the thread would mostly wait.
  await mapLimit(leftovers, RECOVER_CONCURRENCY, async (l) => {
    if (ctx.stopping?.()) {
      result.deferred++;
      registry.settle(l.name, true);
      return;
    }
    const vmLog = log.child({ cvm_id: l.name });
    try {
      await act(await planOne(l, root, ctx.qemuBinPath, ctx.driver.processes, lines), result, vmLog, ctx);
    } catch (err) {
      // One VM's surprise must not leave the others unrecovered or a caller waiting.
      vmLog.error({ err: String(err) }, 'recovery of this VM failed; it is left as it is');
      result.skipped++;
    } finally {
      registry.settle(l.name);
    }
  });
  return result;
}

async function act(action: RecoveryAction, result: RecoveryResult, vmLog: Logger, ctx: RecoveryContext): Promise<void> {
  switch (action.kind) {
    case 'adopt':
      await adopt(action.record, action.paths, vmLog, ctx);
      result.adopted++;
      return;
    case 'skip':
      vmLog.error({ dir: action.paths.dir }, `VM record unreadable, VM skipped (fix or remove the directory by hand): ${action.reason}`);
      result.skipped++;
      return;
    case 'clean':
      for (const pid of action.orphans) {
        vmLog.warn({ pid }, 'killing a QEMU of a VM that never finished starting');
        try {
          ctx.driver.processes.kill(pid);
        } catch (err) {
          vmLog.error({ pid }, `could not kill it: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
        }
      }
      try {
        await ctx.around.files.remove(action.paths.dir);
        vmLog.info({ state: action.state }, 'cleaned up a VM that is no longer running');
        result.cleaned++;
      } catch (err) {
        vmLog.error({ dir: action.paths.dir }, `could not remove the directory of a VM that is no longer running: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
        result.failed++;
      }
      return;
  }
}

async function adopt(record: VmRecord, paths: VmPaths, log: Logger, ctx: RecoveryContext): Promise<void> {
  // QEMU's user must be able to connect to the new QMP socket: its own uid with guest
  // isolation, the sudo user's group under sudo.
  const handle = await ctx.driver.adopt(
    { vmId: record.id, pid: record.pid!, startTime: record.pidStartTime!, paths, qmp: { owner: record.runAs ?? undefined, group: ctx.qmpGroup }, output: ctx.output },
    log,
  );
  const vm = SupervisedVm.adopted(record, paths, handle, log, ctx.around);
  ctx.registry.add(vm, 're-adopted after a restart');
  await ctx.policies?.pinner.atAdoption(record, log, () => vm.persist());
  vm.supervise(true);
  log.info({ pid: record.pid, port: record.hostPort, expires_at: record.expiresAt, uid: record.runAs?.uid ?? null, gpu: record.gpu?.bdf ?? null }, 're-adopted a running VM');
  if (ctx.isolation && !record.runAs) {
    log.warn({ pid: record.pid }, "this VM's QEMU runs as the daemon's user (it was started before guest isolation, or with it off): its guest is not kept off the host by a uid of its own; remove and re-create the VM");
  }
}
