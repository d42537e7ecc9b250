/**
 * Whether VMs are SEV-SNP, TDX or plain: decided once at start from what the environment declares
 * (`true`, `false` or `auto` for each) and what the host supports (src/host/cvm-host.ts reads it,
 * exactly as the Go manager does). Pure: the host's answers come in as values.
 *
 * The Go manager ignores MANAGER_QEMU_ENABLE_SEV_SNP and _ENABLE_TDX: a host that supports a
 * technology gets it. The rule here: no value of a Go manager's environment file gives plain VMs
 * where the Go manager gives confidential ones. So `auto` (the default) is Go's decision, `false`
 * on a host that supports the technology is ignored (with a warning) unless the operator also
 * opts out by name (MANAGER_ALLOW_NON_CONFIDENTIAL_VMS), and `true` on a host that lacks it stays
 * on (stricter than Go): CreateVm then fails, naming what the host lacks.
 */
import { ConfigError } from './setting.js';
import { SETTINGS } from './settings.js';

/** One technology on this host: whether it can run such guests, and what keeps it off (one phrase each). */
export interface HostSupport {
  enabled: boolean;
  missing: string[];
}

/** What the host says of both technologies (src/host/cvm-host.ts). */
export interface CvmHostFacts {
  sevSnp: HostSupport;
  tdx: HostSupport;
}

/** Which confidential-computing technology the VMs of this daemon use. */
export type CvmKind = 'sev-snp' | 'tdx' | 'plain';

export function cvmKind(q: { enableSevSnp: boolean; enableTdx: boolean }): CvmKind {
  if (q.enableSevSnp) return 'sev-snp';
  if (q.enableTdx) return 'tdx';
  return 'plain';
}

/** A technology's variable as the environment gave it: its value (`auto` when unset or empty) and how to name it. */
export interface DeclaredCvm {
  value: boolean | 'auto';
  /** The variable it came under, e.g. MANAGER_QEMU_ENABLE_SEV_SNP. */
  variable: string;
  /** The text given; undefined when unset or empty (the default, auto). */
  text: string | undefined;
}

export interface CvmDecision {
  technology: 'SEV-SNP' | 'TDX';
  declared: boolean | 'auto';
  /** VMs use this technology. */
  on: boolean;
  host: HostSupport;
  /** How it was decided, one sentence (logged at start, shown by `check`, kept in each VM's record). */
  reason: string;
  /** Said at warn at every start: a `false` ignored on a host that supports the technology. */
  warning?: string;
  /** Off on a host that supports it, by the opt-out. */
  optedOut?: boolean;
  /** On, but the host lacks it: why every CreateVm fails (FAILED_PRECONDITION). */
  unavailable?: string;
}

export interface CvmResolution {
  sevSnp: CvmDecision;
  tdx: CvmDecision;
  kind: CvmKind;
  /** Why VMs are of this kind: the reason of the technology that is on, or of both when neither is. */
  reason: string;
  /** MANAGER_ALLOW_NON_CONFIDENTIAL_VMS is true: said at warn at every start, with what it changed. */
  optOutWarning?: string;
  /** Why no VM can be launched on this host (the technology that is on is missing); undefined: they can. */
  unavailable?: string;
}

/** The opt-out's name, for the messages. */
export const OPT_OUT = SETTINGS.qemu.allowNonConfidentialVms.env;

const givenText = (d: DeclaredCvm) => (d.text === undefined ? `${d.variable} is unset (auto)` : `${d.variable}=${JSON.stringify(d.text)}`);

function decide(technology: CvmDecision['technology'], d: DeclaredCvm, host: HostSupport, optOut: boolean): CvmDecision {
  const given = givenText(d);
  const lacks = `this host lacks it (${host.missing.join('; ')})`;
  const base = { technology, declared: d.value, host };
  if (d.value === 'auto') {
    return { ...base, on: host.enabled, reason: host.enabled ? `${technology} on: ${given} and this host supports it` : `${technology} off: ${given} and ${lacks}` };
  }
  if (d.value) {
    if (host.enabled) return { ...base, on: true, reason: `${technology} on: ${given}` };
    const unavailable = `${given} but ${lacks}: no VM can be launched until the host supports ${technology}, or ${d.variable} is auto or false`;
    return { ...base, on: true, reason: `${technology} on: ${given}, but ${lacks}`, unavailable };
  }
  if (!host.enabled) return { ...base, on: false, reason: `${technology} off: ${given}` };
  if (optOut) return { ...base, on: false, reason: `${technology} off: ${given} and ${OPT_OUT}=true, on a host that supports it`, optedOut: true };
  return {
    ...base,
    on: true,
    reason: `${technology} on: this host supports it, so ${given} is ignored, as the Go manager ignores it`,
    warning: `${given} is ignored: this host supports ${technology}, and the Go manager launches ${technology} guests on such a host whatever the variable says; to launch plain (non-confidential) VMs here, also set ${OPT_OUT}=true`,
  };
}

/**
 * Decides both technologies. Both on stops the start: a ConfigError naming the TDX variable and
 * how each was decided.
 */
export function resolveCvm(declared: { sevSnp: DeclaredCvm; tdx: DeclaredCvm; allowNonConfidential: boolean }, host: CvmHostFacts): CvmResolution {
  if (host === undefined) throw new Error("resolveCvm needs the host's facts (src/host/cvm-host.ts cvmHostFacts())");
  const optOut = declared.allowNonConfidential;
  const sevSnp = decide('SEV-SNP', declared.sevSnp, host.sevSnp, optOut);
  const tdx = decide('TDX', declared.tdx, host.tdx, optOut);
  if (sevSnp.on && tdx.on) {
    const why = (d: DeclaredCvm) => `${givenText(d)}${d.value === true ? '' : d.value === 'auto' ? ' and the host supports it' : ', ignored as the host supports it'}`;
    throw new ConfigError(
      declared.tdx.variable,
      `SEV-SNP and TDX cannot both be on (${why(declared.sevSnp)}; ${why(declared.tdx)}): set ${declared.sevSnp.variable} or ${declared.tdx.variable} to false${host.sevSnp.enabled || host.tdx.enabled ? ` (with ${OPT_OUT}=true where the host supports it)` : ''}`,
    );
  }
  const kind = cvmKind({ enableSevSnp: sevSnp.on, enableTdx: tdx.on });
  const optedOut = [sevSnp, tdx].find((d) => d.optedOut);
  const optOutWarning = !optOut
    ? undefined
    : optedOut
      ? `${optedOut.technology} is off on a host that supports it (${OPT_OUT}=true): VMs launched here are not confidential, where the Go manager would launch ${optedOut.technology} guests`
      : `${OPT_OUT}=true changes nothing now (${kind === 'plain' ? 'this host supports neither SEV-SNP nor TDX' : `VMs are ${kind}`}), but would let a false ${declared.sevSnp.variable} or ${declared.tdx.variable} launch plain VMs on a host that supports the technology`;
  const reason = sevSnp.on ? sevSnp.reason : tdx.on ? tdx.reason : `${sevSnp.reason}; ${tdx.reason}`;
  return { sevSnp, tdx, kind, reason, optOutWarning, unavailable: sevSnp.unavailable ?? tdx.unavailable };
}
