/** Reads the attestation inputs named by the configuration at start; a bad file stops the start. */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import { type PcrValues, PcrValuesError, parsePcrValues } from '../attestation/pcr-values.js';
import { StartupError } from '../util/startup-error.js';

export function loadPcrValues(file: string): PcrValues | undefined {
  if (file === '') return undefined;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new StartupError(`cannot read MANAGER_PCR_VALUES=${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    return parsePcrValues(text);
  } catch (err) {
    if (err instanceof PcrValuesError) throw new StartupError(`invalid MANAGER_PCR_VALUES=${JSON.stringify(file)}: ${err.message}`);
    throw err;
  }
}

export function loadSigningKey(file: string): KeyObject | undefined {
  if (file === '') return undefined;
  let pem: Buffer;
  try {
    pem = fs.readFileSync(file);
  } catch (err) {
    throw new StartupError(`cannot read MANAGER_CORIM_SIGNING_KEY=${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new StartupError(`MANAGER_CORIM_SIGNING_KEY=${JSON.stringify(file)} is not a PEM private key (SEC 1 or PKCS#8)`);
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new StartupError(`MANAGER_CORIM_SIGNING_KEY=${JSON.stringify(file)} must be an EC P-256 key (ES256)`);
  }
  return key;
}
