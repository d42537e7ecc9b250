/**
 * The HTTP endpoint: GET /health (application/health+json) and GET /metrics (Prometheus text).
 * TLS and mutual TLS from the MANAGER_HTTP_ settings, exactly as the gRPC server. Connections
 * are capped and bounded in time like the gRPC port's (src/api/connection-guard.ts).
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Registry } from 'prom-client';
import type { Config } from '../../config/types.js';
import type { BuildInfo } from '../../telemetry/build-info.js';
import type { ConnectionGuard } from '../connection-guard.js';
import type { GuestPeerGate, PeerVerdict } from '../guest-peer.js';
import { bindServer, listenOnEvery } from '../listen-addresses.js';
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

/**
 * The HTTP server's limits: MANAGER_HTTP_SERVER_* as the Go manager's net/http server reads them
 * (after httpLimits), and how long a socket may be silent (MANAGER_CONNECTION_IDLE_TIMEOUT).
 */
export interface HttpLimits {
  /** The whole request, from its first byte. */
  readTimeoutMs: number;
  /** Its headers (never more than the whole request). */
  readHeaderTimeoutMs: number;
  /** From a request's headers to the last byte of its answer. */
  writeTimeoutMs: number;
  /** An idle keep-alive connection. */
  idleTimeoutMs: number;
  /** The request line and headers. */
  maxHeaderBytes: number;
  silentMs: number;
}

/** Go's http.DefaultMaxHeaderBytes: what MaxHeaderBytes 0 means there. */
export const GO_DEFAULT_MAX_HEADER_BYTES = 1 << 20;

/** The limits the settings give, with Go's meaning of 0: header and idle timeouts as the read timeout, header bytes Go's default. */
export function httpLimits(s: Config['httpServer'], silentMs: number): HttpLimits {
  return {
    readTimeoutMs: s.readTimeoutMs,
    readHeaderTimeoutMs: Math.min(s.readHeaderTimeoutMs || s.readTimeoutMs, s.readTimeoutMs),
    writeTimeoutMs: s.writeTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs || s.readTimeoutMs,
    maxHeaderBytes: s.maxHeaderBytes || GO_DEFAULT_MAX_HEADER_BYTES,
    silentMs,
  };
}

/** /health and /metrics need a handful of headers; a client sending more is not one of ours. */
export const MAX_HEADERS_COUNT = 64;

function serverOptions(limits: HttpLimits): http.ServerOptions {
  return {
    headersTimeout: limits.readHeaderTimeoutMs,
    requestTimeout: limits.readTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    maxHeaderSize: limits.maxHeaderBytes,
    // Node enforces the two timeouts when it sweeps its connections (every 30 s by default).
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, limits.readHeaderTimeoutMs)),
  };
}

/** Go's WriteTimeout: a request not answered, to its last byte, this long after its headers costs its connection. */
function answeredWithin(ms: number, handler: http.RequestListener): http.RequestListener {
  return (req, res) => {
    const timer = setTimeout(() => req.socket.destroy(), ms);
    res.once('close', () => clearTimeout(timer));
    handler(req, res);
  };
}

export function createHttpServer(deps: HttpEndpointDeps, tls: TlsMaterial | undefined, gate?: GuestPeerGate, limits?: HttpLimits, guard?: ConnectionGuard): http.Server {
  const guardedHandler = gate ? guarded(gate, httpHandler(deps)) : httpHandler(deps);
  const handler = limits ? answeredWithin(limits.writeTimeoutMs, guardedHandler) : guardedHandler;
  const options = limits ? serverOptions(limits) : {};
  // Under TLS, the handshake too must end within the headers timeout (Node's default: 120 s;
  // Go's, the read or write timeout, whichever is shorter).
  const server = tls ? httpsServer(handler, tls, limits ? { ...options, handshakeTimeout: limits.readHeaderTimeoutMs } : options) : http.createServer(options, handler);
  if (limits) {
    server.maxHeadersCount = MAX_HEADERS_COUNT;
    // A socket silent for this long (a client that stops reading a response) is destroyed.
    server.setTimeout(limits.silentMs);
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
 * Listens on every address of `host` (listen-addresses.ts) and resolves with the port and the
 * addresses bound (port 0 picks a free one). The server itself listens on the last address
 * (bound last: a failure before never has it listen and close); each other address hands its
 * connections to it, so caps, guest checks, TLS and limits are the same, and closing the server
 * closes them all.
 */
export async function listen(server: http.Server, host: string, port: number): Promise<{ port: number; addresses: string[] }> {
  const bound = await listenOnEvery(host, port, (address, p, last) =>
    bindServer(last ? server : net.createServer((socket) => server.emit('connection', socket)), address, p),
  );
  server.once('close', () => bound.slice(0, -1).forEach((b) => b.close()));
  return { port: bound[0]!.port, addresses: bound.map((b) => b.address) };
}
