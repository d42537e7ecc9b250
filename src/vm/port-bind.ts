/**
 * Whether a TCP port is taken, asked of the kernel by binding it for an instant on every IPv4
 * address, where QEMU's `hostfwd=tcp::PORT-:...` listens (INADDR_ANY): a few microseconds,
 * whoever owns the listener (a root QEMU under sudo too). /proc/net/tcp would say the same, but
 * the kernel generates it by walking its whole TCP hash table: milliseconds on every CreateVm.
 */
import net from 'node:net';

/** Binds `port` and lets it go at once: undefined if it could be bound, else the error code. */
export function tryBind(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? String(err)));
    probe.listen({ port, host: '0.0.0.0', exclusive: true }, () => probe.close(() => resolve(undefined)));
  });
}

/** Whether something listens on `port` (QEMU once it has bound its forward). */
export async function portIsListening(port: number): Promise<boolean> {
  return (await tryBind(port)) === 'EADDRINUSE';
}
