/**
 * The nftables table that keeps guests off the host (SECURITY.md, "What the kernel enforces").
 * Pure: what to install is decided from values; src/host/guest-firewall.ts runs nft.
 *
 * A guest reaches the host only through its QEMU (user-mode networking turns 10.0.2.2 into the
 * host's loopback), and every QEMU runs as a uid of the VM range. So the output hook rejects,
 * for sockets of those uids, connection attempts to any local address: TCP's first SYN (only
 * the SYN: no connection tracking is switched on for the host) and every UDP datagram (and
 * UDP-Lite, SCTP and DCCP, which an escaped QEMU could open without privileges). A
 * guest's connect() fails at once with ECONNREFUSED; no byte reaches a process. Traffic to
 * other hosts, and the replies of QEMU's forwarded ports (SYN-ACK), are untouched.
 */
import type { LocalAllowRule } from '../config/types.js';

export interface GuestFirewallSpec {
  table: string;
  /** The uids whose sockets are checked. */
  uids: { first: number; last: number };
  /** The host's nameservers (slirp forwards the guest's DNS there): port 53 stays open to them. */
  nameservers: string[];
  /** The operator's exceptions (MANAGER_GUEST_ALLOWED_LOCAL_PORTS). */
  allow: LocalAllowRule[];
}

/** One table per daemon instance: a name from its state directory (two daemons, two tables). */
export function firewallTableName(stateDirRealPath: string, hash: (text: string) => string): string {
  return `cocos_manager_${hash(stateDirRealPath).slice(0, 12)}`;
}

const isV6 = (a: string) => a.includes(':');

function match(rule: { protocol: 'tcp' | 'udp'; address?: string; port: number }): string {
  const addr = rule.address === undefined ? '' : `${isV6(rule.address) ? 'ip6' : 'ip'} daddr ${rule.address} `;
  return `${addr}${rule.protocol} dport ${rule.port}`;
}

/**
 * The whole table, as an nft script that replaces it atomically: it is declared (a no-op when
 * present), deleted and made again in one transaction, so there is never a moment without it.
 */
export function guestFirewallScript(s: GuestFirewallSpec): string {
  const uids = s.uids.first === s.uids.last ? `${s.uids.first}` : `${s.uids.first}-${s.uids.last}`;
  const accepts: string[] = [];
  for (const ns of [...new Set(s.nameservers)]) {
    for (const protocol of ['udp', 'tcp'] as const) accepts.push(`\t\t${match({ protocol, address: ns, port: 53 })} accept`);
  }
  for (const a of s.allow) accepts.push(`\t\t${match(a)} accept`);
  return [
    `table inet ${s.table}`,
    `delete table inet ${s.table}`,
    `table inet ${s.table} {`,
    `\tchain guest_output {`,
    `\t\ttype filter hook output priority filter; policy accept;`,
    `\t\tmeta skuid != ${uids} accept`,
    `\t\tfib daddr type != local accept`,
    ...accepts,
    `\t\ttcp flags & (fin | syn | rst | ack) == syn reject with tcp reset`,
    `\t\tmeta l4proto { udp, udplite, sctp, dccp } reject`,
    `\t}`,
    `}`,
    '',
  ].join('\n');
}

/** The nameserver addresses of a resolv.conf text, in order (a zone index such as %eth0 dropped). */
export function resolvConfNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+([0-9A-Fa-f:.]+)(?:%\S+)?\s*(?:[#;].*)?$/.exec(line);
    if (m && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}
