/**
 * What Linux's /proc says about a process: identity (start time, command line), liveness,
 * and which TCP ports it listens on. Used to adopt only our own QEMU after a restart and to
 * know that QEMU itself (not some other process) holds a VM's forwarded port.
 */
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

/** The process and all its descendants (QEMU under sudo is a child of sudo). */
async function processTree(pid: number): Promise<number[]> {
  const out = [pid];
  for (let i = 0; i < out.length && out.length < 64; i++) {
    const p = out[i]!;
    let tasks: string[] = [];
    try {
      tasks = await fs.readdir(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const children = (await fs.readFile(`/proc/${p}/task/${t}/children`, 'utf8')).trim();
        if (children) out.push(...children.split(/\s+/).map(Number));
      } catch {
        /* task gone */
      }
    }
  }
  return out;
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

/** The process among `pid` and its descendants that holds a socket listening on TCP `port`. */
export async function listeningOwner(pid: number, port: number): Promise<number | undefined> {
  const inodes = await listeningInodes(port);
  if (inodes.size === 0) return undefined;
  for (const p of await processTree(pid)) {
    let fds: string[];
    try {
      fds = await fs.readdir(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(await fs.readlink(`/proc/${p}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) return p;
      } catch {
        /* fd closed meanwhile */
      }
    }
  }
  return undefined;
}

/** Syscalls a main loop blocks in, by architecture (poll, select, ppoll, pselect6, epoll_wait, epoll_pwait, epoll_pwait2). */
const POLL_SYSCALLS: Record<string, ReadonlySet<number>> = {
  x64: new Set([7, 23, 232, 270, 271, 281, 441]),
  arm64: new Set([22, 72, 73, 441]),
};

/**
 * Whether the process's main thread is blocked waiting for events: QEMU gets there only once
 * qemu_init() is done (files opened, kernel loaded, devices realized) and its main loop runs.
 * undefined when the kernel will not tell us (no permission, unknown architecture).
 */
export async function mainThreadIsPolling(pid: number): Promise<boolean | undefined> {
  const table = POLL_SYSCALLS[process.arch];
  if (!table) return undefined;
  let text: string;
  try {
    text = await fs.readFile(`/proc/${pid}/syscall`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? undefined : false;
  }
  const nr = Number(text.split(' ', 1)[0]);
  return Number.isInteger(nr) && table.has(nr);
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
