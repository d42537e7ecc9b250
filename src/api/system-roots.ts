/**
 * The system's trusted roots, found where Go's crypto/x509 finds them on Linux: SSL_CERT_FILE, or
 * else the first of the distributions' bundles that exists; plus every file of SSL_CERT_DIR
 * (colon-separated), or else of the distributions' certificate directories. Go's gRPC server
 * checks client certificates against these when SERVER_CA_CERTS is set without CLIENT_CA_CERTS;
 * Node's own root list (Mozilla's, built in) would trust neither the CAs an operator added to the
 * system nor SSL_CERT_FILE, so a client Go lets in would be refused.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { certificateBlocks } from './pem.js';

const BUNDLES = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Gentoo
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL 6
  '/etc/ssl/ca-bundle.pem', // openSUSE
  '/etc/pki/tls/cacert.pem', // OpenELEC
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', // CentOS, RHEL 7
  '/etc/ssl/cert.pem', // Alpine
];
const DIRECTORIES = ['/etc/ssl/certs', '/etc/pki/tls/certs'];

/** The roots, each as PEM, each once; none when the system has none where Go looks. */
export function systemRoots(env: Readonly<Record<string, string | undefined>> = process.env): string[] {
  const bundles = env.SSL_CERT_FILE ? [env.SSL_CERT_FILE] : BUNDLES;
  const dirs = env.SSL_CERT_DIR ? env.SSL_CERT_DIR.split(':') : DIRECTORIES;
  // By DER: Debian's bundle and /etc/ssl/certs hold each root twice.
  const found = new Map<string, string>();
  const add = (file: string) => {
    try {
      for (const b of certificateBlocks(fs.readFileSync(file))) found.set(b.der.toString('base64'), b.text);
      return true;
    } catch {
      return false;
    }
  };
  // Go stops at the first bundle it can read.
  bundles.some(add);
  for (const dir of dirs) {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    // A symlink to a name in the same directory (OpenSSL's hash links) is a file already read.
    for (const e of entries) if (!sameDirectoryLink(dir, e)) add(path.join(dir, e.name));
  }
  return parsable([...found.values()]);
}

/**
 * The roots OpenSSL takes, as Go skips a root it cannot parse. One context tries them all at once
 * (parsing each apart costs ~0.75 ms a root, some 100 ms for a distribution's bundle).
 */
function parsable(pems: string[]): string[] {
  try {
    tls.createSecureContext({ ca: pems });
    return pems;
  } catch {
    return pems.filter((pem) => {
      try {
        new X509Certificate(pem);
        return true;
      } catch {
        return false;
      }
    });
  }
}

function sameDirectoryLink(dir: string, e: fs.Dirent): boolean {
  if (!e.isSymbolicLink()) return false;
  try {
    return !fs.readlinkSync(path.join(dir, e.name)).includes('/');
  } catch {
    return false;
  }
}
