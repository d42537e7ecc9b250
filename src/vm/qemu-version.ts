/**
 * The installed QEMU's version, read once from `<bin> --version` (through sudo when QEMU runs
 * under sudo: the binary the daemon may run is the one that counts), so the per-VM argv uses
 * the option forms that binary takes.
 */
import type { QemuConfig } from '../config/types.js';
import { qemuCommand, SANDBOX_OPTION } from '../qemu/args.js';
import type { QemuFlavor, SandboxSupport } from '../manager/vm-driver.port.js';
import { formatQemuVersion, parseQemuVersion, qmpFormFor } from '../qemu/qmp-args.js';
import { loadExeca } from './spawner.js';

export type { QemuFlavor, SandboxSupport } from '../manager/vm-driver.port.js';

const PROBE_TIMEOUT_MS = 10_000;
const SANDBOX_TRIAL_TIMEOUT_MS = 5_000;

/** The argv of the sandbox trial start (after the command prefix): no machine, no devices, QMP on stdio. */
export const SANDBOX_TRIAL_ARGS = ['-sandbox', SANDBOX_OPTION, '-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio'];

/**
 * Does the binary take `-sandbox SANDBOX_OPTION`? QEMU 7.2 has no `-sandbox help`, and a QEMU
 * built without seccomp only says so when started: so it is started, with no machine, asked to
 * quit over QMP, and must exit 0. Through the same prefix (sudo) as the VMs: the binary the
 * daemon may run is the one that counts.
 */
export async function probeSandbox(q: QemuConfig): Promise<SandboxSupport> {
  const { execa } = await loadExeca();
  const cmd = qemuCommand(q);
  const r = await execa(cmd.file, [...cmd.prefix, ...SANDBOX_TRIAL_ARGS], {
    input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
    reject: false,
    timeout: SANDBOX_TRIAL_TIMEOUT_MS,
    maxBuffer: 64 * 1024,
  });
  if (r.exitCode === 0 && !r.timedOut && !r.signal) return { supported: true };
  const how = r.timedOut
    ? `did not quit within ${SANDBOX_TRIAL_TIMEOUT_MS / 1000} s`
    : r.signal
      ? `killed by ${r.signal}`
      : r.exitCode === undefined
        ? (r.shortMessage ?? 'could not be started')
        : `exit code ${r.exitCode}`;
  const said = String(r.stderr ?? '')
    .split('\n')
    .find((l) => l.trim() !== '')
    ?.trim();
  return { supported: false, reason: said ? `${how}: ${said}` : how };
}

export async function probeQemu(q: QemuConfig): Promise<QemuFlavor> {
  const { execa } = await loadExeca();
  const cmd = qemuCommand(q);
  // The trial start runs alongside: it needs nothing from the version.
  const sandbox = probeSandbox(q);
  const r = await execa(cmd.file, [...cmd.prefix, '--version'], {
    stdin: 'ignore',
    reject: false,
    timeout: PROBE_TIMEOUT_MS,
    maxBuffer: 64 * 1024,
  });
  const out = `${String(r.stdout ?? '')}\n${String(r.stderr ?? '')}`;
  const version = parseQemuVersion(out);
  if (!version) {
    void sandbox.catch(() => undefined);
    const why = r.failed ? (r.shortMessage ?? 'failed') : `unrecognised answer: ${out.trim().split('\n')[0] ?? ''}`;
    throw new Error(`\`${[cmd.file, ...cmd.prefix].join(' ')} --version\`: ${why}`);
  }
  return { version, form: qmpFormFor(version), text: formatQemuVersion(version), sandbox: await sandbox };
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
