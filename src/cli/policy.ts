import { createPublicKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import { inspectPolicy } from '../attestation/inspect.js';
import { StartupError } from '../util/startup-error.js';

export const POLICY_HELP = `Usage: cocos-manager policy inspect FILE [--key PUBLIC.pem]

Decodes an attestation policy (a CoRIM, signed or not, or the JSON form) and prints it as
readable JSON: what a CVM will be held to. "pins" comes first: the values a verifier checks,
when the launch values were pinned (at CreateVm, or after the launch for a VM re-adopted from
an older record) and the SHA-384 of the launch files they were pinned from. With --key, the
COSE signature is verified with that public key (PEM, or a JWK file); a signature that does not
verify is an error (exit 1).
`;

function readPublicKey(file: string): KeyObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new StartupError(`cannot read --key ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code}`);
  }
  try {
    return text.trimStart().startsWith('{') ? createPublicKey({ key: JSON.parse(text), format: 'jwk' }) : createPublicKey(text);
  } catch {
    throw new StartupError(`--key ${JSON.stringify(file)} is not a public key (PEM or JWK)`);
  }
}

export function policyInspectCommand(file: string, keyFile: string | undefined): string {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new StartupError(`cannot read ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code}`);
  }
  const key = keyFile ? readPublicKey(keyFile) : undefined;
  return JSON.stringify(inspectPolicy(bytes, key), null, 2);
}
