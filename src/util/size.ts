/**
 * Sizes in QEMU's grammar: digits, a fraction only with a suffix, and an optional suffix B, K,
 * M, G, T, P or E in either case (1.5G, 4g, 2048M, 4096).
 */
const UNIT: Record<string, bigint> = { B: 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n, P: 1n << 50n, E: 1n << 60n };

/**
 * Bytes of a QEMU size. `bareUnit` is what a number without suffix means where QEMU reads it:
 * 'M' for -m's first value (a legacy QEMU rule), 'B' for maxmem= and object sizes.
 * Fractions are truncated to whole bytes, as QEMU does. Returns undefined for a malformed size.
 */
export function sizeInBytes(size: string, bareUnit: 'M' | 'B'): bigint | undefined {
  const m = /^(\d+)(?:\.(\d+))?([bBkKmMgGtTpPeE])?$/.exec(size.trim());
  if (!m || (m[2] !== undefined && m[3] === undefined)) return undefined;
  const unit = UNIT[(m[3] ?? bareUnit).toUpperCase()]!;
  const frac = m[2] ?? '';
  const scale = 10n ** BigInt(frac.length);
  return (BigInt(m[1]! + frac) * unit) / scale;
}

/** The same size written so that a reader whose bare unit is bytes reads what -m reads. */
export function withExplicitUnit(size: string): string {
  return /\d$/.test(size.trim()) ? `${size.trim()}M` : size.trim();
}
