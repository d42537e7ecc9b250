/**
 * Reads the configuration from an environment object. Pure: no process.env, no files.
 * A bad value becomes a ConfigError naming the variable, the value given and what is expected.
 */
import { cleanEnv } from 'envalid';
import { sizeInBytes } from '../util/size.js';
import { ConfigError, describe } from './errors.js';
import { tracingSettings } from './tracing.js';
import type { Config, ServerConfig } from './types.js';
import {
  boolean,
  boundedDuration,
  count,
  hexBytes,
  idRange,
  localAllowList,
  listenPort,
  memorySize,
  oneOf,
  onOff,
  port,
  portRange,
  positiveCount,
  positiveDuration,
  nonNegativeDuration,
  ratio,
  text,
  uint32,
  uint64,
} from './validators.js';

export const MAX_START_TIMEOUT_MS = 5 * 60_000;

export { ConfigError };

const serverSpecs = (prefix: string, defaultPort: number) => ({
  [`${prefix}HOST`]: text({ default: '' }),
  [`${prefix}PORT`]: listenPort({ default: defaultPort }),
  [`${prefix}SERVER_CERT`]: text({ default: '' }),
  [`${prefix}SERVER_KEY`]: text({ default: '' }),
  [`${prefix}SERVER_CA_CERTS`]: text({ default: '' }),
  [`${prefix}CLIENT_CA_CERTS`]: text({ default: '' }),
});

const Q = 'MANAGER_QEMU_';

