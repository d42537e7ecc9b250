/**
 * What Linux's /proc says about a process: identity (start time, command line) and liveness,
 * and whether a TCP port is listened on. Used to adopt only our own QEMU after a restart and to
 * confirm, once, that a VM's forwarded port is bound. Everything read here is world-readable,
 * so it also works for a root QEMU under sudo. (QEMU's own state comes from QMP.)
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

async function listeningInodes(port: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  // QEMU's `hostfwd=tcp::PORT-:...` listens on IPv4 (INADDR_ANY): /proc/net/tcp is where it shows.
  for (const table of ['/proc/net/tcp']) {
    let text: string;
    try {
      text = await fs.readFile(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address "ADDR:PORT", f[3] state (0A = LISTEN), f[9] inode
      if (f.length > 9 && f[3] === '0A' && f[1]!.endsWith(`:${hexPort}`)) inodes.add(f[9]!);
    }
  }
  return inodes;
}

/**
 * Whether some socket listens on TCP `port` (IPv4, where QEMU's hostfwd binds). One read of
 * /proc/net/tcp, which any user may read: it also works for a root QEMU under sudo.
 */
export async function portIsListening(port: number): Promise<boolean> {
  return (await listeningInodes(port)).size > 0;
}

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
