/**
 * The gRPC TCP listener: the daemon accepts each connection itself, counts it against the
 * connection caps (src/api/connection-guard.ts), asks the guest-peer gate who is calling (once
 * per connection, within a deadline), then hands the connection to the server or, for a guest,
 * closes it unread. A guest's bytes therefore never reach HTTP/2 or a handler, and host callers
 * pay nothing per call.
 */
import net from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ConnectionGuard } from '../connection-guard.js';
import type { GuestPeerGate } from '../guest-peer.js';
import { bindServer, listenOnEvery } from '../listen-addresses.js';

export interface GrpcListener {
  port: number;
  /** Where it listens, as host:port (`[::]:7001` for every interface, dual-stack), comma-separated when several. */
  address: string;
  /** Stops accepting; connections already handed over are closed by their servers' shutdown. */
  close(): void;
}

export interface GrpcListenerOptions {
  host: string;
  port: number;
  credentials: grpc.ServerCredentials;
  server: grpc.Server;
  gate: GuestPeerGate;
  /** The caps and the verdict deadline of this port. */
  guard: ConnectionGuard;
  log: Logger;
}

export async function listenGrpc(o: GrpcListenerOptions): Promise<GrpcListener> {
  const main = o.server.createConnectionInjector(o.credentials);
  const onConnection = (socket: net.Socket) => {
    socket.on('error', () => undefined);
    // Over a cap: reset before a byte is read, let alone a TLS handshake or an HTTP/2 session.
    if (!o.guard.admit(socket)) return;
    o.guard.verdictWithin(o.gate, socket).then(
      (v) => {
        // No verdict in time (the guard closed it), or the peer went meanwhile.
        if (v === undefined || socket.destroyed) return;
        if (v.refuse) {
          // A guest's connection is closed unread: no byte of it reaches HTTP/2, let alone a handler.
          o.gate.refused(v, 'grpc', 'connection');
          socket.destroy();
          return;
        }
        try {
          main.injectConnection(socket);
        } catch (err) {
          o.log.error({ err: String(err) }, 'could not hand a gRPC connection to the server; closed');
          socket.destroy();
          return;
        }
        // The HTTP/2 session has taken the socket over; let it read.
        socket.resume();
      },
      (err: unknown) => {
        o.log.error({ err: String(err) }, 'could not attribute a gRPC connection; closed');
        socket.destroy();
      },
    );
  };
  // One listener per address of the host (listen-addresses.ts), all feeding the one server.
  // Paused: nothing is read from a connection before it is known whose it is.
  const bound = await listenOnEvery(o.host, o.port, async (address, port) => {
    const tcp = net.createServer({ pauseOnConnect: true }, onConnection);
    const b = await bindServer(tcp, address, port);
    tcp.on('error', (err) => o.log.error({ err: String(err) }, 'gRPC listener error'));
    return b;
  });
  return {
    port: bound[0]!.port,
    address: bound.map((b) => b.address).join(', '),
    close: () => {
      for (const b of bound) b.close();
      o.guard.close();
    },
  };
}
