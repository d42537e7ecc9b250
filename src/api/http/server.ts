/**
 * The HTTP endpoint: GET /health (application/health+json) and GET /metrics (Prometheus text).
 * TLS and mutual TLS from the MANAGER_HTTP_ settings, exactly as the gRPC server. Connections
 * are capped and bounded in time like the gRPC port's (src/api/connection-guard.ts).
 */
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Registry } from 'prom-client';
import type { BuildInfo } from '../../telemetry/build-info.js';
import type { ConnectionGuard } from '../connection-guard.js';
import type { GuestPeerGate, PeerVerdict } from '../guest-peer.js';
import type { TlsMaterial } from '../tls.js';

/** 'recovering': serving, while VMs an earlier run left are being re-adopted. */
export type Lifecycle = 'starting' | 'recovering' | 'serving' | 'stopping';

export interface HttpEndpointDeps {
  registry: Registry;
  build: BuildInfo;
  instanceId: string;
  lifecycle: () => Lifecycle;
}

const ROUTES = new Set(['/health', '/metrics']);

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
  res.end(body);
}

export function httpHandler(deps: HttpEndpointDeps): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    if (!ROUTES.has(path)) return send(res, 404, 'text/plain; charset=utf-8', `no such path: ${path}\n`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'text/plain; charset=utf-8', `method ${req.method} not allowed on ${path}\n`, { allow: 'GET, HEAD' });
    }
    if (path === '/health') {
      const state = deps.lifecycle();
      const ok = state === 'serving' || state === 'recovering';
      const body = {
        // draft-inadarei-api-health-check: 'warn' is healthy with a remark.
        status: state === 'recovering' ? 'warn' : ok ? 'pass' : 'fail',
        version: deps.build.version,
        commit: deps.build.commit,
        description: deps.build.description,
        build_time: deps.build.build_time,
        instance_id: deps.instanceId,
        ...(state === 'serving' ? {} : { output: state === 'recovering' ? 'serving; re-adopting the VMs an earlier run left' : `the manager is ${state}` }),
      };
      return send(res, ok ? 200 : 503, 'application/health+json', `${JSON.stringify(body)}\n`);
    }
    deps.registry.metrics().then(
      (text) => send(res, 200, deps.registry.contentType, text),
      (err: Error) => send(res, 500, 'text/plain; charset=utf-8', `metrics unavailable: ${err.message}\n`),
    );
  };
}

/**
 * A request is answered only once its connection's verdict says it is not a guest's (the
 * verdict is the connection's, made when it opened); a guest's connection is closed, unanswered.
 */
function guarded(gate: GuestPeerGate, handler: http.RequestListener): http.RequestListener {
  return (req, res) => {
    gate.verdictFor(req.socket).then(
      (v) => {
        if (!v.refuse) return handler(req, res);
        refuse(gate, v, req.socket, `${req.method} ${(req.url ?? '/').split('?', 1)[0]}`);
      },
      () => req.socket.destroy(),
    );
  };
}

/** Closes a guest's connection at once (logged once per VM per window). */
function refuse(gate: GuestPeerGate, v: PeerVerdict, socket: net.Socket, what: string): void {
  if (socket.destroyed) return;
  gate.refused(v, 'http', what);
  socket.destroy();
}

/** How long a client has to send a request's headers (MANAGER_HTTP_HEADERS_TIMEOUT) and how long a socket may be silent. */
export interface HttpLimits {
  headersTimeoutMs: number;
  idleMs: number;
}

/** An idle keep-alive connection is closed after this (Node's default, said explicitly). */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** /health and /metrics need a handful of headers; a client sending more is not one of ours. */
export const MAX_HEADERS_COUNT = 64;
export const MAX_HEADER_SIZE = 8 * 1024;

function serverOptions(limits: HttpLimits): http.ServerOptions {
  return {
    // A GET has no body: its request is its headers, so both deadlines are the same.
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    maxHeaderSize: MAX_HEADER_SIZE,
    // Node enforces the two timeouts when it sweeps its connections (every 30 s by default).
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, limits.headersTimeoutMs)),
  };
}

export function createHttpServer(deps: HttpEndpointDeps, tls: TlsMaterial | undefined, gate?: GuestPeerGate, limits?: HttpLimits, guard?: ConnectionGuard): http.Server {
  const handler = gate ? guarded(gate, httpHandler(deps)) : httpHandler(deps);
  const options = limits ? serverOptions(limits) : {};
  // Under TLS, the handshake too must end within the headers timeout (Node's default: 120 s).
  const server = tls ? httpsServer(handler, tls, limits ? { ...options, handshakeTimeout: limits.headersTimeoutMs } : options) : http.createServer(options, handler);
  if (limits) {
    server.maxHeadersCount = MAX_HEADERS_COUNT;
    // A socket silent for this long (a client that stops reading a response) is destroyed.
    server.setTimeout(limits.idleMs);
  }
  // Who is calling is found out as soon as the connection opens (after TLS), once.
  const verdict = (socket: net.Socket) =>
    void (guard ? guard.verdictWithin(gate!, socket) : gate!.verdictFor(socket)).then(
      (v) => v?.refuse && refuse(gate!, v, socket, 'connection'),
      () => socket.destroy(),
    );
  if (guard) {
    // The caps come first, before HTTP (or TLS) sees the socket: Node's own 'connection'
    // listener is called only for an admitted one.
    const own = server.listeners('connection') as ((s: net.Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: net.Socket) => {
      if (!guard.admit(socket)) return;
      for (const l of own) l.call(server, socket);
      if (gate && !tls) verdict(socket);
    });
    if (gate && tls) server.on('secureConnection', verdict);
  } else if (gate) {
    server.on(tls ? 'secureConnection' : 'connection', verdict);
  }
  if (guard) server.on('close', () => guard.close());
  return server;
}

function httpsServer(handler: http.RequestListener, tls: TlsMaterial, options: https.ServerOptions): http.Server {
  return https.createServer(
    {
      ...options,
      key: tls.key,
      cert: tls.certChain,
      ca: tls.clientCa,
      requestCert: tls.clientCa !== undefined,
      rejectUnauthorized: tls.clientCa !== undefined,
    },
    handler,
  );
}

/**
 * Listens and resolves with the bound port (port 0 picks a free one). An empty host listens on
 * `::` dual-stack where IPv6 exists and on 0.0.0.0 otherwise (Node's own fallback), like Go's ":port".
 */
export function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: host === '' ? undefined : host, port }, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr !== null ? addr.port : port);
    });
  });
}
