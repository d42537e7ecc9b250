/**
 * Where MANAGER_GRPC_HOST and MANAGER_HTTP_HOST listen, and listening there on one port.
 *
 * - An IP address: that address.
 * - `0.0.0.0` or `::`: every interface, IPv6 and IPv4 alike. That is what the Go manager's
 *   listener does with either (Go's "tcp" listener on an unspecified address is dual-stack);
 *   Node listens on `::` dual-stack where IPv6 exists and on 0.0.0.0 otherwise.
 * - A name (`localhost`, the default, as in the Go manager): every address it resolves to, each
 *   a listener of its own on the same port, so `localhost` is both 127.0.0.1 and ::1 where the
 *   host names both. (Go listens on one of them, the IPv4 one: an IPv6 client of `localhost`
 *   would find nothing there.)
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';

/** An address to listen on; undefined: every interface (Node's `::`, or 0.0.0.0 without IPv6). */
export type ListenAddress = string | undefined;

const EVERY_INTERFACE = new Set(['0.0.0.0', '::', '[::]']);

/** The addresses `host` stands for, in the resolver's order, each once. */
export async function listenAddresses(host: string): Promise<ListenAddress[]> {
  if (EVERY_INTERFACE.has(host)) return [undefined];
  const literal = host.replace(/^\[(.*)\]$/, '$1');
  if (net.isIP(literal) !== 0) return [literal];
  const found = await lookup(host, { all: true, verbatim: true });
  return [...new Set(found.map((a) => a.address))];
}

/** How an address is written before `:port`: IPv6 in brackets; every interface as `[::]` or `0.0.0.0`, as bound. */
export const hostPort = (address: string, port: number) => `${address.includes(':') ? `[${address}]` : address}:${port}`;

/** One listening socket. */
export interface Bound {
  port: number;
  /** As bound, `host:port`. */
  address: string;
  close(): void;
}

/** Tries to find one port free on every address, when the kernel picks it (port 0). */
const PORT_ATTEMPTS = 10;

/**
 * Listens on every address of `host` on one port, with `listenOne` per address. Port 0: the
 * kernel picks the first listener's port and the others take the same (tried again on another
 * port if one of them has it taken, a bounded number of times). Any failure closes what was bound;
 * the last address is bound last, so a server that must not be closed and listened again can take it.
 */
export async function listenOnEvery(host: string, port: number, listenOne: (address: ListenAddress, port: number, last: boolean) => Promise<Bound>): Promise<Bound[]> {
  const addresses = await listenAddresses(host);
  for (let attempt = 1; ; attempt++) {
    const bound: Bound[] = [];
    try {
      for (const [i, address] of addresses.entries()) bound.push(await listenOne(address, bound[0]?.port ?? port, i === addresses.length - 1));
      return bound;
    } catch (err) {
      for (const b of bound) b.close();
      const retry = port === 0 && bound.length > 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < PORT_ATTEMPTS;
      if (!retry) throw err;
    }
  }
}

/** Listens with a net.Server (an http.Server is one) on one address. */
export function bindServer(server: net.Server, address: ListenAddress, port: number): Promise<Bound> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address, port }, () => {
      server.off('error', reject);
      const a = server.address() as net.AddressInfo;
      resolve({ port: a.port, address: hostPort(a.address, a.port), close: () => server.close() });
    });
  });
}
