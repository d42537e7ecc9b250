// One call from a real client to the daemon's gRPC port or HTTP endpoint, answering 'served' or
// 'refused (why)'. `client`: {} for plain text; { tls: true, ca, key, cert } for TLS (ca: the
// CA trusted for the server's certificate; key and cert: the client's, for mutual TLS).
import http from 'node:http';
import https from 'node:https';
import * as grpc from '@grpc/grpc-js';
import { call, managerPkg } from './daemon.mjs';

export async function grpcProbe(port, client) {
  const creds = client.tls ? grpc.credentials.createSsl(client.ca, client.key ?? null, client.cert ?? null) : grpc.credentials.createInsecure();
  const c = new managerPkg.ManagerService(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'localhost' });
  try {
    const res = await call(c, 'CVMInfo', { id: 'probe' }, 5_000);
    return res.id === 'probe' ? 'served' : `answered ${JSON.stringify(res)}`;
  } catch (err) {
    return `refused (${err.code})`;
  } finally {
    c.close();
  }
}

export function httpProbe(port, client) {
  return new Promise((resolve) => {
    const options = { host: '127.0.0.1', port, path: '/health', agent: false, timeout: 5_000 };
    const get = client.tls ? https.get({ ...options, servername: 'localhost', ca: client.ca, key: client.key, cert: client.cert }, answered) : http.get(options, answered);
    function answered(res) {
      res.resume();
      // 200, or 503 while the daemon still recovers: either way /health answered.
      res.on('end', () => resolve(res.statusCode === 200 || res.statusCode === 503 ? 'served' : `answered ${res.statusCode}`));
      res.on('error', (err) => resolve(`refused (${err.code ?? err.message})`));
    }
    get.on('timeout', () => get.destroy(new Error('timeout')));
    get.on('error', (err) => resolve(`refused (${err.code ?? err.message})`));
  });
}

/** Both ports, with the same client. */
export async function probeBoth(d, client) {
  return { grpc: await grpcProbe(d.port, client), http: await httpProbe(d.httpPort, client) };
}
