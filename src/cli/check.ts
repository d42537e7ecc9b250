/** `cocos-manager check`: the preflight as a table; the daemon logs the same at start. */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import { type CheckResult, preflight } from '../host/preflight.js';
import { tcpPortIsFree } from '../manager/port-probe.js';

export const CHECK_HELP = `Usage: cocos-manager check

Checks this host for the current configuration: the QEMU binary and the objects the
configuration needs, /dev/kvm, SEV-SNP or TDX support, firmware, IGVM, kernel and initramfs
files, igvmmeasure, free ports in the range, the state directory. Prints a table with a remedy
for each problem. Exit status 1 when anything the configuration needs fails.
`;

export function renderTable(results: CheckResult[]): string {
  const rows = [['STATUS', 'CHECK', 'DETAIL', 'REMEDY'], ...results.map((r) => [r.status.toUpperCase(), r.check, r.detail, r.remedy])];
  const widths = [0, 1, 2].map((i) => Math.min(60, Math.max(...rows.map((r) => r[i]!.length))));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd()).join('\n');
}

export async function checkCommand(config: Config): Promise<{ text: string; ok: boolean }> {
  const results = await preflight(config, tcpPortIsFree);
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  const summary = failed > 0 ? `${failed} check(s) failed, ${warned} warning(s): this host cannot run the configured VMs yet.` : `all checks passed${warned ? ` (${warned} warning(s))` : ''}.`;
  return { text: `${renderTable(results)}\n\n${summary}\n`, ok: failed === 0 };
}

/** The daemon's start-up preflight: logged, never blocking the start. */
export async function logPreflight(config: Config, log: Logger): Promise<void> {
  try {
    const results = await preflight(config);
    for (const r of results) {
      const line = { check: r.check, detail: r.detail, ...(r.remedy ? { remedy: r.remedy } : {}) };
      if (r.status === 'fail') log.error(line, `preflight failed: ${r.check}`);
      else if (r.status === 'warn') log.warn(line, `preflight warning: ${r.check}`);
      else log.debug(line, `preflight passed: ${r.check}`);
    }
    log.info({ failed: results.filter((r) => r.status === 'fail').length }, 'preflight done');
  } catch (err) {
    log.warn({ err: String(err) }, 'preflight could not run');
  }
}
