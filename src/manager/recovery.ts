/**
 * What a starting daemon finds of the VMs an earlier run left: each VM directory is to be
 * re-adopted (its QEMU still runs: same PID start time, the VM's directory in its command line),
 * cleaned up (its QEMU is gone, or it never finished starting: its caller never got an answer),
 * or skipped (the record cannot be read: nothing of it is touched).
 *
 * Paths are compared after realpath: a symlinked or relative MANAGER_STATE_DIR names the same
 * VMs as the path an earlier run put in QEMU's command line.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { allCommandLines, childPids, processCmdline, processStartTime } from '../vm/proc.js';
import { type OutputLimits, QemuProcess } from '../vm/qemu-process.js';
import { QmpChannel } from '../vm/qmp.js';
import { listVmDirs, removeVmDir, type VmPaths, vmPaths } from '../vm/vm-dir.js';
import { readRecord, type VmRecord } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import type { VmRegistry } from './vm-registry.js';
import { VmStateMachine } from './vm-state.js';

export type RecoveryAction =
  | { kind: 'adopt'; name: string; paths: VmPaths; record: VmRecord }
  | { kind: 'clean'; name: string; paths: VmPaths; state: string; orphans: number[] }
  | { kind: 'skip'; name: string; paths: VmPaths; reason: string };

/** States a record is written in while its QEMU runs. */
const LIVE_STATES = new Set(['running', 'paused', 'stopping']);

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
 * Processes started as this VM's QEMU: the binary first, or second behind sudo or an
 * interpreter, and the VM's directory in the arguments (so an operator's `tail -f` is spared).
 */
async function orphanQemus(paths: VmPaths, realDir: string, qemuBinPath: string, commandLines: Map<number, string[]>): Promise<number[]> {
  const qemuName = path.basename(qemuBinPath);
  const found: number[] = [];
  for (const [pid, cmd] of commandLines) {
    if (!cmd.slice(0, 2).some((a) => path.basename(a) === qemuName)) continue;
    if (await namesDir(cmd, paths, realDir)) found.push(pid);
  }
  return found;
}

export async function planRecovery(stateDir: string, qemuBinPath: string): Promise<RecoveryAction[]> {
  const actions: RecoveryAction[] = [];
  // /proc is read once, however many VM directories there are (a host back from a reboot has
  // one per VM it ran, all to clean).
  let commandLines: Map<number, string[]> | undefined;
  for (const name of await listVmDirs(stateDir)) {
    const paths = vmPaths(stateDir, name);
    const realDir = await realOrSame(paths.dir);
    const read = await readRecord(paths.dir);
    if (!read.ok && read.reason !== 'no record file') {
      actions.push({ kind: 'skip', name, paths, reason: read.reason });
      continue;
    }
    const record = read.ok ? read.record : undefined;
    if (record && record.id !== name) {
      actions.push({ kind: 'skip', name, paths, reason: `the record names another id (${record.id})` });
      continue;
    }
    const alive = record && record.pid !== null && record.pidStartTime !== null && (await processStartTime(record.pid)) === record.pidStartTime;
    if (record && alive) {
      const cmd = (await processCmdline(record.pid!)) ?? [];
      if (LIVE_STATES.has(record.state) && (await namesDir(cmd, paths, realDir))) {
        actions.push({ kind: 'adopt', name, paths, record });
        continue;
      }
    }
    commandLines ??= await allCommandLines();
    actions.push({ kind: 'clean', name, paths, state: record?.state ?? 'no record', orphans: await orphanQemus(paths, realDir, qemuBinPath, commandLines) });
  }
  return actions;
}

export interface RecoveryResult {
  adopted: number;
  cleaned: number;
  skipped: number;
  /** Directories that could not be removed (logged; the daemon starts anyway). */
  failed: number;
}

/**
 * Re-adopts the VMs an earlier run left running; cleans up what belonged to VMs that are gone
 * or never finished starting. A corrupt record is reported and left alone; a directory that
 * cannot be removed is reported and counted, never a reason not to start.
 */
export async function recoverVms(
  stateDir: string,
  qemuBinPath: string,
  registry: VmRegistry,
  log: Logger,
  policies?: AttestationPolicies,
  output?: Omit<OutputLimits, 'vmId'>,
): Promise<RecoveryResult> {
  const result: RecoveryResult = { adopted: 0, cleaned: 0, skipped: 0, failed: 0 };
  for (const action of await planRecovery(stateDir, qemuBinPath)) {
    const vmLog = log.child({ cvm_id: action.name });
    switch (action.kind) {
      case 'adopt':
        await adopt(action.record, action.paths, registry, vmLog, policies, output);
        result.adopted++;
        break;
      case 'skip':
        vmLog.error({ dir: action.paths.dir }, `VM record unreadable, VM skipped (fix or remove the directory by hand): ${action.reason}`);
        result.skipped++;
        break;
      case 'clean':
        for (const pid of action.orphans) {
          vmLog.warn({ pid }, 'killing a QEMU of a VM that never finished starting');
          try {
            process.kill(pid, 'SIGKILL');
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ESRCH') vmLog.error({ pid }, `could not kill it: ${(err as NodeJS.ErrnoException).code}`);
          }
        }
        try {
          await removeVmDir(action.paths.dir);
          vmLog.info({ state: action.state }, 'cleaned up a VM that is no longer running');
          result.cleaned++;
        } catch (err) {
          vmLog.error({ dir: action.paths.dir }, `could not remove the directory of a VM that is no longer running: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
          result.failed++;
        }
        break;
    }
  }
  return result;
}

async function adopt(record: VmRecord, paths: VmPaths, registry: VmRegistry, log: Logger, policies?: AttestationPolicies, output?: Omit<OutputLimits, 'vmId'>): Promise<void> {
  // QEMU reconnects to the new listener by itself (chardev reconnect) and is asked its status then.
  const qmp = new QmpChannel(paths.qmpSocket);
  await qmp.listen().catch((err) => log.error({ err: String(err) }, "could not reopen the VM's QMP socket"));
  const proc = await QemuProcess.adopt(record.pid!, record.pidStartTime!, paths, qmp, log, output && { vmId: record.id, ...output });
  const state = record.state === 'paused' || record.state === 'stopping' ? record.state : 'running';
  const vm = {
    id: record.id,
    machine: new VmStateMachine(state),
    createdAt: record.createdAt,
    log,
    hostPort: record.hostPort,
    record,
    paths,
    proc,
    qmp,
    qemuPids: await childPids(record.pid!),
    ttl: undefined,
    removing: undefined,
  };
  registry.adopt(vm);
  await policies?.pinner.atAdoption(record, log, () => registry.persist(vm));
  registry.supervise(vm);
  log.info({ pid: record.pid, port: record.hostPort, expires_at: record.expiresAt }, 're-adopted a running VM');
}