/** Every variable, its shape and its default: the tables of docs/configuration.md. */
export const SPECS = {
  MANAGER_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'] as const)({ default: 'info' }),
  MANAGER_INSTANCE_ID: text({ default: '' }),
  MANAGER_ATTESTATION_POLICY_BINARY_PATH: text({ default: '../../build' }),
  MANAGER_PCR_VALUES: text({ default: '' }),
  MANAGER_CORIM_SIGNING_KEY: text({ default: '' }),
  MANAGER_EOS_VERSION: text({ default: '' }),
  MANAGER_MAX_VMS: count({ default: 10 }),
  COCOS_JAEGER_URL: text({ default: 'http://localhost:4318' }),
  COCOS_JAEGER_TRACE_RATIO: ratio({ default: 1.0 }),
  ...serverSpecs('MANAGER_GRPC_', 7001),
  ...serverSpecs('MANAGER_HTTP_', 7003),
  [`${Q}BIN_PATH`]: text({ default: 'qemu-system-x86_64' }),
  [`${Q}USE_SUDO`]: boolean({ default: false }),
  [`${Q}SUDO_USER`]: text({ default: 'cocos-qemu' }),
  [`${Q}ENABLE_KVM`]: boolean({ default: true }),
  [`${Q}ENABLE_SEV_SNP`]: boolean({ default: true }),
  [`${Q}ENABLE_TDX`]: boolean({ default: false }),
  [`${Q}MACHINE`]: text({ default: 'q35' }),
  [`${Q}CPU`]: text({ default: 'EPYC' }),
  [`${Q}SMP_COUNT`]: positiveCount({ default: 4 }),
  [`${Q}SMP_MAXCPUS`]: positiveCount({ default: 64 }),
  [`${Q}MEM_ID`]: text({ default: 'ram1' }),
  [`${Q}MEMORY_SIZE`]: memorySize({ default: '2048M' }),
  [`${Q}MEMORY_SLOTS`]: count({ default: 5 }),
  [`${Q}MAX_MEMORY`]: memorySize({ default: '30G' }),
  [`${Q}OVMF_CODE_IF`]: text({ default: 'pflash' }),
  [`${Q}OVMF_CODE_FORMAT`]: text({ default: 'raw' }),
  [`${Q}OVMF_CODE_UNIT`]: count({ default: 0 }),
  [`${Q}OVMF_CODE_FILE`]: text({ default: '/usr/share/OVMF/OVMF_CODE.fd' }),
  [`${Q}OVMF_CODE_READONLY`]: onOff({ default: 'on' }),
  [`${Q}OVMF_VERSION`]: text({ default: 'edk2-stable202408' }),
  [`${Q}OVMF_VARS_IF`]: text({ default: 'pflash' }),
  [`${Q}OVMF_VARS_FORMAT`]: text({ default: 'raw' }),
  [`${Q}OVMF_VARS_UNIT`]: count({ default: 1 }),
  [`${Q}OVMF_VARS_FILE`]: text({ default: '/usr/share/OVMF/OVMF_VARS.fd' }),
  [`${Q}OVMF_FILE`]: text({ default: '/usr/share/ovmf/OVMF.fd' }),
  [`${Q}NETDEV_ID`]: text({ default: 'vmnic' }),
  [`${Q}HOST_FWD_AGENT`]: port({ default: 7020 }),
  [`${Q}GUEST_FWD_AGENT`]: port({ default: 7002 }),
  [`${Q}HOST_FWD_RANGE`]: portRange({ default: { first: 6100, last: 6200 } }),
  [`${Q}VIRTIO_NET_PCI_DISABLE_LEGACY`]: oneOf(['on', 'off', 'auto'] as const)({ default: 'on' }),
  [`${Q}VIRTIO_NET_PCI_IOMMU_PLATFORM`]: boolean({ default: true }),
  [`${Q}VIRTIO_NET_PCI_ADDR`]: text({ default: '0x2' }),
  [`${Q}VIRTIO_NET_PCI_ROMFILE`]: text({ default: '' }),
  [`${Q}DISK_IMG_KERNEL_FILE`]: text({ default: 'img/bzImage' }),
  [`${Q}DISK_IMG_ROOTFS_FILE`]: text({ default: 'img/rootfs.cpio.gz' }),
  [`${Q}KERNEL_CMDLINE`]: text({ default: 'quiet console=null' }),
  [`${Q}SEV_SNP_ID`]: text({ default: 'sev0' }),
  [`${Q}SEV_SNP_CBITPOS`]: count({ default: 51 }),
  [`${Q}SEV_SNP_REDUCED_PHYS_BITS`]: count({ default: 1 }),
  [`${Q}ENABLE_HOST_DATA`]: boolean({ default: false }),
  [`${Q}HOST_DATA`]: text({ default: '' }),
  [`${Q}IGVM_ID`]: text({ default: 'igvm0' }),
  [`${Q}IGVM_FILE`]: text({ default: '/root/coconut-qemu.igvm' }),
  [`${Q}TDX_ID`]: text({ default: 'tdx0' }),
  [`${Q}QUOTE_GENERATION_PORT`]: uint32({ default: 4050 }),
  [`${Q}NO_GRAPHIC`]: boolean({ default: true }),
  [`${Q}MONITOR`]: text({ default: 'pty' }),
  MANAGER_STATE_DIR: text({ default: '/var/lib/cocos-manager' }),
  // At most 5m: the systemd unit's TimeoutStopSec is sized for the longest stop this allows.
  MANAGER_QEMU_START_TIMEOUT: boundedDuration(MAX_START_TIMEOUT_MS, '5m')({ default: 10_000 }),
  MANAGER_QEMU_STOP_TIMEOUT: positiveDuration({ default: 30_000 }),
  MANAGER_QEMU_POWERDOWN_TIMEOUT: nonNegativeDuration({ default: 0 }),
  MANAGER_ATTESTATION_POLICY_FORMAT: oneOf(['corim', 'json'] as const)({ default: 'corim' }),
  MANAGER_IGVMMEASURE_TIMEOUT: positiveDuration({ default: 30_000 }),
  MANAGER_SNP_PRODUCT: oneOf(['', 'Milan', 'Genoa', 'Turin'] as const)({ default: '' }),
  MANAGER_SNP_GUEST_POLICY: uint64({ default: 0x30000n }),
  MANAGER_SNP_VMPL: oneOf(['0', '1', '2', '3'] as const)({ default: '2' }),
  MANAGER_SNP_MIN_LAUNCH_TCB: uint64({ default: 0n }),
  MANAGER_TDX_MRTD: hexBytes(48)({ default: '' }),
  MANAGER_TDX_RTMR0: hexBytes(48)({ default: '' }),
  MANAGER_TDX_RTMR1: hexBytes(48)({ default: '' }),
  MANAGER_TDX_RTMR2: hexBytes(48)({ default: '' }),
  MANAGER_TDX_RTMR3: hexBytes(48)({ default: '' }),
  MANAGER_TDX_MRSEAM: hexBytes(48)({ default: '' }),
  MANAGER_TDX_TD_ATTRIBUTES: hexBytes(8)({ default: '' }),
  MANAGER_TDX_XFAM: hexBytes(8)({ default: '' }),
  MANAGER_TDX_MIN_TEE_TCB_SVN: hexBytes(16)({ default: '' }),
  // The guest as an adversary (SECURITY.md): calls through a VM's user-mode network, the admin
  // API's socket, and how much of a VM's console reaches the log and the disk.
  MANAGER_REFUSE_GUEST_CALLS: boolean({ default: true }),
  MANAGER_REFUSE_UNATTRIBUTED_LOCAL_PEERS: boolean({ default: false }),
  MANAGER_GUEST_ISOLATION: boolean({ default: true }),
  // Above systemd's dynamic (61184-65519) and container (524288-1879048191) ranges, below its
  // "foreign" range and 2^31, far from /etc/subuid's usual 100000 + 65536n blocks.
  MANAGER_VM_UID_RANGE: idRange({ default: { first: 1_900_000_000, last: 1_900_009_999 } }),
  MANAGER_GUEST_ALLOWED_LOCAL_PORTS: localAllowList({ default: [] }),
  MANAGER_ADMIN_SOCKET: text({ default: '/run/cocos-manager/admin.sock' }),
  MANAGER_ADMIN_SOCKET_GROUP: text({ default: '' }),
  MANAGER_ADMIN_ON_GRPC_PORT: boolean({ default: false }),
  MANAGER_CONSOLE_LOG_MAX_SIZE: memorySize({ default: '8M' }),
  MANAGER_CONSOLE_LINES_PER_SECOND: count({ default: 100 }),
  // Connections to the gRPC TCP port and the HTTP port (each port its own caps): every local
  // client, guests' QEMUs included, shares the peer address 127.0.0.1.
  MANAGER_MAX_CONNECTIONS: positiveCount({ default: 2048 }),
  MANAGER_MAX_CONNECTIONS_PER_PEER: positiveCount({ default: 256 }),
  MANAGER_CONNECTION_VERDICT_TIMEOUT: boundedDuration(60_000, '1m')({ default: 5_000 }),
  MANAGER_CONNECTION_IDLE_TIMEOUT: boundedDuration(24 * 3_600_000, '24h')({ default: 5 * 60_000 }),
  MANAGER_HTTP_HEADERS_TIMEOUT: boundedDuration(5 * 60_000, '5m')({ default: 10_000 }),
};

