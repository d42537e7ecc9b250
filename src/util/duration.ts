/**
 * Go's time.ParseDuration, so that `ttl` and the *_TIMEOUT settings accept exactly what
 * the Go manager accepted ("300ms", "1h30m", "-1.5h", "0"). Returns milliseconds.
 */
const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 micro sign
  'μs': 1e3, // U+03BC Greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

const MAX_NS = 9223372036854775807; // Go's time.Duration is an int64 of nanoseconds

export class DurationError extends Error {}

export function parseGoDuration(input: string): number {
  let s = input;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw new DurationError(`invalid duration "${input}"`);
  let totalNs = 0;
  while (s.length > 0) {
    const m = /^(\d*)(?:\.(\d*))?/.exec(s);
    const whole = m?.[1] ?? '';
    const frac = m?.[2];
    if (whole === '' && (frac === undefined || frac === '')) {
      throw new DurationError(`invalid duration "${input}"`);
    }
    s = s.slice(m![0].length);
    const unitMatch = /^[^\d.]+/.exec(s);
    if (!unitMatch) throw new DurationError(`missing unit in duration "${input}"`);
    const unit = unitMatch[0];
    const scale = UNIT_NS[unit];
    if (scale === undefined) throw new DurationError(`unknown unit "${unit}" in duration "${input}"`);
    s = s.slice(unit.length);
    const value = Number(`${whole || '0'}.${frac || '0'}`);
    totalNs += value * scale;
    if (!Number.isFinite(totalNs) || totalNs > MAX_NS) {
      throw new DurationError(`invalid duration "${input}" (out of range)`);
    }
  }
  return (sign * totalNs) / 1e6;
}
