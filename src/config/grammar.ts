/**
 * The value grammars of docs/configuration.md: each turns the text of one variable into a typed
 * value, or throws a GrammarError saying what is expected. The reader (setting.ts) adds the
 * variable's name and the text given. Bounds are part of the grammar, so a setting's
 * declaration names them once and its error message states them.
 */
import { parseGoDuration } from '../util/duration.js';
import { sizeInBytes } from '../util/size.js';

/** What the value of a setting must look like; the message says it ("expected ..."). */
export class GrammarError extends Error {}

export interface Grammar<T> {
  /** The value of a non-empty text, or empty text where empty is a value of its own. */
  parse(text: string): T;
  /**
   * Whether an empty variable means the default, unless the setting says otherwise: so for every
   * grammar here, as the Go manager's environment library (caarlos0/env) gives an empty variable
   * its declared default; a setting where empty means something else says so itself.
   */
  readonly emptyMeansDefault: boolean;
}

export function grammar<T>(parse: (text: string) => T, emptyMeansDefault = true): Grammar<T> {
  return { parse, emptyMeansDefault };
}

const expected = (what: string) => new GrammarError(`expected ${what}`);

/** The same text, then a second step: a narrower value, or a finer check that may refuse it. */
export function mapped<A, B>(g: Grammar<A>, f: (value: A) => B): Grammar<B> {
  return grammar((text) => f(g.parse(text)), g.emptyMeansDefault);
}

/** Strings are kept verbatim; an empty variable is the default (a setting may make it a value of its own). */
export const text: Grammar<string> = grammar((input) => input);

/** Text that must not be blank (kept verbatim). */
export function nonBlankText(what: string): Grammar<string> {
  return mapped(text, (v) => {
    if (v.trim() === '') throw expected(what);
    return v;
  });
}

// Go's strconv.ParseBool (what the Go manager reads its settings with), plus the words QEMU's
// own option parser takes. Case matters as it does there: "True" is Go's, "tRUE" is nobody's.
const TRUE_WORDS = new Set(['1', 't', 'T', 'true', 'TRUE', 'True', 'on', 'yes', 'y']);
const FALSE_WORDS = new Set(['0', 'f', 'F', 'false', 'FALSE', 'False', 'off', 'no', 'n']);

export function parseBoolean(input: string): boolean {
  const v = input.trim();
  if (TRUE_WORDS.has(v)) return true;
  if (FALSE_WORDS.has(v)) return false;
  throw expected('a boolean: true or false (also 1/0, t/f, on/off, yes/no)');
}

export const boolean: Grammar<boolean> = grammar(parseBoolean);

/** QEMU's on/off switches, which it also accepts as any boolean word; normalized to on/off. */
export const onOff: Grammar<'on' | 'off'> = mapped(boolean, (v) => (v ? 'on' : 'off'));

/**
 * A value decided at start from the host when given as `auto` (the decision is the caller's,
 * from facts the pure core does not read), or any value of `g`.
 */
export function orAuto<T>(g: Grammar<T>): Grammar<T | 'auto'> {
  return grammar((input) => {
    if (input.trim() === 'auto') return 'auto';
    try {
      return g.parse(input);
    } catch (err) {
      if (err instanceof GrammarError) throw new GrammarError(`${err.message}, or auto`);
      throw err;
    }
  }, g.emptyMeansDefault);
}

/** pino's levels and the slog level each stands for (slog: DEBUG -4, INFO 0, WARN 4, ERROR 8; pino's trace and fatal a step beyond). */
const PINO_LEVELS = [
  ['trace', -8n],
  ['debug', -4n],
  ['info', 0n],
  ['warn', 4n],
  ['error', 8n],
  ['fatal', 12n],
] as const;

export type PinoLevel = (typeof PINO_LEVELS)[number][0] | 'silent';

const SLOG_NAMES: Readonly<Record<string, bigint>> = { DEBUG: -4n, INFO: 0n, WARN: 4n, ERROR: 8n };
const INT64 = 2n ** 63n;

/** Go's strings.ToUpper, rune by rune (simple case mapping: a character never becomes two). */
function goToUpper(s: string): string {
  return [...s].map((c) => (c.toUpperCase().length === 1 ? c.toUpperCase() : c)).join('');
}

/**
 * A log level as Go's slog.Level.UnmarshalText reads MANAGER_LOG_LEVEL in the Go manager: DEBUG,
 * INFO, WARN or ERROR in any case, optionally with an offset (INFO+2, DEBUG-4). It becomes the
 * lowest pino level whose records slog would show at that threshold: INFO+2 shows WARN and
 * ERROR records, so it is warn; DEBUG-4 is trace; above ERROR+4, nothing this daemon writes.
 */
