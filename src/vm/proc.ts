/**
 * What Linux's /proc says about a process: identity (start time, command line) and liveness.
 * Used to adopt only our own QEMU after a restart. Everything read here is world-readable, so it
 * also works for a root QEMU under sudo. (QEMU's own state comes from QMP.)
 */
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';

/** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot; stable for the life of the process. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state): a zombie has exited already.
    if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
    return rest[19];
  } catch {
    return undefined;
  }
}

export async function processCmdline(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    if (raw === '') return undefined;
    return raw.replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

// Whether a VM's forwarded port is bound is asked of the kernel by a bind, not read here.
export { portIsListening } from './port-bind.js';

/** Every process's command line, read once (recovery matches many VM directories against it). */
export async function allCommandLines(): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>();
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const cmd = await processCmdline(pid);
    if (cmd) out.set(pid, cmd);
  }
  return out;
}

/**
 * The processes below `pid`, breadth first, at most `limit`: QEMU below sudo. The whole tree, not
 * one level: sudo runs a monitor process between itself and the command when it gives the command
 * a pseudo-terminal (not for the daemon's detached, terminal-less QEMU, which is sudo's child:
 * seen with sudo 1.9.13, log_output too), and the walk costs one read per process. A process's
 * children are read from the world-readable /proc/<pid>/task/<pid>/children, those its main thread
 * forked: sudo is single-threaded and QEMU's other threads (vCPUs, I/O) fork nothing, so the other
 * tasks' files are not read. The one reader of these files: the launcher and recovery read a VM's
 * PIDs with it once, the peer check (socket-owner.ts) for a VM not up or not re-adopted yet.
 */
export function descendantPids(pid: number, limit = 64): number[] {
  const tree = [pid];
  for (let i = 0; i < tree.length && tree.length <= limit; i++) {
    const p = tree[i]!;
    let text: string;
    try {
      // Synchronous: microseconds a read. Through the thread pool, the peer check's reads queued
      // behind a restart's own and held a new connection's verdict back by ~300 ms at 500 VMs.
      text = readFileSync(childrenFile(p), 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    tree.push(...parseChildren(text));
  }
  return tree.slice(1, limit + 1);
}

const childrenFile = (pid: number) => `/proc/${pid}/task/${pid}/children`;

function parseChildren(text: string): number[] {
  const t = text.trim();
  return t === '' ? [] : t.split(/\s+/).map(Number).filter((n) => Number.isInteger(n) && n > 0);
}
