/**
 * The installed QEMU's version, read once from `<bin> --version` (through sudo when QEMU runs
 * under sudo: the binary the daemon may run is the one that counts), so the per-VM argv uses
 * the option forms that binary takes.
 */
import type { QemuConfig } from '../config/types.js';
import { qemuCommand } from '../qemu/args.js';
import { formatQemuVersion, parseQemuVersion, type QemuVersion, type QmpForm, qmpFormFor } from '../qemu/qmp-args.js';
import { loadExeca } from './spawner.js';

export interface QemuFlavor {
  version: QemuVersion;
  form: QmpForm;
  text: string;
}

const PROBE_TIMEOUT_MS = 10_000;

export async function probeQemu(q: QemuConfig): Promise<QemuFlavor> {
  const { execa } = await loadExeca();
  const cmd = qemuCommand(q);
  const r = await execa(cmd.file, [...cmd.prefix, '--version'], {
    stdin: 'ignore',
    reject: false,
    timeout: PROBE_TIMEOUT_MS,
    maxBuffer: 64 * 1024,
  });
  const out = `${String(r.stdout ?? '')}\n${String(r.stderr ?? '')}`;
  const version = parseQemuVersion(out);
  if (!version) {
    const why = r.failed ? (r.shortMessage ?? 'failed') : `unrecognised answer: ${out.trim().split('\n')[0] ?? ''}`;
    throw new Error(`\`${[cmd.file, ...cmd.prefix].join(' ')} --version\`: ${why}`);
  }
  return { version, form: qmpFormFor(version), text: formatQemuVersion(version) };
}

/** The probe's answer, kept once it succeeds; a failure is retried at the next use. */
export class QemuFlavorCache {
  private value: QemuFlavor | undefined;
  private running: Promise<QemuFlavor> | undefined;

  constructor(private readonly q: QemuConfig) {}

  get(): Promise<QemuFlavor> {
    if (this.value) return Promise.resolve(this.value);
    this.running ??= probeQemu(this.q).then(
      (v) => {
        this.value = v;
        return v;
      },
      (err) => {
        this.running = undefined;
        throw err;
      },
    );
    return this.running;
  }
}