/** Variables whose value is not free text: for these an empty value means "unset", as in the Go manager. */
const TEXT_PARSER = text({})._parse;
const TYPED = new Set(Object.entries(SPECS).filter(([, spec]) => spec._parse !== TEXT_PARSER).map(([k]) => k));


/** Strict base64 of exactly 32 bytes (43 characters and one '='). */
function isBase64Of32Bytes(s: string): boolean {
  return /^[A-Za-z0-9+/]{43}=$/.test(s) && Buffer.from(s, 'base64').length === 32;
}


export function loadConfig(rawEnv: Readonly<Record<string, string | undefined>>): Config {
  const env: Record<string, string | undefined> = {};
  for (const key of Object.keys(SPECS)) {
    const v = rawEnv[key];
    env[key] = v === '' && TYPED.has(key) ? undefined : v;
  }
  let firstError: ConfigError | undefined;
  const e = cleanEnv(env, SPECS, {
    reporter: ({ errors }) => {
      const [variable, err] = Object.entries(errors)[0] ?? [];
      if (variable && err) firstError = describe(variable, env[variable], err.message);
    },
  }) as unknown as Record<string, any>;
  if (firstError) throw firstError;

  const server = (p: string): ServerConfig => ({
    host: e[`${p}HOST`],
    port: e[`${p}PORT`],
    serverCert: e[`${p}SERVER_CERT`],
    serverKey: e[`${p}SERVER_KEY`],
    serverCaCerts: e[`${p}SERVER_CA_CERTS`],
    clientCaCerts: e[`${p}CLIENT_CA_CERTS`],
  });

  const config: Config = {
    logLevel: e.MANAGER_LOG_LEVEL,
    instanceId: e.MANAGER_INSTANCE_ID,
    attestationPolicyBinaryPath: e.MANAGER_ATTESTATION_POLICY_BINARY_PATH,
    pcrValuesFile: e.MANAGER_PCR_VALUES,
    corimSigningKey: e.MANAGER_CORIM_SIGNING_KEY,
    eosVersion: e.MANAGER_EOS_VERSION,
    maxVms: e.MANAGER_MAX_VMS,
    tracing: tracingSettings(rawEnv, { url: e.COCOS_JAEGER_URL, ratio: e.COCOS_JAEGER_TRACE_RATIO }),
    grpc: server('MANAGER_GRPC_'),
    http: server('MANAGER_HTTP_'),
    qemu: {
      binPath: e[`${Q}BIN_PATH`],
      useSudo: e[`${Q}USE_SUDO`],
      sudoUser: e[`${Q}SUDO_USER`].trim(),
      enableKvm: e[`${Q}ENABLE_KVM`],
      enableSevSnp: e[`${Q}ENABLE_SEV_SNP`],
      enableTdx: e[`${Q}ENABLE_TDX`],
      machine: e[`${Q}MACHINE`],
      cpu: e[`${Q}CPU`],
      smpCount: e[`${Q}SMP_COUNT`],
      smpMaxCpus: e[`${Q}SMP_MAXCPUS`],
      memId: e[`${Q}MEM_ID`],
      memorySize: e[`${Q}MEMORY_SIZE`],
      memorySlots: e[`${Q}MEMORY_SLOTS`],
      maxMemory: e[`${Q}MAX_MEMORY`],
      ovmfCode: {
        if: e[`${Q}OVMF_CODE_IF`],
        format: e[`${Q}OVMF_CODE_FORMAT`],
        unit: e[`${Q}OVMF_CODE_UNIT`],
        file: e[`${Q}OVMF_CODE_FILE`],
        readonly: e[`${Q}OVMF_CODE_READONLY`],
      },
      ovmfVersion: e[`${Q}OVMF_VERSION`],
      ovmfVars: {
        if: e[`${Q}OVMF_VARS_IF`],
        format: e[`${Q}OVMF_VARS_FORMAT`],
        unit: e[`${Q}OVMF_VARS_UNIT`],
        file: e[`${Q}OVMF_VARS_FILE`],
      },
      ovmfFile: e[`${Q}OVMF_FILE`],
      netdevId: e[`${Q}NETDEV_ID`],
      hostFwdAgent: e[`${Q}HOST_FWD_AGENT`],
      guestFwdAgent: e[`${Q}GUEST_FWD_AGENT`],
      hostFwdRange: e[`${Q}HOST_FWD_RANGE`],
      virtioNetPci: {
        disableLegacy: e[`${Q}VIRTIO_NET_PCI_DISABLE_LEGACY`],
        iommuPlatform: e[`${Q}VIRTIO_NET_PCI_IOMMU_PLATFORM`],
        addr: e[`${Q}VIRTIO_NET_PCI_ADDR`],
        romfile: e[`${Q}VIRTIO_NET_PCI_ROMFILE`],
      },
      kernelFile: e[`${Q}DISK_IMG_KERNEL_FILE`],
      rootfsFile: e[`${Q}DISK_IMG_ROOTFS_FILE`],
      kernelCmdline: e[`${Q}KERNEL_CMDLINE`],
      sevSnp: {
        id: e[`${Q}SEV_SNP_ID`],
        cbitpos: e[`${Q}SEV_SNP_CBITPOS`],
        reducedPhysBits: e[`${Q}SEV_SNP_REDUCED_PHYS_BITS`],
      },
      enableHostData: e[`${Q}ENABLE_HOST_DATA`],
      hostData: e[`${Q}HOST_DATA`],
      igvmId: e[`${Q}IGVM_ID`],
      igvmFile: e[`${Q}IGVM_FILE`],
      tdxId: e[`${Q}TDX_ID`],
      quoteGenerationPort: e[`${Q}QUOTE_GENERATION_PORT`],
      noGraphic: e[`${Q}NO_GRAPHIC`],
      monitor: e[`${Q}MONITOR`],
    },
    stateDir: e.MANAGER_STATE_DIR,
    startTimeoutMs: e.MANAGER_QEMU_START_TIMEOUT,
    stopTimeoutMs: e.MANAGER_QEMU_STOP_TIMEOUT,
    powerdownTimeoutMs: e.MANAGER_QEMU_POWERDOWN_TIMEOUT,
    attestationPolicyFormat: e.MANAGER_ATTESTATION_POLICY_FORMAT,
    attestation: {
      snpProduct: e.MANAGER_SNP_PRODUCT,
      snpGuestPolicy: e.MANAGER_SNP_GUEST_POLICY,
      snpVmpl: Number(e.MANAGER_SNP_VMPL),
      snpMinLaunchTcb: e.MANAGER_SNP_MIN_LAUNCH_TCB,
      measureTimeoutMs: e.MANAGER_IGVMMEASURE_TIMEOUT,
      tdx: {
        mrtd: e.MANAGER_TDX_MRTD,
        rtmr: [e.MANAGER_TDX_RTMR0, e.MANAGER_TDX_RTMR1, e.MANAGER_TDX_RTMR2, e.MANAGER_TDX_RTMR3],
        mrseam: e.MANAGER_TDX_MRSEAM,
        tdAttributes: e.MANAGER_TDX_TD_ATTRIBUTES,
        xfam: e.MANAGER_TDX_XFAM,
        minTeeTcbSvn: e.MANAGER_TDX_MIN_TEE_TCB_SVN,
      },
    },
    guestPeers: {
      refuse: e.MANAGER_REFUSE_GUEST_CALLS,
      refuseUnattributed: e.MANAGER_REFUSE_UNATTRIBUTED_LOCAL_PEERS,
    },
    isolation: {
      enabled: e.MANAGER_GUEST_ISOLATION,
      uidRange: e.MANAGER_VM_UID_RANGE,
      allowLocal: e.MANAGER_GUEST_ALLOWED_LOCAL_PORTS,
    },
    admin: {
      socket: e.MANAGER_ADMIN_SOCKET,
      socketGroup: e.MANAGER_ADMIN_SOCKET_GROUP,
      onGrpcPort: e.MANAGER_ADMIN_ON_GRPC_PORT,
    },
    console: {
      logMaxBytes: Number(sizeInBytes(e.MANAGER_CONSOLE_LOG_MAX_SIZE, 'M')),
      linesPerSecond: e.MANAGER_CONSOLE_LINES_PER_SECOND,
    },
    connections: {
      maxTotal: e.MANAGER_MAX_CONNECTIONS,
      maxPerPeer: e.MANAGER_MAX_CONNECTIONS_PER_PEER,
      verdictTimeoutMs: e.MANAGER_CONNECTION_VERDICT_TIMEOUT,
      idleMs: e.MANAGER_CONNECTION_IDLE_TIMEOUT,
      httpHeadersTimeoutMs: e.MANAGER_HTTP_HEADERS_TIMEOUT,
    },
  };
  checkCombinations(config, env);
  return config;
}

