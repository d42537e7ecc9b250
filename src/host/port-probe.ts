/** Is a TCP port free where QEMU's user-mode network will bind it (all interfaces)? */
import net from 'node:net';

export function tcpPortIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    // `hostfwd=tcp::PORT-:...` binds INADDR_ANY; a listener on any address of this port conflicts with it.
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}
