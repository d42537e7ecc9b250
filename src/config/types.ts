/**
 * The daemon's configuration, as read once from the environment (see docs/configuration.md).
 * Its type is inferred from the declaration of the settings (settings.ts), never written here:
 * a setting added there is a property here, with the type its grammar yields.
 */
import type { ConfigOf } from './setting.js';
import type { SETTINGS } from './settings.js';

export type { LocalAllowRule, Range as PortRange } from './grammar.js';

export type Config = ConfigOf<typeof SETTINGS>;

export type LogLevel = Config['logLevel'];
export type PolicyFormat = Config['attestationPolicyFormat'];
export type ServerConfig = Config['grpc'];
export type QemuConfig = Config['qemu'];
export type GuestIsolationConfig = Config['isolation'];
export type AttestationConfig = Config['attestation'];
export type SnpProduct = Exclude<AttestationConfig['snpProduct'], ''>;

/** Which confidential-computing technology a VM launched with this configuration uses. */
export type CvmKind = 'sev-snp' | 'tdx' | 'plain';

export function cvmKind(q: Pick<QemuConfig, 'enableSevSnp' | 'enableTdx'>): CvmKind {
  if (q.enableSevSnp) return 'sev-snp';
  if (q.enableTdx) return 'tdx';
  return 'plain';
}