export const slogLevel: Grammar<PinoLevel> = grammar((input) => {
  const v = input.trim();
  const at = v.search(/[+-]/);
  const base = SLOG_NAMES[goToUpper(at < 0 ? v : v.slice(0, at))];
  // The offset as Go's strconv.Atoi takes it: a sign, decimal digits, within a 64-bit int.
  const offset = at < 0 ? '0' : v.slice(at);
  if (base === undefined || !/^[+-]?\d+$/.test(offset) || BigInt(offset) >= INT64 || BigInt(offset) < -INT64) {
    throw expected('a log level: debug, info, warn or error in any case, optionally with an offset as Go\'s slog takes it (INFO+2, DEBUG-4)');
  }
  const threshold = base + BigInt(offset);
  return PINO_LEVELS.find(([, slog]) => slog >= threshold)?.[0] ?? 'silent';
});

/** A whole number in [min, max], decimal digits only. */
export function integer(min: number, max: number, what: string): Grammar<number> {
  return grammar((input) => {
    const v = input.trim();
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) throw expected(what);
    return n;
  });
}

export const port = integer(1, 65535, 'a port number in 1..65535');
/** A port to listen on; 0 lets the kernel pick a free one (the daemon logs which). */
export const listenPort = integer(0, 65535, 'a port number in 0..65535 (0: any free port)');
export const count = integer(0, 1_000_000, 'a non-negative integer');
export const positiveCount = integer(1, 1_000_000, 'a positive integer');
export const uint32 = integer(0, 4294967295, 'an integer in 0..4294967295');

export interface Range {
  first: number;
  last: number;
}

/** "first-last" with min <= first <= last <= max; `what` names the range in the message. */
export function range(min: number, max: number, what: string): Grammar<Range> {
  const help = `${what} "first-last" with ${min} <= first <= last <= ${max}`;
  return grammar((input) => {
    const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(input);
    const first = Number(m?.[1]);
    const last = Number(m?.[2]);
    if (!m || first < min || last > max || first > last) throw expected(help);
    return { first, last };
  });
}

export const portRange = range(1, 65535, 'a port range');

/** Ids from the top of what a Linux uid can be (4294967294; -1 means "unchanged" to setresuid). */
const MAX_ID = 4_294_967_294;

/** A range of numeric user ids, never root. */
export const idRange = range(1, MAX_ID, 'a range of numeric ids');

/** A size as QEMU reads it (util/size.ts); what a bare number means depends on where QEMU reads it. */
const SIZE_HELP = 'a size like 2048M, 4G, 1.5G or 4096 (QEMU\'s grammar: a number and an optional suffix B, K, M, G, T, P, E)';

/** A non-zero size, kept as written (trimmed) for QEMU's command line. */
export const qemuSize: Grammar<string> = grammar((input) => {
  const v = input.trim();
  const bytes = sizeInBytes(v, 'M');
  if (bytes === undefined || bytes === 0n) throw expected(SIZE_HELP);
  return v;
});

/** A size in QEMU's grammar (a bare number is MiB) in bytes, at least `min` (written as `minText`). */
export function byteSize(min: number, minText: string): Grammar<number> {
  return mapped(qemuSize, (v) => {
    const bytes = Number(sizeInBytes(v, 'M'));
    if (bytes < min) throw expected(`at least ${minText}`);
    return bytes;
  });
}

export const ratio: Grammar<number> = grammar((input) => {
  const v = input.trim();
  const n = Number(v);
  if (v === '' || !Number.isFinite(n) || n < 0 || n > 1) throw expected('a number in 0..1');
  return n;
});

/**
 * A Go duration in milliseconds within [min, max]: `min` 0 allows "0" for off, MIN_VALUE demands
 * a positive one; a finite `max` is a bound other settings rely on (e.g. the unit's stop timeout).
 */
function durationIn(help: string, min: number, max = Infinity): Grammar<number> {
  return grammar((input) => {
    let ms: number;
    try {
      ms = parseGoDuration(input.trim());
    } catch {
      throw expected(help);
    }
    if (!(ms >= min) || ms > max) throw expected(help);
    return ms;
  });
}

/** A Go duration that must be > 0. */
export const positiveDuration = durationIn('a positive Go duration like 300ms, 10s or 1m30s', Number.MIN_VALUE);

/** A Go duration that may be 0 ("off"). */
export const nonNegativeDuration = durationIn('a Go duration like 0 (off), 300ms, 10s or 1m30s', 0);

