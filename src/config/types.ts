/**
 * The daemon's configuration, as read once from the environment (see docs/configuration.md).
 * Its type is inferred from the declaration of the settings (settings.ts), never written here:
 * a setting added there is a property here, with the type its grammar yields.
 */
import type { ConfigOf } from './setting.js';
import type { SETTINGS } from './settings.js';

export type { LocalAllowRule, Range as PortRange } from './grammar.js';

/** The settings, and what is derived from several of them and the OTEL_* variables (tracing). */
export type Config = ConfigOf<typeof SETTINGS> & { tracing: TracingConfig };

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

/**
 * Traces: the COCOS_JAEGER_* settings and the standard OTEL_* variables, the latter winning
 * where both say the same thing (config/tracing.ts; docs/configuration.md, "Tracing").
 */
export interface TracingConfig {
  /** Why tracing is off (the SDK is then not even loaded); undefined when it is on. */
  off?: string;
  /** Where spans are posted (OTLP over HTTP), and the variable that says so. */
  url: string;
  urlFrom: string;
  protocol: 'http/protobuf' | 'http/json';
  /**
   * Share of the traces started here that are sampled; `parentBased`: a caller's decision (its
   * traceparent's flag) is followed instead. `from`: the variable(s) that chose it.
   */
  sampler: { ratio: number; parentBased: boolean; from: string };
}
