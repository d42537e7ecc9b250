/**
 * Server credentials from the four TLS settings of a port (MANAGER_GRPC_ or MANAGER_HTTP_),
 * decided as the Go manager's gRPC server decides them and never weaker (docs/tls.md has every
 * combination): no certificate, plain text; certificate and key, TLS; CLIENT_CA_CERTS, client
 * certificates issued by those CAs; SERVER_CA_CERTS alone, client certificates from the system's
 * roots, as Go. The HTTP endpoint follows the same rule (Go's ignores both CA settings), so a
 * setting never means less on one port than on the other.
 *
 * Each value is a file or the PEM text itself, decided as Go's ReadFileOrData does: a path that
 * exists is read, anything else is taken as the text. Everything is read and checked at start,
 * so bad input stops the start with one line naming the setting.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import type { ServerConfig } from '../config/types.js';
import { StartupError } from '../util/startup-error.js';
import { certificatesIn, privateKeyIn } from './pem.js';
import { systemRoots } from './system-roots.js';

/** Who must show a certificate: nobody, a client of CLIENT_CA_CERTS, or one of the system's roots. */
export type ClientAuth = 'none' | 'client-ca-certs' | 'system-roots';

export interface TlsMaterial {
  key: Buffer;
  certChain: Buffer;
  clientAuth: ClientAuth;
  /** CAs that client certificates must chain to; undefined: no client certificates asked for. */
  clientCa: Buffer | undefined;
}

/** Who must show a certificate once TLS is on, from which settings are set (pure: `check` says the same). */
export function clientAuthOf(s: ServerConfig): ClientAuth {
  if (s.clientCaCerts !== '') return 'client-ca-certs';
  // Go: any CA setting requires client certificates; with no client CAs, crypto/tls checks them
  // against the system's roots.
  if (s.serverCaCerts !== '') return 'system-roots';
  return 'none';
}

export function loadTlsMaterial(prefix: string, s: ServerConfig): TlsMaterial | undefined {
  if (s.serverCert === '' && s.serverKey === '') {
    // Go serves plain text here, the CA settings unread: an operator who set one meant TLS.
    const stray = s.clientCaCerts !== '' ? 'CLIENT_CA_CERTS' : s.serverCaCerts !== '' ? 'SERVER_CA_CERTS' : undefined;
    if (stray === undefined) return undefined;
    throw new StartupError(`${prefix}${stray} is set but TLS is off: set ${prefix}SERVER_CERT and ${prefix}SERVER_KEY too, or leave ${prefix}${stray} empty`);
  }
  if (s.serverCert === '' || s.serverKey === '') {
    const missing = s.serverCert === '' ? 'SERVER_CERT' : 'SERVER_KEY';
    throw new StartupError(`${prefix}${missing} is empty: ${prefix}SERVER_CERT and ${prefix}SERVER_KEY turn TLS on together`);
  }
  const cert = readSetting(`${prefix}SERVER_CERT`, s.serverCert);
  const key = readSetting(`${prefix}SERVER_KEY`, s.serverKey);
  const leaf = certificates(cert);
  const keyPem = privateKeyIn(key.data);
  if (keyPem === undefined) throw new StartupError(`${key.named} holds no PEM private key`);
  const chain = s.serverCaCerts === '' ? [] : certificates(readSetting(`${prefix}SERVER_CA_CERTS`, s.serverCaCerts));
  const clientAuth = clientAuthOf(s);
  let clientCa: string[] | undefined;
  if (clientAuth === 'client-ca-certs') clientCa = certificates(readSetting(`${prefix}CLIENT_CA_CERTS`, s.clientCaCerts));
  if (clientAuth === 'system-roots') {
    clientCa = systemRoots();
    if (clientCa.length === 0) {
      throw new StartupError(
        `${prefix}SERVER_CA_CERTS without ${prefix}CLIENT_CA_CERTS asks clients for a certificate from the system's roots (as the Go manager does), and this system has none (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs): set ${prefix}CLIENT_CA_CERTS`,
      );
    }
  }
  const material: TlsMaterial = {
    key: Buffer.from(keyPem),
    // SERVER_CA_CERTS is sent after the certificate: Go only reads it, but a chain helps clients.
    certChain: Buffer.from([...leaf, ...chain].join('')),
    clientAuth,
    clientCa: clientCa && Buffer.from(clientCa.join('')),
  };
  try {
    // The CAs are parsed already (the system's roots cost ~0.5 ms each to add again).
    tls.createSecureContext({ cert: material.certChain, key: material.key });
  } catch (err) {
    throw new StartupError(`${cert.named} and ${key.named} do not form a usable TLS identity: ${(err as Error).message}`);
  }
  return material;
}

const SETTINGS = ['SERVER_CERT', 'SERVER_KEY', 'SERVER_CA_CERTS', 'CLIENT_CA_CERTS'];

/**
 * Once the material is read, the settings of `prefixes` that hold PEM text leave `env`: every child
 * (each VM's QEMU above all) inherits the daemon's environment, and the server's private key must
 * not be in a process a guest may take over. Paths stay: they give nothing away.
 */
export function forgetPemTexts(prefixes: string[], env: Record<string, string | undefined> = process.env): void {
  for (const name of prefixes.flatMap((p) => SETTINGS.map((s) => `${p}${s}`))) {
    if (env[name]?.includes('-----BEGIN ')) delete env[name];
  }
}

interface SettingData {
  data: Buffer;
  /** How errors name it: `VAR="path"`, or `VAR (PEM text)` (the text itself, maybe a key, is never echoed). */
  named: string;
}

/** A file if one exists at that path, else the PEM text itself: Go's ReadFileOrData, with errors. */
function readSetting(variable: string, value: string): SettingData {
  const missing = statError(value);
  if (missing === undefined) {
    const named = `${variable}=${JSON.stringify(value)}`;
    try {
      return { data: fs.readFileSync(value), named };
    } catch (err) {
      throw new StartupError(`cannot read ${named}: ${errorCode(err)}`);
    }
  }
  if (value.includes('-----BEGIN ')) return { data: Buffer.from(value), named: `${variable} (PEM text)` };
  throw new StartupError(`${variable}${shown(variable, value)} is neither a readable file (${missing}) nor PEM text`);
}

/** Why nothing is at that path (ENOENT, ENAMETOOLONG for a PEM text...), or undefined when something is. */
function statError(file: string): string | undefined {
  try {
    fs.statSync(file);
    return undefined;
  } catch (err) {
    return errorCode(err);
  }
}

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException).code ?? String(err);

/** The value in an error when it is neither a file nor PEM: a path is shown, what may be key material is not. */
function shown(variable: string, value: string): string {
  const pathLike = !/\s/.test(value) && value.length <= 1024;
  if (pathLike && (!variable.endsWith('_KEY') || /^[./~]/.test(value))) return `=${JSON.stringify(value)}`;
  return ` (${value.length} characters, not shown)`;
}

/** The certificates of a setting: at least one, and none that does not parse (Go skips those; we say so). */
function certificates(s: SettingData): string[] {
  const { pems, unparsable } = certificatesIn(s.data);
  if (unparsable > 0) throw new StartupError(`${s.named} holds ${unparsable} PEM CERTIFICATE block(s) that do not parse as X.509 certificates`);
  if (pems.length === 0) throw new StartupError(`${s.named} holds no PEM certificate`);
  return pems;
}
