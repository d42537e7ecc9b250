/**
 * The per-VM QMP channel on QEMU's command line, in the form the installed binary takes.
 * QEMU connects as a client to a socket the daemon listens on (in the VM's 0700 directory), so
 * a root QEMU started through sudo needs no access the daemon's user lacks, and chardev
 * reconnect brings QEMU back to a restarted daemon. Pure: version in, argv out.
 */

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
}

/** How the binary spells the channel, as checked against each binary (see docs/qmp.md). */
export interface QmpForm {
  /** QEMU < 9.2 takes `reconnect=<seconds>`; 9.2 deprecated it for `reconnect-ms=`, 10.x+ rejects it. */
  reconnect: 'seconds' | 'ms';
  /** `-mon chardev=...,mode=control`, or `-object monitor-qmp,...` (11.1 warns that -mon is deprecated). */
  monitor: 'mon' | 'object';
}

/** "QEMU emulator version 7.2.22 (Debian ...)" → 7.2.22; undefined when not recognised. */
export function parseQemuVersion(text: string): QemuVersion | undefined {
  const m = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0) };
}

export function formatQemuVersion(v: QemuVersion): string {
  return `${v.major}.${v.minor}.${v.micro}`;
}

export function qmpFormFor(v: QemuVersion): QmpForm {
  const atLeast = (major: number, minor: number) => v.major > major || (v.major === major && v.minor >= minor);
  // 7.2 (Debian 12) takes reconnect= and -mon; 11.1 (trixie-backports) rejects reconnect=
  // ("Invalid parameter 'reconnect'"), takes reconnect-ms= and -object monitor-qmp, and warns
  // on -mon. reconnect-ms exists since 9.2; the object form is used from 11.1, the release it
  // was verified on.
  return { reconnect: atLeast(9, 2) ? 'ms' : 'seconds', monitor: atLeast(11, 1) ? 'object' : 'mon' };
}

/** How often QEMU retries the daemon's socket once the connection is lost (daemon restart). */
/** QEMU's option parser reads a single comma as the next key. */
const e = (value: string): string => value.replaceAll(',', ',,');

export const QMP_RECONNECT_MS = 1_000;

export function qmpChannelArgs(form: QmpForm, socketPath: string): string[] {
  const reconnect = form.reconnect === 'ms' ? `reconnect-ms=${QMP_RECONNECT_MS}` : `reconnect=${Math.ceil(QMP_RECONNECT_MS / 1000)}`;
  const monitor = form.monitor === 'object' ? ['-object', 'monitor-qmp,id=qmp-monitor,chardev=qmp'] : ['-mon', 'chardev=qmp,mode=control'];
  return ['-chardev', `socket,id=qmp,path=${e(socketPath)},${reconnect}`, ...monitor];
}
