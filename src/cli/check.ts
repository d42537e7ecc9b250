/** `cocos-manager check`: the preflight as a table; the daemon logs the same at start. */
import type { Logger } from 'pino';
import { describeGuestPeerMode } from '../api/guest-peer.js';
import { hostPort, listenAddresses } from '../api/listen-addresses.js';
import { clientAuthOf } from '../api/tls.js';
import { OPT_OUT } from '../config/cvm.js';
import type { Config } from '../config/types.js';
import { type CheckResult, preflight } from '../host/preflight.js';
import { tcpPortIsFree } from '../host/port-probe.js';

export const CHECK_HELP = `Usage: cocos-manager check

Checks this host for the current configuration: SEV-SNP and TDX (what the host supports and
what was decided from it), the QEMU binary and the objects the configuration needs, /dev/kvm,
firmware, IGVM, kernel and initramfs files, igvmmeasure, free ports in the range, the state
directory, the GPUs VMs are given (MANAGER_QEMU_GPU_BDF: bound to vfio-pci with their IOMMU
groups), the addresses the API listens on; and who can drive the manager: client
authentication of ManagerService, the admin socket, and whether calls from guests are refused.
Prints a table with a remedy for each problem. Exit status 1 when anything
the configuration needs fails.
`;

/**
 * Who can drive the manager with this configuration. Pure: from the configuration alone (and
 * whether this process is root), so the daemon says the same once at start.
 */
export function securityChecks(config: Config, uid = process.getuid?.() ?? 0): CheckResult[] {
  const out: CheckResult[] = [];
  const tlsOn = config.grpc.serverCert !== '' && config.grpc.serverKey !== '';
  const clientAuth = tlsOn ? clientAuthOf(config.grpc) : 'none';
  if (clientAuth === 'none') {
    out.push({
      check: 'client authentication',
      status: 'fail',
      detail: `ManagerService accepts calls without client authentication: anyone who can reach ${hostPort(config.grpc.host, config.grpc.port)}${config.guestPeers.refuse ? '' : ', guests included through 10.0.2.2,'} can create and remove VMs`,
      remedy: 'configure mutual TLS for the control plane: MANAGER_GRPC_SERVER_CERT, MANAGER_GRPC_SERVER_KEY and MANAGER_GRPC_CLIENT_CA_CERTS',
    });
  } else if (clientAuth === 'system-roots') {
    // As the Go manager: SERVER_CA_CERTS alone asks for client certificates, from any CA the system trusts.
    out.push({
      check: 'client authentication',
      status: 'warn',
      detail: 'ManagerService requires a client certificate, from any CA of the system\'s roots (MANAGER_GRPC_SERVER_CA_CERTS without _CLIENT_CA_CERTS, as the Go manager)',
      remedy: 'set MANAGER_GRPC_CLIENT_CA_CERTS to your own CAs only',
    });
  } else {
    out.push({ check: 'client authentication', status: 'pass', detail: 'ManagerService requires a client certificate (mutual TLS)', remedy: '' });
  }
  const mode = describeGuestPeerMode(config.guestPeers);
  if (!config.guestPeers.refuse) {
    out.push({ check: 'calls from guests', status: 'warn', detail: mode, remedy: 'set MANAGER_REFUSE_GUEST_CALLS=true' });
  } else if (config.qemu.useSudo && uid !== 0) {
    // QEMU's descriptors are another user's: its VM cannot be named, but its user can.
    out.push({
      check: 'calls from guests',
      status: 'pass',
      detail: `${mode}; QEMU runs under sudo as ${config.qemu.sudoUser}, and every local peer socket of that user is refused as a guest's (the VM is not named)`,
      remedy: '',
    });
  } else {
    out.push({ check: 'calls from guests', status: 'pass', detail: mode, remedy: '' });
  }
  out.push(
    config.admin.socket === ''
      ? { check: 'admin socket', status: 'warn', detail: 'MANAGER_ADMIN_SOCKET is empty: no admin socket', remedy: 'set MANAGER_ADMIN_SOCKET (e.g. /run/cocos-manager/admin.sock) for `cocos-manager vm ls` and `vm info`' }
      : { check: 'admin socket', status: 'pass', detail: `ManagerAdmin on ${config.admin.socket} (mode 0660${config.admin.socketGroup ? `, group ${config.admin.socketGroup}` : ''})${config.admin.onGrpcPort ? ' and on the TCP port (mutual TLS)' : '; not on TCP'}`, remedy: '' },
  );
  return out;
}

const CVM_REMEDY = {
  'SEV-SNP': 'an AMD EPYC (Milan or later) with SEV-SNP enabled in firmware, and kvm_amd loaded with sev_snp=Y on a host kernel with SNP support; or MANAGER_QEMU_ENABLE_SEV_SNP=auto, which launches plain VMs on this host',
  TDX: 'an Intel Xeon with TDX enabled in firmware, and kvm_intel loaded with tdx=Y on a host kernel with TDX support; or MANAGER_QEMU_ENABLE_TDX=auto, which launches plain VMs on this host',
} as const;