/** Rules that involve more than one variable. */
function checkCombinations(c: Config, env: Record<string, string | undefined>): void {
  const q = c.qemu;
  if (q.enableSevSnp && q.enableTdx) {
    throw new ConfigError(
      `${Q}ENABLE_TDX`,
      `invalid ${Q}ENABLE_TDX=${JSON.stringify(env[`${Q}ENABLE_TDX`] ?? '')}: SEV-SNP and TDX cannot both be enabled; set ${Q}ENABLE_SEV_SNP=false or ${Q}ENABLE_TDX=false`,
    );
  }
  if (q.enableHostData && !isBase64Of32Bytes(q.hostData)) {
    throw describe(`${Q}HOST_DATA`, q.hostData, `expected base64 of exactly 32 bytes (44 characters) since ${Q}ENABLE_HOST_DATA is true`);
  }
  if (q.smpMaxCpus < q.smpCount) {
    throw describe(`${Q}SMP_MAXCPUS`, env[`${Q}SMP_MAXCPUS`], `expected at least ${Q}SMP_COUNT (${q.smpCount})`);
  }
  // QEMU reads a bare -m size as MiB but a bare maxmem= as bytes; compare what QEMU will compare.
  if (sizeInBytes(q.maxMemory, 'B')! < sizeInBytes(q.memorySize, 'M')!) {
    const hint = /\d$/.test(q.maxMemory) ? ' (QEMU reads a bare maxmem number as bytes: add a suffix such as G)' : '';
    throw describe(`${Q}MAX_MEMORY`, q.maxMemory, `expected at least ${Q}MEMORY_SIZE (${q.memorySize})${hint}`);
  }
  if (q.binPath.trim() === '') throw describe(`${Q}BIN_PATH`, q.binPath, 'expected a QEMU binary path or name');
  // sudo exists here to run QEMU as a user with no privilege: root (by name or id) defeats it.
  if (!/^([A-Za-z_][A-Za-z0-9_.-]{0,30}\$?|\d{1,10})$/.test(q.sudoUser) || q.sudoUser === 'root' || /^0+$/.test(q.sudoUser) || Number(q.sudoUser) > 4294967294) {
    throw describe(`${Q}SUDO_USER`, env[`${Q}SUDO_USER`], 'expected the name or numeric id of an unprivileged user (not root) that sudo runs QEMU as');
  }
  if (c.stateDir.trim() === '') throw describe('MANAGER_STATE_DIR', c.stateDir, 'expected a directory path');
  for (const [name, s] of [['MANAGER_GRPC_', c.grpc], ['MANAGER_HTTP_', c.http]] as const) {
    if ((s.serverCert === '') !== (s.serverKey === '')) {
      const missing = s.serverCert === '' ? 'SERVER_CERT' : 'SERVER_KEY';
      throw describe(`${name}${missing}`, '', `expected a path: ${name}SERVER_CERT and ${name}SERVER_KEY turn TLS on together`);
    }
    if (s.clientCaCerts !== '' && s.serverCert === '') {
      throw describe(`${name}CLIENT_CA_CERTS`, s.clientCaCerts, `mutual TLS needs ${name}SERVER_CERT and ${name}SERVER_KEY`);
    }
  }
  checkGuestFacingSettings(c, env);
}