/** A positive Go duration no longer than `maxMs`. */
export function boundedDuration(maxMs: number, maxText: string): Grammar<number> {
  return durationIn(`a positive Go duration of at most ${maxText}, like 300ms, 10s or 1m30s`, Number.MIN_VALUE, maxMs);
}

/** A Go duration of at most `maxText`, or 0, which means what `zeroMeans` says. */
export function boundedDurationOrZero(maxMs: number, maxText: string, zeroMeans: string): Grammar<number> {
  return durationIn(`a Go duration of at most ${maxText}, like 300ms, 10s or 1m30s, or 0 (${zeroMeans})`, 0, maxMs);
}

export function oneOf<const T extends string>(choices: readonly T[]): Grammar<T> {
  return grammar((input) => {
    const v = input.trim();
    if (!(choices as readonly string[]).includes(v)) throw expected(`one of ${choices.join(', ')}`);
    return v as T;
  });
}

/** Hex of exactly `bytes` bytes (e.g. a 48-byte TDX measurement), lower case, or empty for "not set". */
export function hexBytes(bytes: number): Grammar<string> {
  return grammar((input) => {
    const v = input.trim().toLowerCase().replace(/^0x/, '');
    if (v === '') return '';
    if (!/^[0-9a-f]+$/.test(v) || v.length !== bytes * 2) throw expected(`hex of exactly ${bytes} bytes (${bytes * 2} hex digits)`);
    return v;
  });
}

/** An unsigned 64-bit integer, decimal or 0x-hex, kept as a bigint. */
export const uint64: Grammar<bigint> = grammar((input) => {
  const v = input.trim();
  const help = 'an unsigned 64-bit integer, decimal or 0x-hex';
  if (!/^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(v)) throw expected(help);
  const n = BigInt(v);
  if (n > 0xffffffffffffffffn) throw expected(help);
  return n;
});

/** A local endpoint guests may still connect to (MANAGER_GUEST_ALLOWED_LOCAL_PORTS). */
export interface LocalAllowRule {
  protocol: 'tcp' | 'udp';
  /** Absent: every local address. */
  address?: string;
  port: number;
}

/**
 * Local endpoints guests may still reach: a comma-separated list of `tcp/PORT`, `udp/PORT`
 * (every local address), `tcp/ADDRESS:PORT` or `tcp/[IPV6]:PORT`. Empty: none.
 */
export const localAllowList: Grammar<LocalAllowRule[]> = grammar((input) => {
  const out: LocalAllowRule[] = [];
  for (const raw of input.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const m = /^(tcp|udp)\/(?:(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?(\d{1,5})$/.exec(item);
    const port = m ? Number(m[3]) : 0;
    const address = m?.[2]?.replace(/^\[|\]$/g, '');
    if (!m || port < 1 || port > 65535 || (address !== undefined && !isIpLiteral(address))) {
      throw expected(`a comma-separated list of tcp/PORT, udp/PORT, tcp/ADDRESS:PORT or tcp/[IPV6]:PORT; ${JSON.stringify(item)} is not one`);
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

/** sudo exists here to run QEMU as a user with no privilege: root (by name or id) defeats it. */
export const unprivilegedUser: Grammar<string> = mapped(text, (raw) => {
  const v = raw.trim();
  if (!/^([A-Za-z_][A-Za-z0-9_.-]{0,30}\$?|\d{1,10})$/.test(v) || v === 'root' || /^0+$/.test(v) || Number(v) > MAX_ID) {
    throw expected('the name or numeric id of an unprivileged user (not root) that sudo runs QEMU as');
  }
  return v;
});

/** A group name or numeric id, or empty. */
export const groupOrEmpty: Grammar<string> = mapped(text, (v) => {
  if (v !== '' && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(v)) throw expected('a group name or numeric id');
  return v;
});

/** Unix socket paths live in a 108-byte sun_path, NUL included. */
const MAX_UNIX_SOCKET_PATH = 107;

/** A Unix socket path, or empty for none. */
export const unixSocketPath: Grammar<string> = mapped(text, (v) => {
  if (Buffer.byteLength(v) > MAX_UNIX_SOCKET_PATH) throw expected(`a path of at most ${MAX_UNIX_SOCKET_PATH} bytes (a Unix socket's limit)`);
  return v;
});

export const absoluteUrl: Grammar<string> = mapped(text, (v) => {
  try {
    new URL(v);
  } catch {
    throw expected('an absolute URL like http://localhost:4318');
  }
  return v;
});
