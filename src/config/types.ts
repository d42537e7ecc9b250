/**
 * The daemon's configuration, as read once from the environment (see docs/configuration.md).
 * Its type is inferred from the declaration of the settings (settings.ts), never written here:
 * a setting added there is a property here, with the type its grammar yields.
 */
import type { CvmResolution } from './cvm.js';
import type { ConfigOf } from './setting.js';
import type { SETTINGS } from './settings.js';

export type { LocalAllowRule, Range as PortRange } from './grammar.js';
export { type CvmKind, cvmKind } from './cvm.js';

/** The settings as the environment declares them: SEV-SNP and TDX may still be `auto`. */
export type DeclaredConfig = ConfigOf<typeof SETTINGS>;

/** The QEMU settings with SEV-SNP and TDX decided: what every launch, check and template reads. */
export type QemuConfig = Omit<DeclaredConfig['qemu'], 'enableSevSnp' | 'enableTdx'> & { enableSevSnp: boolean; enableTdx: boolean };

/**
 * The configuration of a command: the declared settings, SEV-SNP and TDX decided, and how
 * (`cvm`), and what is derived from several settings and the OTEL_* variables (tracing).
 */
export type Config = Omit<DeclaredConfig, 'qemu'> & { qemu: QemuConfig; cvm: CvmResolution; tracing: TracingConfig };

export type LogLevel = Config['logLevel'];
export type PolicyFormat = Config['attestationPolicyFormat'];
export type ServerConfig = Config['grpc'];
export type GuestIsolationConfig = Config['isolation'];
export type AttestationConfig = Config['attestation'];
export type SnpProduct = Exclude<AttestationConfig['snpProduct'], ''>;

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