/** Unix socket paths live in a 108-byte sun_path, NUL included. */
const MAX_UNIX_SOCKET_PATH = 107;

function checkGuestFacingSettings(c: Config, env: Record<string, string | undefined>): void {
  if (c.admin.onGrpcPort && c.grpc.clientCaCerts === '') {
    throw describe(
      'MANAGER_ADMIN_ON_GRPC_PORT',
      env.MANAGER_ADMIN_ON_GRPC_PORT,
      'ManagerAdmin on the TCP port needs mutual TLS: set MANAGER_GRPC_CLIENT_CA_CERTS (with MANAGER_GRPC_SERVER_CERT and _KEY), or use MANAGER_ADMIN_SOCKET',
    );
  }
  if (Buffer.byteLength(c.admin.socket) > MAX_UNIX_SOCKET_PATH) {
    throw describe('MANAGER_ADMIN_SOCKET', c.admin.socket, `expected a path of at most ${MAX_UNIX_SOCKET_PATH} bytes (a Unix socket's limit)`);
  }
  if (c.admin.socketGroup !== '' && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(c.admin.socketGroup)) {
    throw describe('MANAGER_ADMIN_SOCKET_GROUP', c.admin.socketGroup, 'expected a group name or numeric id');
  }
  const uids = c.isolation.uidRange;
  const size = uids.last - uids.first + 1;
  if (c.isolation.enabled && c.maxVms > 0 && size < c.maxVms) {
    throw describe('MANAGER_VM_UID_RANGE', env.MANAGER_VM_UID_RANGE, `expected at least MANAGER_MAX_VMS (${c.maxVms}) ids: each VM's QEMU runs as a uid of its own`);
  }
  if (c.connections.maxPerPeer > c.connections.maxTotal) {
    throw describe('MANAGER_MAX_CONNECTIONS_PER_PEER', env.MANAGER_MAX_CONNECTIONS_PER_PEER, `expected at most MANAGER_MAX_CONNECTIONS (${c.connections.maxTotal})`);
  }
  if (c.console.logMaxBytes < 1024 * 1024) {
    throw describe('MANAGER_CONSOLE_LOG_MAX_SIZE', env.MANAGER_CONSOLE_LOG_MAX_SIZE, 'expected at least 1M');
  }
}
