/**
 * envalid validators for the value shapes of docs/configuration.md. Each throws an Error whose
 * message says what was expected; the loader adds the variable name and the given value.
 */
import { makeValidator } from 'envalid';
import type { LocalAllowRule } from './types.js';
import { parseGoDuration } from '../util/duration.js';
import { sizeInBytes } from '../util/size.js';
import type { PortRange } from './types.js';

// Go's strconv.ParseBool (what the Go manager reads its settings with), plus the words QEMU's
// own option parser takes. Case matters as it does there: "True" is Go's, "tRUE" is nobody's.
const TRUE_WORDS = new Set(['1', 't', 'T', 'true', 'TRUE', 'True', 'on', 'yes', 'y']);
const FALSE_WORDS = new Set(['0', 'f', 'F', 'false', 'FALSE', 'False', 'off', 'no', 'n']);
const BOOLEAN_HELP = 'expected a boolean: true or false (also 1/0, t/f, on/off, yes/no)';

export function parseBoolean(input: string): boolean {
  const v = input.trim();
  if (TRUE_WORDS.has(v)) return true;
  if (FALSE_WORDS.has(v)) return false;
  throw new Error(BOOLEAN_HELP);
}

export const boolean = makeValidator<boolean>(parseBoolean);

/** QEMU's on/off switches, which it also accepts as any boolean word; normalized to on/off. */
export const onOff = makeValidator<'on' | 'off'>((input) => (parseBoolean(input) ? 'on' : 'off'));

