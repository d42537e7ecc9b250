/**
 * Whether this host can run SEV-SNP or TDX guests, decided exactly as the Go manager's
 * SEVSNPEnabledOnHost() and TDXEnabledOnHost() decide it: the CPU flag's text anywhere in
 * /proc/cpuinfo, and the KVM module's parameter file reading `Y` once Go's strings.TrimSpace has
 * trimmed it (case counts: `y` or `1` is not enabled). Each answer also says what is missing, for
 * `check` and for error messages. Always the real files: a host is faked by mounting over them
 * (test/fake-host.mjs), not by a setting.
 */
import fs from 'node:fs';
import type { CvmHostFacts, HostSupport } from '../config/cvm.js';

/** `missing`: what keeps it off, one phrase each (e.g. "kvm_amd's sev_snp parameter is N"); empty when enabled. */
export type CvmHostSupport = HostSupport;

/** Where one technology shows on a host. */
export interface CvmRequirement {
  /** The text looked for in /proc/cpuinfo. */
  flag: string;
  module: string;
  parameter: string;
}

export const SEV_SNP: CvmRequirement = { flag: 'sev_snp', module: 'kvm_amd', parameter: 'sev_snp' };
export const TDX: CvmRequirement = { flag: 'tdx_host_platform', module: 'kvm_intel', parameter: 'tdx' };

export const CPUINFO = '/proc/cpuinfo';
export const parameterFile = (r: CvmRequirement) => `/sys/module/${r.module}/parameters/${r.parameter}`;

/** A file's bytes, or the error code it could not be read with. */
export type Reading = { bytes: Buffer } | { error: string };

export function sevSnpEnabledOnHost(): CvmHostSupport {
  return onHost(SEV_SNP);
}

export function tdxEnabledOnHost(): CvmHostSupport {
  return onHost(TDX);
}

/** Both answers, as the configuration takes them (src/config/cvm.ts decides from them). */
export function cvmHostFacts(): CvmHostFacts {
  return { sevSnp: sevSnpEnabledOnHost(), tdx: tdxEnabledOnHost() };
}

function onHost(r: CvmRequirement): CvmHostSupport {
  return cvmSupport(r, read(CPUINFO), read(parameterFile(r)));
}

function read(file: string): Reading {
  try {
    return { bytes: fs.readFileSync(file) };
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? String(err) };
  }
}

/** The decision from what the two files held. Pure. */
export function cvmSupport(r: CvmRequirement, cpuinfo: Reading, parameter: Reading): CvmHostSupport {
  const missing: string[] = [];
  if ('error' in cpuinfo) missing.push(`${CPUINFO} cannot be read (${cpuinfo.error})`);
  // Go's strings.Contains on the bytes: latin1 keeps one character per byte.
  else if (!cpuinfo.bytes.toString('latin1').includes(r.flag)) missing.push(`${CPUINFO} has no ${r.flag} flag`);
  if ('error' in parameter) {
    missing.push(
      parameter.error === 'ENOENT'
        ? `${r.module} has no ${r.parameter} parameter (no ${parameterFile(r)}: ${r.module} is not loaded, or its kernel lacks the support)`
        : `${r.module}'s ${r.parameter} parameter cannot be read (${parameterFile(r)}: ${parameter.error})`,
    );
  } else {
    const value = goTrimSpace(parameter.bytes.toString('utf8'));
    if (value !== 'Y') missing.push(`${r.module}'s ${r.parameter} parameter is ${value === '' ? 'empty' : /^[!-~]{1,16}$/.test(value) ? value : JSON.stringify(value.slice(0, 32))}`);
  }
  return { enabled: missing.length === 0, missing };
}

// Go's unicode.IsSpace: not JavaScript's trim(), which also strips U+FEFF and keeps U+0085.
const GO_SPACE = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const GO_TRIM = new RegExp(`^[${GO_SPACE}]+|[${GO_SPACE}]+$`, 'g');

/** Go's strings.TrimSpace. */
export function goTrimSpace(s: string): string {
  return s.replace(GO_TRIM, '');
}
