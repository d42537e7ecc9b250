/**
 * PEM blocks picked out of a file or a setting's text the way Go's encoding/pem and
 * crypto/x509 pick them: text around and between blocks is ignored, so a bundle with comments or
 * a cert and its key in one file read as Go reads them.
 */
import { X509Certificate } from 'node:crypto';

export interface PemBlock {
  type: string;
  /** The block as written, armour included. */
  text: string;
  /** Its base64 body decoded; empty when a header line (Proc-Type...) makes it more than base64. */
  der: Buffer;
  hasHeaders: boolean;
}

const BLOCK = /-----BEGIN ([^\r\n-]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

export function pemBlocks(data: Buffer | string): PemBlock[] {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  return [...text.matchAll(BLOCK)].map((m) => {
    const body = m[2]!;
    const hasHeaders = body.includes(':');
    return { type: m[1]!, text: `${m[0]}\n`, der: hasHeaders ? Buffer.alloc(0) : Buffer.from(body.replace(/\s+/g, ''), 'base64'), hasHeaders };
  });
}

export interface Certificates {
  /** Each certificate that parses, as PEM. */
  pems: string[];
  /** CERTIFICATE blocks that do not parse (Go's AppendCertsFromPEM skips them silently). */
  unparsable: number;
}

/** The CERTIFICATE blocks without headers (the ones Go's AppendCertsFromPEM considers), unparsed. */
export function certificateBlocks(data: Buffer | string): PemBlock[] {
  return pemBlocks(data).filter((b) => b.type === 'CERTIFICATE' && !b.hasHeaders);
}

/** The certificates of a PEM bundle, each parsed. */
export function certificatesIn(data: Buffer | string): Certificates {
  const out: Certificates = { pems: [], unparsable: 0 };
  for (const b of certificateBlocks(data)) {
    try {
      out.pems.push(new X509Certificate(b.der).toString());
    } catch {
      out.unparsable++;
    }
  }
  return out;
}

/** The first private key block (`PRIVATE KEY`, `EC PRIVATE KEY`...), as Go's tls.X509KeyPair takes it. */
export function privateKeyIn(data: Buffer | string): string | undefined {
  return pemBlocks(data).find((b) => b.type === 'PRIVATE KEY' || b.type.endsWith(' PRIVATE KEY'))?.text;
}
