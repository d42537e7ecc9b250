/**
 * Who is at the other end of a local TCP connection: one of the QEMUs the daemon supervises (a
 * guest speaking through QEMU's user-mode network, which turns the guest's 10.0.2.2 into host
 * loopback), or something else on the host. Linux only, from /proc: the peer's socket is the
 * row of /proc/net/tcp{,6} whose local end is our remote end, and its inode names a
 * "socket:[inode]" descriptor of the process that holds it.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { processTree } from './proc.js';

/** The QEMUs to look in: [pid, VM id]; a pid may be sudo's, its descendants are searched too. */
export type SupervisedPids = () => Iterable<readonly [number, string]>;

export type PeerOwner =
  /** A supervised QEMU holds the peer's socket: the caller is that VM's guest. */
  | { kind: 'guest'; vmId: string; pid: number }
  /** Not a local address: the peer is on another machine (QEMU's user net never produces this). */
  | { kind: 'remote' }
  /** A local peer that no supervised QEMU holds. */
  | { kind: 'host' }
  /** A local peer that could not be attributed (a QEMU's descriptors unreadable, socket not found). */
  | { kind: 'unattributed'; reason: string };

export interface Endpoint {
  address: string;
  port: number;
}

/** Canonical text of an address: IPv4 (IPv4-mapped IPv6 included) dotted, IPv6 as 8 full groups. */
export function canonicalIp(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (net.isIPv4(address)) return address;
  if (!net.isIPv6(address)) return address;
  const [head, tail] = address.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.toLowerCase().padStart(4, '0')).join(':');
}

/** "0100007F:1F41" (host byte order words) to a canonical endpoint. */
function fromProcHex(hex: string): Endpoint | undefined {
  const [addr, port] = hex.split(':');
  if (!addr || !port) return undefined;
  const bytes: number[] = [];
  for (let w = 0; w < addr.length; w += 8) {
    const word = addr.slice(w, w + 8);
    // Each 32-bit word is printed in host order; x86 and arm64 are little-endian.
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  let address: string;
  if (bytes.length === 4) address = bytes.join('.');
  else if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) address = bytes.slice(12).join('.');
  else {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16).padStart(4, '0'));
    address = groups.join(':');
  }
  return { address, port: parseInt(port, 16) };
}

export function isLoopback(address: string): boolean {
  const a = canonicalIp(address);
  return a.startsWith('127.') || a === '0000:0000:0000:0000:0000:0000:0000:0001';
}

/**
 * Loopback, or an address of one of this host's interfaces: QEMU's user net connects from the
 * host's own stack, so a guest that dials the host's LAN address arrives from that address.
 */
export function isLocalAddress(address: string): boolean {
  if (isLoopback(address)) return true;
  const a = canonicalIp(address);
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if (canonicalIp(i.address) === a) return true;
  }
  return false;
}

interface SocketRow {
  inode: string;
  uid: number;
}

/** The row of the socket whose local end is `local` and remote end is `remote`. */
async function findSocket(local: Endpoint, remote: Endpoint): Promise<SocketRow | undefined> {
  const want = (e: Endpoint) => `${canonicalIp(e.address)}|${e.port}`;
  const l = want(local);
  const r = want(remote);
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await fs.readFile(table, 'utf8');
    } catch {
      continue;
    }
    // A cheap text pre-filter: the local port appears in the row as ":PPPP ".
    const hexPort = `:${local.port.toString(16).toUpperCase().padStart(4, '0')} `;
    for (const line of text.split('\n')) {
      if (!line.includes(hexPort)) continue;
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const le = fromProcHex(f[1]!);
      const re = fromProcHex(f[2]!);
      if (!le || !re || `${le.address}|${le.port}` !== l || `${re.address}|${re.port}` !== r) continue;
      if (f[9] === '0') continue; // a socket on its way out (TIME_WAIT) has no owner
      return { inode: f[9]!, uid: Number(f[7]) };
    }
  }
  return undefined;
}

async function ownerUid(pid: number): Promise<number | undefined> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^Uid:\s+(\d+)/m.exec(status);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

type FdSearch = 'found' | 'absent' | { unreadable: string };

async function holdsSocket(pid: number, inode: string): Promise<FdSearch> {
  let fds: string[];
  try {
    fds = await fs.readdir(`/proc/${pid}/fd`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? { unreadable: code } : 'absent';
  }
  const target = `socket:[${inode}]`;
  for (const fd of fds) {
    try {
      if ((await fs.readlink(`/proc/${pid}/fd/${fd}`)) === target) return 'found';
    } catch {
      /* closed meanwhile */
    }
  }
  return 'absent';
}

/**
 * Who holds the other end of a connection this process accepted. `peer` is the connection's
 * remote end, `self` its local end (as the accepting socket sees them).
 */
export async function ownerOfPeer(peer: Endpoint, self: Endpoint, supervised: SupervisedPids): Promise<PeerOwner> {
  if (!isLocalAddress(peer.address)) return { kind: 'remote' };
  const row = await findSocket(peer, self);
  if (!row) return { kind: 'unattributed', reason: `no socket ${peer.address}:${peer.port} in /proc/net/tcp` };
  const unreadable: { pid: number; code: string }[] = [];
  for (const [root, vmId] of supervised()) {
    for (const pid of await processTree(root)) {
      const r = await holdsSocket(pid, row.inode);
      if (r === 'found') return { kind: 'guest', vmId, pid };
      if (r !== 'absent') unreadable.push({ pid, code: r.unreadable });
    }
  }
  // Under sudo QEMU runs as root and a non-root daemon cannot read its descriptors. The socket's
  // owner still narrows it down: a peer socket of another user cannot be one of those QEMUs.
  for (const u of unreadable) {
    if ((await ownerUid(u.pid)) === row.uid) {
      return { kind: 'unattributed', reason: `the descriptors of QEMU pid ${u.pid} are unreadable (${u.code}) and the peer's socket belongs to the same user (uid ${row.uid})` };
    }
  }
  return { kind: 'host' };
}