/**
 * SEV-SNP and TDX: what this host supports and what the configuration decided from it
 * (src/config/cvm.ts). Pure, so the daemon says the same at start.
 */
export function cvmChecks(config: Config): CheckResult[] {
  const out: CheckResult[] = [];
  for (const d of [config.cvm.sevSnp, config.cvm.tdx]) {
    if (d.unavailable) out.push({ check: d.technology, status: 'fail', detail: `${d.reason}: CreateVm fails (FAILED_PRECONDITION)`, remedy: CVM_REMEDY[d.technology] });
    else if (d.warning) out.push({ check: d.technology, status: 'warn', detail: d.warning, remedy: `set ${OPT_OUT}=true to launch plain VMs here, or leave the variable unset` });
    else out.push({ check: d.technology, status: 'pass', detail: d.reason, remedy: '' });
  }
  if (config.cvm.optOutWarning) out.push({ check: 'non-confidential VMs', status: 'warn', detail: config.cvm.optOutWarning, remedy: `unset ${OPT_OUT} unless plain VMs are meant` });
  return out;
}

/** Said once at start: what the VMs will be, and why; a false ignored or the opt-out at warn, a technology missing at error. */
export function logCvmDecision(config: Config, log: Logger): void {
  const { cvm } = config;
  const name = { 'sev-snp': 'SEV-SNP', tdx: 'TDX', plain: 'plain (not confidential)' }[cvm.kind];
  log.info({ cvm: cvm.kind, sev_snp: cvm.sevSnp.reason, tdx: cvm.tdx.reason }, `VMs are ${name}`);
  for (const d of [cvm.sevSnp, cvm.tdx]) {
    if (d.warning) log.warn({ cvm: cvm.kind }, d.warning);
    if (d.unavailable) log.error({ cvm: cvm.kind, missing: d.host.missing }, `every CreateVm will fail: ${d.unavailable}`);
  }
  if (cvm.optOutWarning) log.warn({ cvm: cvm.kind }, cvm.optOutWarning);
}

/** Where the gRPC API and the HTTP endpoint listen: the host setting and the addresses it stands for. */
export async function listenChecks(config: Config): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const [what, s, setting] of [['gRPC API', config.grpc, 'MANAGER_GRPC_HOST'], ['HTTP endpoint', config.http, 'MANAGER_HTTP_HOST']] as const) {
    const check = `${what} address`;
    let addresses;
    try {
      addresses = await listenAddresses(s.host);
    } catch (err) {
      out.push({ check, status: 'fail', detail: `${setting}=${s.host} does not resolve: ${(err as Error).message}`, remedy: `set ${setting} to an address or a name this host resolves (default localhost)` });
      continue;
    }
    const every = addresses.includes(undefined);
    const loopback = !every && addresses.every((a) => a !== undefined && /^(127\.|::1$)/.test(a));
    const where = every ? 'every interface, IPv6 and IPv4' : addresses.map((a) => hostPort(a!, s.port)).join(' and ');
    const reach = every ? 'reachable from the network' : loopback ? 'loopback only: reachable from this host alone' : 'reachable wherever those addresses are';
    out.push({ check, status: 'pass', detail: `${setting}=${s.host}: listens on ${where} (${reach})`, remedy: '' });
  }
  return out;
}

export function renderTable(results: CheckResult[]): string {
  const rows = [['STATUS', 'CHECK', 'DETAIL', 'REMEDY'], ...results.map((r) => [r.status.toUpperCase(), r.check, r.detail, r.remedy])];
  const widths = [0, 1, 2].map((i) => Math.min(60, Math.max(...rows.map((r) => r[i]!.length))));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd()).join('\n');
}

export async function checkCommand(config: Config): Promise<{ text: string; ok: boolean }> {
  const results = [...cvmChecks(config), ...(await preflight(config, tcpPortIsFree)), ...(await listenChecks(config)), ...securityChecks(config)];
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  const summary = failed > 0 ? `${failed} check(s) failed, ${warned} warning(s): this host cannot run the configured VMs yet.` : `all checks passed${warned ? ` (${warned} warning(s))` : ''}.`;
  return { text: `${renderTable(results)}\n\n${summary}\n`, ok: failed === 0 };
}

/** The daemon's start-up preflight: logged, never blocking the start. */
export async function logPreflight(config: Config, log: Logger): Promise<void> {
  try {
    const results = await preflight(config, undefined, { sandbox: false });
    for (const r of results) {
      const line = { check: r.check, detail: r.detail, ...(r.remedy ? { remedy: r.remedy } : {}) };
      if (r.status === 'fail') log.error(line, `preflight failed: ${r.check}`);
      else if (r.status === 'warn') log.warn(line, `preflight warning: ${r.check}`);
      else log.debug(line, `preflight passed: ${r.check}`);
    }
    log.info({ failed: results.filter((r) => r.status === 'fail').length }, 'preflight done');
  } catch (err) {
    log.warn({ err: String(err) }, 'preflight could not run');
  }
}
