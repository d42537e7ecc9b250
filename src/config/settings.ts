/**
 * Every setting of the daemon, declared once: its variable, grammar (with its bounds), default,
 * what an empty value means, and its doc line. The shape of this tree is the shape of `Config`
 * (types.ts infers it), docs/configuration.md and cocos-manager.env are checked against it
 * (test/every-setting-is-documented.test.mjs), and load.ts adds the rules that involve two
 * settings.
 */
import {
  absoluteUrl,
  boolean,
  boundedDuration,
  boundedDurationOrZero,
  byteSize,
  count,
  groupOrEmpty,
  hexBytes,
  idRange,
  integer,
  listenPort,
  localAllowList,
  mapped,
  nonBlankText,
  nonNegativeDuration,
  oneOf,
  onOff,
  orAuto,
  port,
  portRange,
  positiveCount,
  positiveDuration,
  qemuSize,
  ratio,
  slogLevel,
  text,
  uint32,
  uint64,
  unixSocketPath,
  unprivilegedUser,
} from './grammar.js';
import { gpuSelection, mmioMiB, qemuId } from './gpu-grammar.js';
import { type Declaration, type Setting, setting, settingsIn } from './setting.js';

export const MAX_START_TIMEOUT_MS = 5 * 60_000;

/** The six settings of a server (the gRPC API, the HTTP endpoint), after a prefix of their own. */
function server(prefix: 'MANAGER_GRPC_' | 'MANAGER_HTTP_', defaultPort: string, what: string) {
  return {
    host: setting({ env: `${prefix}HOST`, grammar: text, default: 'localhost', doc: `${what}: address to listen on (localhost: both loopback addresses it names; 0.0.0.0 or ::, every interface)` }),
    port: setting({ env: `${prefix}PORT`, grammar: listenPort, default: defaultPort, doc: `${what}: port to listen on` }),
    serverCert: setting({ env: `${prefix}SERVER_CERT`, grammar: text, default: '', doc: `${what}: PEM certificate of the server; with SERVER_KEY turns TLS on` }),
    serverKey: setting({ env: `${prefix}SERVER_KEY`, grammar: text, default: '', doc: `${what}: PEM private key of the server` }),
    serverCaCerts: setting({ env: `${prefix}SERVER_CA_CERTS`, grammar: text, default: '', doc: `${what}: PEM bundle of the CA(s) that issued the server certificate, sent as its chain` }),
    clientCaCerts: setting({ env: `${prefix}CLIENT_CA_CERTS`, grammar: text, default: '', doc: `${what}: PEM bundle of CAs; when set, every client must present a certificate they issued (mutual TLS)` }),
  };
}

/** A TDX reference value: hex of `bytes` bytes, empty when not configured (left out of policies). */
function tdx(name: string, bytes: number, doc: string) {
  return setting({ env: `MANAGER_TDX_${name}`, grammar: hexBytes(bytes), default: '', doc });
}

const Q = 'MANAGER_QEMU_';

