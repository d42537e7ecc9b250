// Talking to the test guest's stand-in agent (guest/agent.sh) through the forwarded port.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ROOT } from './helpers.mjs';

export const GUEST_KERNEL = path.join(ROOT, 'build', 'guest', 'vmlinuz');
export const GUEST_INITRD = path.join(ROOT, 'build', 'guest', 'initramfs.cpio.gz');
/** The UEFI-bootable disk of `make guest-disk` (scripts/build-disk.sh), and the command line baked into it. */
export const GUEST_DISK = path.join(ROOT, 'build', 'guest', 'disk.qcow2');
export const GUEST_DISK_CMDLINE = path.join(ROOT, 'build', 'guest', 'disk-cmdline');

/** One attempt: QEMU accepts before the guest listens, so an empty or cut reply means "not yet". */
function askOnce(port, timeoutMs) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    sock.setTimeout(timeoutMs, () => sock.destroy());
    sock.on('data', (d) => { data += d; });
    sock.on('close', () => resolve(data));
    sock.on('error', () => resolve(''));
  });
}

/** Polls the agent until it gives a whole report, at most `timeoutMs`, or until `signal` aborts. */
export async function waitForAgentReport(port, timeoutMs, { signal } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    const text = await askOnce(port, 3_000);
    if (text.includes('== end')) return parseReport(text);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`agent on port ${port} gave no report within ${timeoutMs} ms`);
}

/**
 * The hostile probe's findings (guest/probe.sh) once it is done, read from the agent's report:
 * its key=value lines (plus `<name>_said`, what wget printed per URL) and the whole report; bounded.
 */
export async function waitForProbe(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await askOnce(port, 3_000);
    if (text.includes('probe_done=1') && text.includes('== end')) {
      const lines = text.slice(text.indexOf('== probe'), text.indexOf('== end')).split('\n');
      const probe = Object.fromEntries(lines.filter((l) => /^[a-z0-9_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      for (const l of lines) {
        const m = /^(http|http_lan): (.*)$/.exec(l);
        if (m) probe[`${m[1]}_said`] = `${probe[`${m[1]}_said`] ?? ''}${m[2]}\n`;
      }
      return { probe, report: parseReport(text) };
    }
    await new Promise((r) => setTimeout(r, 1_000));
  }
  throw new Error(`no probe report on port ${port} within ${timeoutMs} ms`);
}

export function parseReport(text) {
  const sections = {};
  let current;
  for (const line of text.split('\n')) {
    const m = /^== (\w+)$/.exec(line);
    if (m) { current = m[1]; sections[current] = []; continue; }
    if (current) sections[current].push(line);
  }
  const certs = {};
  for (const l of sections.certs ?? []) {
    const [name, size, sha256] = l.split(' ');
    if (name) certs[name] = { size: Number(size), sha256 };
  }
  return {
    environment: (sections.environment ?? []).filter(Boolean),
    certs,
    cmdline: (sections.cmdline ?? []).join(' ').trim(),
  };
}

export function consoleTail(stateDir, id, lines = 40) {
  try {
    return fs.readFileSync(path.join(stateDir, 'vms', id, 'console.log'), 'utf8').split('\n').slice(-lines).join('\n');
  } catch (e) {
    return `(no console log: ${e.message})`;
  }
}
