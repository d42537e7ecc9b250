/** The daemon's configuration, as read once from the environment (see docs/configuration.md). */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type PolicyFormat = 'corim' | 'json';

export interface ServerConfig {
  host: string;
  port: number;
  serverCert: string;
  serverKey: string;
  serverCaCerts: string;
  clientCaCerts: string;
}

export interface PortRange {
  first: number;
  last: number;
}

export interface QemuConfig {
  binPath: string;
  useSudo: boolean;
  /** Who QEMU runs as under sudo (`sudo -u`): a user name or numeric id, never root. */
  sudoUser: string;
  enableKvm: boolean;
  enableSevSnp: boolean;
  enableTdx: boolean;
  machine: string;
  cpu: string;
  smpCount: number;
  smpMaxCpus: number;
  memId: string;
  memorySize: string;
  memorySlots: number;
  maxMemory: string;
  ovmfCode: { if: string; format: string; unit: number; file: string; readonly: string };
  ovmfVersion: string;
  ovmfVars: { if: string; format: string; unit: number; file: string };
  ovmfFile: string;
  netdevId: string;
  hostFwdAgent: number;
  guestFwdAgent: number;
  hostFwdRange: PortRange;
  virtioNetPci: { disableLegacy: string; iommuPlatform: boolean; addr: string; romfile: string };
  kernelFile: string;
  rootfsFile: string;
  kernelCmdline: string;
  sevSnp: { id: string; cbitpos: number; reducedPhysBits: number };
  enableHostData: boolean;
  hostData: string;
  igvmId: string;
  igvmFile: string;
  tdxId: string;
  quoteGenerationPort: number;
  noGraphic: boolean;
  monitor: string;
}

/** A local endpoint guests may still connect to (MANAGER_GUEST_ALLOWED_LOCAL_PORTS). */
export interface LocalAllowRule {
  protocol: 'tcp' | 'udp';
  /** Absent: every local address. */
  address?: string;
  port: number;
}

/** What keeps guests off the host (SECURITY.md): a uid per VM and a connect-time firewall. */
export interface GuestIsolationConfig {
  /** A root daemon runs each QEMU as a uid of its own and installs the firewall; false: neither. */
  enabled: boolean;
  /** The uids (and gids, same numbers) VMs' QEMUs run as. */
  uidRange: { first: number; last: number };
  /** Exceptions to the firewall, besides the host's nameservers. */
  allowLocal: LocalAllowRule[];
}

export type SnpProduct = 'Milan' | 'Genoa' | 'Turin';

/** Reference values of attestation policies that the host cannot compute itself. */
export interface AttestationConfig {
  /** Empty: derived from MANAGER_QEMU_CPU (EPYC → Milan). */
  snpProduct: SnpProduct | '';
  snpGuestPolicy: bigint;
  snpVmpl: number;
  snpMinLaunchTcb: bigint;
  /** How long igvmmeasure may run. */
  measureTimeoutMs: number;
  /** Hex, 48 bytes each; empty when not configured. */
  tdx: {
    mrtd: string;
    rtmr: [string, string, string, string];
    mrseam: string;
    tdAttributes: string;
    xfam: string;
    minTeeTcbSvn: string;
  };
}

export interface Config {
  logLevel: LogLevel;
  /** Empty: the daemon generates a UUID at start. */
  instanceId: string;
  attestationPolicyBinaryPath: string;
  pcrValuesFile: string;
  corimSigningKey: string;
  eosVersion: string;
  /** 0 means no limit. */
  maxVms: number;
  tracing: TracingConfig;
  grpc: ServerConfig;
  http: ServerConfig;
  qemu: QemuConfig;
  stateDir: string;
  startTimeoutMs: number;
  stopTimeoutMs: number;
  /** RemoveVm and TTL first ask the guest to power down (QMP system_powerdown) and wait this long; 0: off. */
  powerdownTimeoutMs: number;
  attestationPolicyFormat: PolicyFormat;
  attestation: AttestationConfig;
  /** Calls that arrive through a VM's user-mode network (a guest reaching 10.0.2.2). */
  guestPeers: {
    refuse: boolean;
    /** Also refuse local peers that cannot be attributed (QEMU's fds unreadable, e.g. under sudo). */
    refuseUnattributed: boolean;
  };
  isolation: GuestIsolationConfig;
  admin: {
    /** Unix socket of ManagerAdmin (and ManagerService); empty: none. */
    socket: string;
    /** Group given the socket (mode 0660); empty: the daemon's own group. */
    socketGroup: string;
    /** ManagerAdmin also on the gRPC TCP port (needs mutual TLS). */
    onGrpcPort: boolean;
  };
  console: {
    /** Cap of a VM's console.log; one rotated copy (console.log.1) is kept. */
    logMaxBytes: number;
    /** Console lines per VM per second that reach the daemon's log (a token bucket). */
    linesPerSecond: number;
  };
  /** Bounds of the connections to the gRPC TCP port and the HTTP port (each port its own caps). */
  connections: {
    /** Connections open at once on one port. */
    maxTotal: number;
    /** Connections open at once on one port from one peer address. */
    maxPerPeer: number;
    /** Longest wait of a new connection for its guest-peer verdict; then it is closed. */
    verdictTimeoutMs: number;
    /** A gRPC connection with no call open, or an HTTP socket with no traffic, is closed after this. */
    idleMs: number;
    /** Time an HTTP client has to send its request's headers. */
    httpHeadersTimeoutMs: number;
  };
}

/** Which confidential-computing technology a VM launched with this configuration uses. */
export type CvmKind = 'sev-snp' | 'tdx' | 'plain';

export function cvmKind(q: Pick<QemuConfig, 'enableSevSnp' | 'enableTdx'>): CvmKind {
  if (q.enableSevSnp) return 'sev-snp';
  if (q.enableTdx) return 'tdx';
  return 'plain';
}

/**
 * Traces: the COCOS_JAEGER_* settings and the standard OTEL_* variables, the latter winning
 * where both say the same thing (docs/configuration.md, "Tracing").
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
