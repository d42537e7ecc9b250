/** Is a TCP port free where QEMU's user-mode network will bind it (all interfaces)? */
import { tryBind } from '../vm/port-bind.js';

// `hostfwd=tcp::PORT-:...` binds INADDR_ANY; a listener on any address of this port conflicts with it.
export async function tcpPortIsFree(port: number): Promise<boolean> {
  return (await tryBind(port)) === undefined;
}
