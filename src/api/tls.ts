/**
 * Server credentials from the MANAGER_GRPC_/MANAGER_HTTP_ TLS settings. Files are read and the
 * key checked against the certificate at start, so a bad file stops the start with one clear line.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import type { ServerConfig } from '../config/types.js';
import { StartupError } from '../util/startup-error.js';

export interface TlsMaterial {
  key: Buffer;
  certChain: Buffer;
  /** CAs that client certificates must chain to; undefined: no client certificates asked for. */
  clientCa: Buffer | undefined;
}

function readPem(variable: string, file: string): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new StartupError(`cannot read ${variable}=${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (!data.toString('latin1').includes('-----BEGIN ')) {
    throw new StartupError(`${variable}=${JSON.stringify(file)} is not a PEM file`);
  }
  return data;
}

export function loadTlsMaterial(prefix: string, s: ServerConfig): TlsMaterial | undefined {
  if (s.serverCert === '') return undefined;
  const cert = readPem(`${prefix}SERVER_CERT`, s.serverCert);
  const key = readPem(`${prefix}SERVER_KEY`, s.serverKey);
  const chainExtra = s.serverCaCerts === '' ? Buffer.alloc(0) : readPem(`${prefix}SERVER_CA_CERTS`, s.serverCaCerts);
  const clientCa = s.clientCaCerts === '' ? undefined : readPem(`${prefix}CLIENT_CA_CERTS`, s.clientCaCerts);
  try {
    tls.createSecureContext({ cert, key, ca: clientCa });
  } catch (err) {
    const reason = (err as Error).message;
    throw new StartupError(
      `${prefix}SERVER_CERT=${JSON.stringify(s.serverCert)} and ${prefix}SERVER_KEY=${JSON.stringify(s.serverKey)} do not form a usable TLS identity: ${reason}`,
    );
  }
  const certChain = chainExtra.length > 0 ? Buffer.concat([cert, Buffer.from('\n'), chainExtra]) : cert;
  return { key, certChain, clientCa };
}