function integer(input: string, min: number, max: number, what: string): number {
  const v = input.trim();
  if (!/^\d+$/.test(v)) throw new Error(`expected ${what}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`expected ${what}`);
  return n;
}

export const port = makeValidator<number>((input) =>
  integer(input, 1, 65535, 'a port number in 1..65535'),
);

/** A port to listen on; 0 lets the kernel pick a free one (the daemon logs which). */
export const listenPort = makeValidator<number>((input) =>
  integer(input, 0, 65535, 'a port number in 0..65535 (0: any free port)'),
);

export const count = makeValidator<number>((input) =>
  integer(input, 0, 1_000_000, 'a non-negative integer'),
);

export const positiveCount = makeValidator<number>((input) =>
  integer(input, 1, 1_000_000, 'a positive integer'),
);

export const uint32 = makeValidator<number>((input) =>
  integer(input, 0, 4294967295, 'an integer in 0..4294967295'),
);

/** A size as QEMU reads it (util/size.ts); what a bare number means depends on where QEMU reads it. */
const SIZE_HELP = 'expected a size like 2048M, 4G, 1.5G or 4096 (QEMU\'s grammar: a number and an optional suffix B, K, M, G, T, P, E)';

export const memorySize = makeValidator<string>((input) => {
  const v = input.trim();
  const bytes = sizeInBytes(v, 'M');
  if (bytes === undefined || bytes === 0n) throw new Error(SIZE_HELP);
  return v;
});

export const portRange = makeValidator<PortRange>((input) => {
  const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(input);
  const expected = 'expected a port range "first-last" with 1 <= first <= last <= 65535';
  if (!m) throw new Error(expected);
  const first = Number(m[1]);
  const last = Number(m[2]);
  if (first < 1 || last > 65535 || first > last) throw new Error(expected);
  return { first, last };
});

export const ratio = makeValidator<number>((input) => {
  const v = input.trim();
  const n = Number(v);
  if (v === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new Error('expected a number in 0..1');
  return n;
});

/**
 * A Go duration in milliseconds within [min, max]: `min` 0 allows "0" for off, 1 demands a
 * positive one; a finite `max` is a bound other settings rely on (e.g. the unit's stop timeout).
 */
function durationIn(expected: string, min: number, max = Infinity) {
  return makeValidator<number>((input) => {
    let ms: number;
    try {
      ms = parseGoDuration(input.trim());
    } catch {
      throw new Error(expected);
    }
    if (!(ms >= min) || ms > max) throw new Error(expected);
    return ms;
  });
}

/** A Go duration that must be > 0. */
export const positiveDuration = durationIn('expected a positive Go duration like 300ms, 10s or 1m30s', Number.MIN_VALUE);

/** A Go duration that may be 0 ("off"). */
export const nonNegativeDuration = durationIn('expected a Go duration like 0 (off), 300ms, 10s or 1m30s', 0);

/** A positive Go duration no longer than `maxMs`. */
export function boundedDuration(maxMs: number, maxText: string) {
  return durationIn(`expected a positive Go duration of at most ${maxText}, like 300ms, 10s or 1m30s`, Number.MIN_VALUE, maxMs);
}

export function oneOf<T extends string>(choices: readonly T[]) {
  return makeValidator<T>((input) => {
    const v = input.trim();
    if (!(choices as readonly string[]).includes(v)) throw new Error(`expected one of ${choices.join(', ')}`);
    return v as T;
  });
}

/** Strings are kept verbatim; an empty string is a value (e.g. an empty host means all interfaces). */
export const text = makeValidator<string>((input) => input);

/** Hex of exactly `bytes` bytes (e.g. a 48-byte TDX measurement), or empty for "not set". */
export function hexBytes(bytes: number) {
  return makeValidator<string>((input) => {
    const v = input.trim().toLowerCase().replace(/^0x/, '');
    if (v === '') return '';
    if (!/^[0-9a-f]+$/.test(v) || v.length !== bytes * 2) throw new Error(`expected hex of exactly ${bytes} bytes (${bytes * 2} hex digits)`);
    return v;
  });
}

/** An unsigned 64-bit integer, decimal or 0x-hex, kept as a bigint. */
export const uint64 = makeValidator<bigint>((input) => {
  const v = input.trim();
  if (!/^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(v)) throw new Error('expected an unsigned 64-bit integer, decimal or 0x-hex');
  const n = BigInt(v);
  if (n > 0xffffffffffffffffn) throw new Error('expected an unsigned 64-bit integer, decimal or 0x-hex');
  return n;
});

/** Ids from the top of what a Linux uid can be (4294967294; -1 means "unchanged" to setresuid). */
const MAX_ID = 4_294_967_294;

/** A range of numeric user ids "first-last", 1 <= first <= last (never root). */
export const idRange = makeValidator<{ first: number; last: number }>((input) => {
  const m = /^\s*(\d{1,10})\s*-\s*(\d{1,10})\s*$/.exec(input);
  const expected = `expected a range of numeric ids "first-last" with 1 <= first <= last <= ${MAX_ID}`;
  if (!m) throw new Error(expected);
  const first = Number(m[1]);
  const last = Number(m[2]);
  if (first < 1 || last > MAX_ID || first > last) throw new Error(expected);
  return { first, last };
});

/**
 * Local endpoints guests may still reach: a comma-separated list of `tcp/PORT`, `udp/PORT`
 * (every local address), `tcp/ADDRESS:PORT` or `tcp/[IPV6]:PORT`. Empty: none.
 */
export const localAllowList = makeValidator<LocalAllowRule[]>((input) => {
  const out: LocalAllowRule[] = [];
  for (const raw of input.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const m = /^(tcp|udp)\/(?:(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?(\d{1,5})$/.exec(item);
    const port = m ? Number(m[3]) : 0;
    const address = m?.[2]?.replace(/^\[|\]$/g, '');
    if (!m || port < 1 || port > 65535 || (address !== undefined && !isIpLiteral(address))) {
      throw new Error(`expected a comma-separated list of tcp/PORT, udp/PORT, tcp/ADDRESS:PORT or tcp/[IPV6]:PORT; ${JSON.stringify(item)} is not one`);
    }
    out.push({ protocol: m[1] as 'tcp' | 'udp', address, port });
  }
  return out;
});

function isIpLiteral(a: string): boolean {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(a)) return a.split('.').every((o) => Number(o) <= 255);
  // Enough to keep anything but an IPv6 literal out of the firewall script; nft checks the rest.
  return /^[0-9A-Fa-f:]+$/.test(a) && a.includes(':') && a.split('::').length <= 2;
}
