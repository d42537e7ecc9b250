/**
 * What a starting daemon finds of the VMs an earlier run left: each VM directory is to be
 * re-adopted (its QEMU still runs: same PID start time, the VM's directory in its command line),
 * cleaned up (its QEMU is gone, or it never finished starting: its caller never got an answer),
 * or skipped (the record cannot be read: nothing of it is touched).
 */
import path from 'node:path';
import { allCommandLines, processCmdline, processStartTime } from '../vm/proc.js';
import { listVmDirs, type VmPaths, vmPaths } from '../vm/vm-dir.js';
import { readRecord, type VmRecord } from '../vm/vm-record.js';

export type RecoveryAction =
  | { kind: 'adopt'; name: string; paths: VmPaths; record: VmRecord }
  | { kind: 'clean'; name: string; paths: VmPaths; state: string; orphans: number[] }
  | { kind: 'skip'; name: string; paths: VmPaths; reason: string };

async function isOurQemu(record: VmRecord, paths: VmPaths): Promise<boolean> {
  if (record.pid === null || record.pidStartTime === null) return false;
  if ((await processStartTime(record.pid)) !== record.pidStartTime) return false;
  const cmd = await processCmdline(record.pid);
  return cmd !== undefined && cmd.some((arg) => arg.includes(paths.dir));
}

/**
 * Processes started as this VM's QEMU: the binary first, or second behind sudo or an
 * interpreter, and the VM's directory in the arguments (so an operator's `tail -f` is spared).
 */
function orphanQemus(paths: VmPaths, qemuBinPath: string, commandLines: Map<number, string[]>): number[] {
  const qemuName = path.basename(qemuBinPath);
  const needle = `${paths.dir}/`;
  const found: number[] = [];
  for (const [pid, cmd] of commandLines) {
    if (cmd.some((a) => a.includes(needle)) && cmd.slice(0, 2).some((a) => path.basename(a) === qemuName)) found.push(pid);
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
    if (record && record.state === 'running' && (await isOurQemu(record, paths))) {
      actions.push({ kind: 'adopt', name, paths, record });
      continue;
    }
    commandLines ??= await allCommandLines();
    actions.push({ kind: 'clean', name, paths, state: record?.state ?? 'no record', orphans: orphanQemus(paths, qemuBinPath, commandLines) });
  }
  return actions;
}
