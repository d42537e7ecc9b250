/** The daemon's RLIMIT_MEMLOCK and whether it may raise it, from /proc (Node has no call for either). */
import fs from 'node:fs';
import type { LockedMemoryLimit } from '../isolation/locked-memory.js';

const CAP_SYS_RESOURCE = 24n;

export function daemonLockedMemory(): LockedMemoryLimit {
  let hard: bigint | null = 0n;
  let mayRaise = false;
  try {
    const m = /^Max locked memory\s+\S+\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    if (m) hard = m[1] === 'unlimited' ? null : BigInt(m[1]!);
  } catch {
    /* unreadable: taken as nothing */
  }
  try {
    const cap = /^CapEff:\s+([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    mayRaise = cap !== undefined && ((BigInt(`0x${cap}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;
  } catch {
    /* unreadable: taken as no */
  }
  return { hard, mayRaise };
}