export const SETTINGS = {
  logLevel: setting({ env: 'MANAGER_LOG_LEVEL', grammar: slogLevel, default: 'info', doc: 'debug, info, warn or error, in any case; Go\'s slog offsets (INFO+2, DEBUG-4) too' }),
  /** Empty: the daemon generates a UUID at start. */
  instanceId: setting({ env: 'MANAGER_INSTANCE_ID', grammar: text, default: '', doc: 'id of this manager instance; empty: a UUID generated at start' }),
  attestationPolicyBinaryPath: setting({ env: 'MANAGER_ATTESTATION_POLICY_BINARY_PATH', grammar: text, default: '../../build', doc: 'directory that holds the `igvmmeasure` binary' }),
  pcrValuesFile: setting({ env: 'MANAGER_PCR_VALUES', grammar: text, default: '', doc: 'path of a JSON file with the expected vTPM PCR values' }),
  corimSigningKey: setting({ env: 'MANAGER_CORIM_SIGNING_KEY', grammar: text, default: '', doc: 'path of a PEM EC P-256 private key (SEC 1 or PKCS#8) that signs attestation policies; empty: unsigned' }),
  eosVersion: setting({ env: 'MANAGER_EOS_VERSION', grammar: text, default: '', doc: 'version of the guest OS image (EOS) that CVMs boot' }),
  /** 0 means no limit. */
  maxVms: setting({ env: 'MANAGER_MAX_VMS', grammar: count, default: '10', doc: 'most VMs running at once; 0 means no limit' }),
  jaegerUrl: setting({ env: 'COCOS_JAEGER_URL', grammar: absoluteUrl, default: 'http://localhost:4318', doc: 'base URL of the OTLP/HTTP trace endpoint (traces go to `<url>/v1/traces`)' }),
  jaegerTraceRatio: setting({ env: 'COCOS_JAEGER_TRACE_RATIO', grammar: ratio, default: '1.0', doc: 'fraction of traces sampled, 0..1' }),
  grpc: server('MANAGER_GRPC_', '7001', 'gRPC API'),
  http: server('MANAGER_HTTP_', '7003', 'HTTP endpoint (health, metrics)'),
  // The Go manager's HTTP server limits (magistrala pkg/server: these names, 15s, 15s, 5s, 60s,
  // 1 MiB), where Go's 0 means "as READ_TIMEOUT" (header, idle) or its 1 MiB default (header
  // bytes); a 0 that means "no limit" in Go is refused. Idle and header bytes keep this daemon's
  // stricter defaults (docs/configuration.md says why).
  httpServer: {
    readTimeoutMs: setting({ env: 'MANAGER_HTTP_SERVER_READ_TIMEOUT', grammar: boundedDuration(5 * 60_000, '5m'), default: '15s', doc: 'HTTP endpoint: time a client has to send a whole request' }),
    writeTimeoutMs: setting({ env: 'MANAGER_HTTP_SERVER_WRITE_TIMEOUT', grammar: boundedDuration(5 * 60_000, '5m'), default: '15s', doc: 'HTTP endpoint: time to answer a request, from its headers to the last byte of the response' }),
    readHeaderTimeoutMs: setting({
      env: 'MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT',
      aliases: ['MANAGER_HTTP_HEADERS_TIMEOUT'],
      grammar: boundedDurationOrZero(5 * 60_000, '5m', 'as MANAGER_HTTP_SERVER_READ_TIMEOUT'),
      default: '5s',
      doc: 'HTTP endpoint: time a client has to send a request\'s headers; 0: as READ_TIMEOUT',
    }),
    idleTimeoutMs: setting({ env: 'MANAGER_HTTP_SERVER_IDLE_TIMEOUT', grammar: boundedDurationOrZero(3_600_000, '1h', 'as MANAGER_HTTP_SERVER_READ_TIMEOUT'), default: '5s', doc: 'HTTP endpoint: an idle keep-alive connection is closed after this; 0: as READ_TIMEOUT' }),
    maxHeaderBytes: setting({ env: 'MANAGER_HTTP_SERVER_MAX_HEADER_BYTES', grammar: integer(0, 16 * 1024 * 1024, 'a number of bytes in 0..16777216 (0: 1048576, as in Go)'), default: '8192', doc: 'HTTP endpoint: most bytes of a request line and headers; 0: 1 MiB, as in Go' }),
  },
  qemu: {
    binPath: setting({ env: `${Q}BIN_PATH`, grammar: nonBlankText('a QEMU binary path or name'), default: 'qemu-system-x86_64', doc: 'QEMU binary, a path or a name looked up on PATH' }),
    useSudo: setting({ env: `${Q}USE_SUDO`, grammar: boolean, default: 'false', doc: 'run QEMU through sudo, as MANAGER_QEMU_SUDO_USER (for a daemon that is not root)' }),
    /** Who QEMU runs as under sudo (`sudo -u`): a user name or numeric id, never root. */
    sudoUser: setting({ env: `${Q}SUDO_USER`, grammar: unprivilegedUser, default: 'cocos-qemu', doc: 'the unprivileged user sudo runs QEMU as (name or id, never root; see docs/configuration.md)' }),
    enableKvm: setting({ env: `${Q}ENABLE_KVM`, grammar: boolean, default: 'true', doc: 'KVM acceleration' }),
    // Decided at start with the host's answers (cvm.ts): Config holds the decision, a boolean.
    enableSevSnp: setting({ env: `${Q}ENABLE_SEV_SNP`, grammar: orAuto(boolean), default: 'auto', doc: 'AMD SEV-SNP guests: auto (when the host supports them, as the Go manager decides), true (CreateVm fails on a host without), or false (ignored on a host that supports them, unless MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true)' }),
    enableTdx: setting({ env: `${Q}ENABLE_TDX`, grammar: orAuto(boolean), default: 'auto', doc: 'Intel TDX guests: auto (when the host supports them, as the Go manager decides), true (CreateVm fails on a host without), or false (ignored on a host that supports them, unless MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true)' }),
    allowNonConfidentialVms: setting({ env: 'MANAGER_ALLOW_NON_CONFIDENTIAL_VMS', grammar: boolean, default: 'false', doc: 'let ENABLE_SEV_SNP=false or ENABLE_TDX=false launch plain, non-confidential VMs on a host that supports the technology (a warning at every start)' }),
    machine: setting({ env: `${Q}MACHINE`, grammar: text, default: 'q35', doc: 'machine type' }),
    cpu: setting({ env: `${Q}CPU`, grammar: text, default: 'EPYC', doc: 'CPU model' }),
    smpCount: setting({ env: `${Q}SMP_COUNT`, grammar: positiveCount, default: '4', doc: 'virtual CPUs' }),
    smpMaxCpus: setting({ env: `${Q}SMP_MAXCPUS`, grammar: positiveCount, default: '64', doc: 'most virtual CPUs' }),
    memId: setting({ env: `${Q}MEM_ID`, grammar: text, default: 'ram1', doc: 'id of the memory backend object' }),
    memorySize: setting({ env: `${Q}MEMORY_SIZE`, grammar: qemuSize, default: '2048M', doc: 'guest memory, like 2048M or 4G' }),
    memorySlots: setting({ env: `${Q}MEMORY_SLOTS`, grammar: count, default: '5', doc: 'memory slots' }),
    maxMemory: setting({ env: `${Q}MAX_MEMORY`, grammar: qemuSize, default: '30G', doc: 'most guest memory, like 30G' }),
    ovmfCode: {
      if: setting({ env: `${Q}OVMF_CODE_IF`, grammar: text, default: 'pflash', doc: 'interface of the OVMF code drive' }),
      format: setting({ env: `${Q}OVMF_CODE_FORMAT`, grammar: text, default: 'raw', doc: 'format of the OVMF code file' }),
      unit: setting({ env: `${Q}OVMF_CODE_UNIT`, grammar: count, default: '0', doc: 'unit of the OVMF code drive' }),
      file: setting({ env: `${Q}OVMF_CODE_FILE`, grammar: text, default: '/usr/share/OVMF/OVMF_CODE.fd', doc: 'OVMF code file' }),
      readonly: setting({ env: `${Q}OVMF_CODE_READONLY`, grammar: onOff, default: 'on', doc: 'OVMF code drive read-only (on/off)' }),
    },
    // Go's default is empty, so an empty value stays empty there; here too.
    ovmfVersion: setting({ env: `${Q}OVMF_VERSION`, grammar: text, default: 'edk2-stable202408', emptyMeansDefault: false, doc: 'EDK II release the OVMF was built from (reported by CVMInfo)' }),
    ovmfVars: {
      if: setting({ env: `${Q}OVMF_VARS_IF`, grammar: text, default: 'pflash', doc: 'interface of the OVMF variables drive' }),
      format: setting({ env: `${Q}OVMF_VARS_FORMAT`, grammar: text, default: 'raw', doc: 'format of the OVMF variables file' }),
      unit: setting({ env: `${Q}OVMF_VARS_UNIT`, grammar: count, default: '1', doc: 'unit of the OVMF variables drive' }),
      file: setting({ env: `${Q}OVMF_VARS_FILE`, grammar: text, default: '/usr/share/OVMF/OVMF_VARS.fd', doc: 'OVMF variables template; every VM gets its own copy' }),
    },
    ovmfFile: setting({ env: `${Q}OVMF_FILE`, grammar: text, default: '/usr/share/ovmf/OVMF.fd', doc: 'combined OVMF file, used for TDX (`-bios`)' }),
    netdevId: setting({ env: `${Q}NETDEV_ID`, grammar: text, default: 'vmnic', doc: 'id of the user-mode network device' }),
    hostFwdAgent: setting({ env: `${Q}HOST_FWD_AGENT`, grammar: port, default: '7020', doc: 'host port in the template command line (real VMs get one from HOST_FWD_RANGE)' }),
    guestFwdAgent: setting({ env: `${Q}GUEST_FWD_AGENT`, grammar: port, default: '7002', doc: 'guest port of the agent' }),
    hostFwdRange: setting({ env: `${Q}HOST_FWD_RANGE`, grammar: portRange, default: '6100-6200', doc: 'host ports handed to VMs, `first-last`' }),
    virtioNetPci: {
      // QEMU's own auto, passed on as written: nothing for the daemon to decide.
      disableLegacy: setting({ env: `${Q}VIRTIO_NET_PCI_DISABLE_LEGACY`, grammar: oneOf(['on', 'off', 'auto']), default: 'on', doc: 'disable-legacy of virtio-net-pci (on/off)' }),
      iommuPlatform: setting({ env: `${Q}VIRTIO_NET_PCI_IOMMU_PLATFORM`, grammar: boolean, default: 'true', doc: 'iommu_platform of virtio-net-pci' }),
      addr: setting({ env: `${Q}VIRTIO_NET_PCI_ADDR`, grammar: text, default: '0x2', doc: 'PCI address of virtio-net-pci' }),
      romfile: setting({ env: `${Q}VIRTIO_NET_PCI_ROMFILE`, grammar: text, default: '', doc: 'ROM file of virtio-net-pci' }),
    },
    kernelFile: setting({ env: `${Q}DISK_IMG_KERNEL_FILE`, grammar: text, default: 'img/bzImage', doc: 'guest kernel' }),
    rootfsFile: setting({ env: `${Q}DISK_IMG_ROOTFS_FILE`, grammar: text, default: 'img/rootfs.cpio.gz', doc: 'guest initramfs' }),
    kernelCmdline: setting({ env: `${Q}KERNEL_CMDLINE`, grammar: text, default: 'quiet console=null', doc: 'guest kernel command line' }),
    sevSnp: {
      id: setting({ env: `${Q}SEV_SNP_ID`, grammar: text, default: 'sev0', doc: 'id of the sev-snp-guest object' }),
      // The Go manager's code reads CBIT_POS, its README (and Go's env file) say CBITPOS: a host may have either.
      cbitpos: setting({ env: `${Q}SEV_SNP_CBITPOS`, aliases: [`${Q}SEV_SNP_CBIT_POS`], grammar: count, default: '51', doc: 'C-bit position' }),
      reducedPhysBits: setting({ env: `${Q}SEV_SNP_REDUCED_PHYS_BITS`, grammar: count, default: '1', doc: 'reduced physical address bits' }),
    },
    enableHostData: setting({ env: `${Q}ENABLE_HOST_DATA`, grammar: boolean, default: 'false', doc: 'pass host data to the SEV-SNP guest' }),
    hostData: setting({ env: `${Q}HOST_DATA`, grammar: text, default: '', doc: 'the host data: base64 of exactly 32 bytes' }),
    igvmId: setting({ env: `${Q}IGVM_ID`, grammar: text, default: 'igvm0', doc: 'id of the igvm-cfg object' }),
    igvmFile: setting({ env: `${Q}IGVM_FILE`, grammar: text, default: '/root/coconut-qemu.igvm', doc: 'IGVM file (firmware and vTPM) for SEV-SNP' }),
    tdxId: setting({ env: `${Q}TDX_ID`, grammar: text, default: 'tdx0', doc: 'id of the tdx-guest object' }),
    quoteGenerationPort: setting({ env: `${Q}QUOTE_GENERATION_PORT`, grammar: uint32, default: '4050', doc: 'vsock port of the Quote Generation Service' }),
    // GPU passthrough (the Go manager's GPUConfig), one GPU per VM from a pool (src/manager/gpu-pool.ts).
    gpu: {
      bdf: setting({ env: `${Q}GPU_BDF`, grammar: gpuSelection, default: '', doc: 'GPUs handed to VMs, one each: PCI addresses (0000:02:00.0,...), none, or empty for every NVIDIA GPU bound to vfio-pci' }),
      pcieRootPort: setting({ env: `${Q}GPU_PCIE_ROOT_PORT`, grammar: qemuId, default: 'pci.1', doc: 'id of the pcie-root-port the GPU sits behind' }),
      pcieBus: setting({ env: `${Q}GPU_PCIE_BUS`, grammar: qemuId, default: 'pcie.0', doc: 'bus of that pcie-root-port' }),
      fwCfgMmioMb: setting({ env: `${Q}GPU_FW_CFG_MMIO_MB`, grammar: mmioMiB, default: '262144', doc: "OVMF's 64-bit PCI MMIO window in MiB (opt/ovmf/X-PciMmio64Mb)" }),
    },
    noGraphic: setting({ env: `${Q}NO_GRAPHIC`, grammar: boolean, default: 'true', doc: '-nographic' }),
    monitor: setting({ env: `${Q}MONITOR`, grammar: text, default: 'pty', doc: '-monitor value' }),
  },
  stateDir: setting({ env: 'MANAGER_STATE_DIR', grammar: nonBlankText('a directory path'), default: '/var/lib/cocos-manager', doc: 'where per-VM state, shares and firmware copies live (directories 0700)' }),
  // At most 5m: the systemd unit's TimeoutStopSec is sized for the longest stop this allows.
  startTimeoutMs: setting({ env: `${Q}START_TIMEOUT`, grammar: boundedDuration(MAX_START_TIMEOUT_MS, '5m'), default: '10s', doc: 'how long CreateVm waits for QEMU to be up and listening on the forwarded port' }),
  stopTimeoutMs: setting({ env: `${Q}STOP_TIMEOUT`, grammar: positiveDuration, default: '30s', doc: 'how long a stop waits after QMP quit (SIGTERM where QMP is down) before SIGKILL' }),
  /** RemoveVm and TTL first ask the guest to power down (QMP system_powerdown) and wait this long; 0: off. */
  powerdownTimeoutMs: setting({
    env: `${Q}POWERDOWN_TIMEOUT`,
    grammar: nonNegativeDuration,
    default: '0',
    doc: "RemoveVm and TTL first press the guest's power button (QMP system_powerdown) and wait this long for it to shut down, then stop QEMU as above; 0 = off (the Go manager's behaviour)",
  }),
  attestationPolicyFormat: setting({ env: 'MANAGER_ATTESTATION_POLICY_FORMAT', grammar: oneOf(['corim', 'json']), default: 'corim', doc: 'corim or json' }),
  /** Reference values of attestation policies that the host cannot compute itself. */
  attestation: {
    /** Empty: derived from MANAGER_QEMU_CPU (EPYC → Milan). */
    snpProduct: setting({ env: 'MANAGER_SNP_PRODUCT', grammar: oneOf(['', 'Milan', 'Genoa', 'Turin']), default: '', doc: 'SEV-SNP product of attestation policies: Milan, Genoa or Turin; empty: from MANAGER_QEMU_CPU' }),
    snpGuestPolicy: setting({ env: 'MANAGER_SNP_GUEST_POLICY', grammar: uint64, default: '0x30000', doc: 'SEV-SNP guest policy a report must show (decimal or 0x-hex)' }),
    snpVmpl: setting({ env: 'MANAGER_SNP_VMPL', grammar: mapped(oneOf(['0', '1', '2', '3']), Number), default: '2', doc: 'VMPL of the attestation report, 0..3' }),
    snpMinLaunchTcb: setting({ env: 'MANAGER_SNP_MIN_LAUNCH_TCB', grammar: uint64, default: '0', doc: 'minimum SEV-SNP launch TCB (64-bit, decimal or 0x-hex)' }),
    /** How long igvmmeasure may run. */
    measureTimeoutMs: setting({ env: 'MANAGER_IGVMMEASURE_TIMEOUT', grammar: positiveDuration, default: '30s', doc: 'how long igvmmeasure may run' }),
    /** Hex, lower case; empty when not configured. */
    tdx: {
      mrtd: tdx('MRTD', 48, 'TDX reference MRTD, hex of 48 bytes; empty: left out of policies'),
      rtmr: [
        tdx('RTMR0', 48, 'TDX reference RTMR0, hex of 48 bytes'),
        tdx('RTMR1', 48, 'TDX reference RTMR1, hex of 48 bytes'),
        tdx('RTMR2', 48, 'TDX reference RTMR2, hex of 48 bytes'),
        tdx('RTMR3', 48, 'TDX reference RTMR3, hex of 48 bytes'),
      ],
      mrseam: tdx('MRSEAM', 48, 'TDX reference MRSEAM, hex of 48 bytes'),
      tdAttributes: tdx('TD_ATTRIBUTES', 8, 'TDX TD attributes, hex of 8 bytes'),
      xfam: tdx('XFAM', 8, 'TDX XFAM, hex of 8 bytes'),
      minTeeTcbSvn: tdx('MIN_TEE_TCB_SVN', 16, 'TDX minimum TEE TCB SVN, hex of 16 bytes'),
    },
  },
  // The guest as an adversary (SECURITY.md): calls through a VM's user-mode network, the admin
  // API's socket, and how much of a VM's console reaches the log and the disk.
  /** Calls that arrive through a VM's user-mode network (a guest reaching 10.0.2.2). */
  guestPeers: {
    refuse: setting({ env: 'MANAGER_REFUSE_GUEST_CALLS', grammar: boolean, default: 'true', doc: 'refuse gRPC calls and HTTP requests whose peer is a supervised QEMU (a guest reaching 10.0.2.2)' }),
    /** Also refuse local peers that cannot be attributed (QEMU's fds unreadable, e.g. under sudo). */
    refuseUnattributed: setting({ env: 'MANAGER_REFUSE_UNATTRIBUTED_LOCAL_PEERS', grammar: boolean, default: 'false', doc: 'also refuse local callers that cannot be attributed (QEMU under sudo, daemon not root)' }),
  },
  /** What keeps guests off the host (SECURITY.md): a uid per VM and a connect-time firewall. */
  isolation: {
    /** A root daemon runs each QEMU as a uid of its own and installs the firewall; false: neither. */
    enabled: setting({ env: 'MANAGER_GUEST_ISOLATION', grammar: boolean, default: 'true', doc: 'keep guests off the host: a uid per VM\'s QEMU and an nftables table refusing their connections to local addresses (root daemon)' }),
    // Above systemd's dynamic (61184-65519) and container (524288-1879048191) ranges, below its
    // "foreign" range and 2^31, far from /etc/subuid's usual 100000 + 65536n blocks.
    /** The uids (and gids, same numbers) VMs' QEMUs run as. */
    uidRange: setting({ env: 'MANAGER_VM_UID_RANGE', grammar: idRange, default: '1900000000-1900009999', doc: 'the uids (and gids) of the VMs\' QEMUs, one per VM; no account may use them' }),
    /** Exceptions to the firewall, besides the host's nameservers. */
    allowLocal: setting({ env: 'MANAGER_GUEST_ALLOWED_LOCAL_PORTS', grammar: localAllowList, default: '', doc: 'local endpoints guests may still reach besides the host\'s nameservers: tcp/PORT, udp/ADDRESS:PORT, ...' }),
  },
  admin: {
    /** Unix socket of ManagerAdmin (and ManagerService); empty: none. */
    // Empty is the one way to have no admin socket (the Go manager has none to turn off).
    socket: setting({ env: 'MANAGER_ADMIN_SOCKET', grammar: unixSocketPath, default: '/run/cocos-manager/admin.sock', emptyMeansDefault: false, doc: 'Unix socket of ManagerAdmin (and ManagerService), mode 0660; empty: none' }),
    /** Group given the socket (mode 0660); empty: the daemon's own group. */
    socketGroup: setting({ env: 'MANAGER_ADMIN_SOCKET_GROUP', grammar: groupOrEmpty, default: '', doc: 'group given the admin socket (name or id); empty: the daemon\'s own group' }),
    /** ManagerAdmin also on the gRPC TCP port (needs mutual TLS). */
    onGrpcPort: setting({ env: 'MANAGER_ADMIN_ON_GRPC_PORT', grammar: boolean, default: 'false', doc: 'also serve ManagerAdmin on the gRPC TCP port; needs MANAGER_GRPC_CLIENT_CA_CERTS (mutual TLS)' }),
  },
  console: {
    /** Cap of a VM's console.log; one rotated copy (console.log.1) is kept. */
    logMaxBytes: setting({ env: 'MANAGER_CONSOLE_LOG_MAX_SIZE', grammar: byteSize(1024 * 1024, '1M'), default: '8M', doc: 'size at which a VM\'s console.log (and qemu.log) is rotated to .1; one copy is kept' }),
    /** Console lines per VM per second that reach the daemon's log (a token bucket). */
    linesPerSecond: setting({ env: 'MANAGER_CONSOLE_LINES_PER_SECOND', grammar: count, default: '100', doc: 'console lines per VM per second written to the daemon\'s log (bursts of 10 s worth); the rest are counted' }),
  },
  // Connections to the gRPC TCP port and the HTTP port (each port its own caps): every local
  // client, guests' QEMUs included, shares the peer address 127.0.0.1.
  connections: {
    /** Connections open at once on one port. */
    maxTotal: setting({ env: 'MANAGER_MAX_CONNECTIONS', grammar: positiveCount, default: '2048', doc: 'connections open at once on the gRPC TCP port, and separately on the HTTP port; more are reset at once' }),
    /** Connections open at once on one port from one peer address. */
    maxPerPeer: setting({ env: 'MANAGER_MAX_CONNECTIONS_PER_PEER', grammar: positiveCount, default: '256', doc: 'connections open at once on one port from one peer address (every local client is 127.0.0.1)' }),
    /** Longest wait of a new connection for its guest-peer verdict; then it is closed. */
    verdictTimeoutMs: setting({ env: 'MANAGER_CONNECTION_VERDICT_TIMEOUT', grammar: boundedDuration(60_000, '1m'), default: '5s', doc: 'longest wait of a new connection for the guest check; then it is closed' }),
    /** A gRPC connection with no call open, or an HTTP socket with no traffic, is closed after this. */
    idleMs: setting({ env: 'MANAGER_CONNECTION_IDLE_TIMEOUT', grammar: boundedDuration(24 * 3_600_000, '24h'), default: '5m', doc: 'a gRPC connection with no call open, or a silent HTTP socket, is closed after this' }),
  },
} as const satisfies Declaration;

/** Every setting, in the order declared: what the docs test checks the docs against. */
export const SETTING_LIST: readonly Setting<unknown>[] = settingsIn(SETTINGS);
