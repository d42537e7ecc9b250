/**
 * The HTTP endpoint: GET /health (application/health+json) and GET /metrics (Prometheus text).
 * TLS and mutual TLS from the MANAGER_HTTP_ settings, exactly as the gRPC server.
 */
import http from 'node:http';
import https from 'node:https';
import type { Registry } from 'prom-client';
import type { BuildInfo } from '../../telemetry/build-info.js';
import type { GuestPeerGate } from '../guest-peer.js';
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

/** Answers 403 to a guest's connection (the verdict is the connection's, made when it opened). */
function guarded(gate: GuestPeerGate, handler: http.RequestListener): http.RequestListener {
  return (req, res) => {
    gate.verdictFor(req.socket).then(
      (v) => {
        if (!v.refuse) return handler(req, res);
        gate.refused(v, 'http', `${req.method} ${(req.url ?? '/').split('?', 1)[0]}`);
        send(res, 403, 'text/plain; charset=utf-8', 'forbidden: the manager does not answer guest VMs\n', { connection: 'close' });
      },
      () => send(res, 403, 'text/plain; charset=utf-8', 'forbidden\n', { connection: 'close' }),
    );
  };
}

export function createHttpServer(deps: HttpEndpointDeps, tls: TlsMaterial | undefined, gate?: GuestPeerGate): http.Server {
  const handler = gate ? guarded(gate, httpHandler(deps)) : httpHandler(deps);
  const server = tls ? httpsServer(handler, tls) : http.createServer(handler);
  // Who is calling is found out as soon as the connection opens, once.
  if (gate) server.on(tls ? 'secureConnection' : 'connection', (socket: import('node:net').Socket) => void gate.verdictFor(socket));
  return server;
}

function httpsServer(handler: http.RequestListener, tls: TlsMaterial): http.Server {
  return https.createServer(
    {
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
