/**
 * `cocos-manager serve`: wires configuration, logger, telemetry, manager and servers; handles
 * signals. SIGTERM/SIGINT stop the daemon, never the VMs: the next start re-adopts them.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { bindAdminSocket, groupId, removeAdminSocket } from '../api/grpc/admin-socket.js';
import { listenGrpc } from '../api/grpc/listener.js';
import { createGrpcServer, serverCredentials, setServing, tcpTransportOptions } from '../api/grpc/server.js';
import { ConnectionGuard } from '../api/connection-guard.js';
import { describeGuestPeerMode, GuestPeerGate } from '../api/guest-peer.js';
import { createHttpServer, httpLimits, type Lifecycle, listen } from '../api/http/server.js';
import { hostPort } from '../api/listen-addresses.js';
import { forgetPemTexts, loadTlsMaterial } from '../api/tls.js';
import type { Config } from '../config/types.js';
import { loadPcrValues, loadSigningKey } from '../manager/attestation-files.js';
import { AttestationPolicies } from '../manager/attestation-policy.js';
import { IgvmMeasurer } from '../host/igvm-measurement.js';
import { LaunchPinner } from '../manager/launch-pin.js';
import { PortPool } from '../manager/port-pool.js';
import { ownerOfPeer } from '../vm/socket-owner.js';
import { preloadSpawner } from '../vm/spawner.js';
import { tcpPortIsFree } from '../host/port-probe.js';
import { checkSharing, resolveQemuUser } from '../host/qemu-user.js';
import { lockStateDir } from '../host/state-dir-lock.js';
import { type GuestIsolation, VmManager } from '../manager/vm-manager.js';
import { UidPool } from '../manager/uid-pool.js';
import { QemuDriver } from '../vm/qemu-driver.js';
import { GuestFirewall } from '../host/guest-firewall.js';
import { deviceAccess, deviceGroups, procUidProcesses, untraversableAncestors } from '../host/vm-users.js';
import { readBuildInfo } from '../telemetry/build-info.js';
import { createLogger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { startTracing, type Tracing } from '../telemetry/tracing.js';
import { StartupError } from '../util/startup-error.js';
import { logCvmDecision, logPreflight, securityChecks } from './check.js';
import { gpusOfThisHost } from './host-gpus.js';
import { templateCommandLine } from './qemu-args.js';

export const SERVE_HELP = `Usage: cocos-manager serve

Runs the daemon in the foreground: the gRPC API (ManagerService, ManagerAdmin, health,
reflection) on MANAGER_GRPC_HOST:MANAGER_GRPC_PORT, ManagerAdmin and ManagerService on the
Unix socket MANAGER_ADMIN_SOCKET, and /health and /metrics on MANAGER_HTTP_HOST:MANAGER_HTTP_PORT.
Calls from the supervised VMs' guests are refused (MANAGER_REFUSE_GUEST_CALLS). Stops on
SIGTERM or SIGINT, leaving VMs running; they are re-adopted at the next start. Exit status 2:
bad configuration (one line on stderr).
`;

async function prepareStateDir(dir: string, isolating: boolean, qemuGid?: number): Promise<void> {
  // With a uid per VM, each QEMU must reach its own directory: the state directory and vms/
  // can be passed through but not listed (0711); each VM's directory is its own (vm-dir.ts).
  const mode = isolating ? 0o711 : 0o700;
  try {
    await fs.mkdir(path.join(dir, 'vms'), { recursive: true, mode });
    await fs.chmod(dir, mode);
    await fs.chmod(path.join(dir, 'vms'), mode);
    if (qemuGid !== undefined) {
      // QEMU under sudo runs as another user: it traverses (never lists) both to its VM's directory.
      for (const d of [dir, path.join(dir, 'vms')]) {
        await fs.chown(d, -1, qemuGid);
        await fs.chmod(d, 0o710);
      }
    }
    await fs.access(path.join(dir, 'vms'), fs.constants.W_OK);
  } catch (err) {
    throw new StartupError(`MANAGER_STATE_DIR=${JSON.stringify(dir)} is not a writable directory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const blocked = isolating ? untraversableAncestors(dir) : [];
  if (blocked.length > 0) {
    throw new StartupError(
      `MANAGER_STATE_DIR=${JSON.stringify(dir)} lies below ${blocked.join(', ')}, which the VMs' users cannot pass through (no x for others): QEMU could not open its files; choose another directory (the default /var/lib/cocos-manager works) or chmod o+x ${blocked[0]}`,
    );
  }
}

/** Guest isolation needs a root daemon: under sudo the unit's privileged step installs the firewall. */
function guestIsolationMode(config: Config): 'per-vm-user' | 'sudo' | 'off' {
  if (!config.isolation.enabled) return 'off';
  if (config.qemu.useSudo) {
    // A root daemon gives each VM a user of its own; sudo would run them all as one.
    if (process.getuid?.() === 0) {
      throw new StartupError('MANAGER_QEMU_USE_SUDO=true is for a daemon that is not root: a root daemon runs each VM\'s QEMU as a user of its own (guest isolation); set MANAGER_QEMU_USE_SUDO=false');
    }
    return 'sudo';
  }
  if (process.getuid?.() !== 0) {
    throw new StartupError(
      "MANAGER_GUEST_ISOLATION=true needs a root daemon (each VM's QEMU runs as a uid of its own, and an nftables table refuses guests' connections to the host): run it as root, as the systemd unit does, use MANAGER_QEMU_USE_SUDO, or set MANAGER_GUEST_ISOLATION=false (guests then reach the host's loopback)",
    );
  }
  return 'per-vm-user';
}

/** What a stop may take: calls in flight (a CreateVm takes up to the start timeout), then removals in flight, then traces. */
export const STOP_GRACE_EXTRA_MS = 5_000;
/** How long after serving the start's background work (preflight, version probe) waits. */
const AFTER_START_DELAY_MS = 500;
export const STOP_DRAIN_MS = 5_000;
export const STOP_TRACES_MS = 2_000;
export function longestStopMs(startTimeoutMs: number): number {
  return startTimeoutMs + STOP_GRACE_EXTRA_MS + STOP_DRAIN_MS + STOP_TRACES_MS;
}

/** Descriptors the daemon holds per VM, twice what was measured (its QMP socket, log followers). */
export const DESCRIPTORS_PER_VM = 8;
/** The daemon's own descriptors (modules, loggers, listeners, the admin socket's clients), with room. */
export const DESCRIPTORS_BASE = 256;

/** What the daemon may hold at once under `config` with `vms` VMs (systemd/cocos-manager.service's LimitNOFILE). */
export function descriptorsNeeded(config: Pick<Config, 'connections'>, vms: number): number {
  return DESCRIPTORS_BASE + 2 * config.connections.maxTotal + DESCRIPTORS_PER_VM * vms;
}

/** The soft RLIMIT_NOFILE of this process, from /proc (Node has no call for it); undefined if unreadable. */
async function openFilesLimit(): Promise<number | undefined> {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(await fs.readFile('/proc/self/limits', 'utf8'));
    return m === null ? undefined : m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return undefined;
  }
}

export async function serveCommand(config: Config): Promise<void> {
  const mark = (what: string) => process.env.COCOS_STARTUP_TRACE && process.stderr.write(`${what} ${performance.now().toFixed(0)}\n`);
  mark('serve');
  // Everything an operator can get wrong in a file is checked before anything starts.
  const grpcTls = loadTlsMaterial('MANAGER_GRPC_', config.grpc);
  const httpTls = loadTlsMaterial('MANAGER_HTTP_', config.http);
  forgetPemTexts(['MANAGER_GRPC_', 'MANAGER_HTTP_']);
  const pcrs = loadPcrValues(config.pcrValuesFile);
  const signingKey = loadSigningKey(config.corimSigningKey);
  const isolationMode = guestIsolationMode(config);
  // Under sudo, QEMU's user, its group shared with the daemon's user, and no other way in for it.
  const qemuUser = config.qemu.useSudo ? await resolveQemuUser(config.qemu.sudoUser) : undefined;
  const adminGid = config.admin.socket !== '' && config.admin.socketGroup !== '' ? await groupId(config.admin.socketGroup) : undefined;
  if (qemuUser) checkSharing(qemuUser, adminGid, config.admin.socket);
  await prepareStateDir(config.stateDir, isolationMode === 'per-vm-user', qemuUser?.gid);
  // flock(1) starts while the rest is set up; it is held before anything reads the state.
  const locking = lockStateDir(config.stateDir);
  locking.catch(() => undefined); // awaited below

  const instanceId = config.instanceId || randomUUID();
  const log = createLogger(config.logLevel, instanceId);
  const build = readBuildInfo();
  mark('logger');
  // Tracing starts once the daemon serves (below): loading the SDK takes ~100 ms, longer than
  // the rest of the start, and until it is loaded spans are no-ops (those calls are not traced).
  let tracing: Tracing = { shutdown: () => Promise.resolve() };
  let lifecycle: Lifecycle = 'starting';

  log.info({ version: build.version, commit: build.commit }, 'cocos-manager starting');
  logCvmDecision(config, log);
  const ports = new PortPool(config.qemu.hostFwdRange, tcpPortIsFree);
  const measurer = new IgvmMeasurer(config.attestationPolicyBinaryPath, config.attestation.measureTimeoutMs);
  const policies = new AttestationPolicies(config, new LaunchPinner(measurer), pcrs, signingKey);
  let manager: VmManager | undefined;
  const metrics = new Metrics({
    vmsByState: () => manager?.countByState() ?? {},
    portsFree: () => manager?.portsFree() ?? 0,
  });
  let isolation: GuestIsolation | undefined;
  let firewall: GuestFirewall | undefined;
  if (isolationMode === 'per-vm-user') {
    const devices = deviceAccess();
    // A device every VM needs but no VM user can open would fail every CreateVm inside QEMU.
    const needed = (d: string) => (d === '/dev/kvm' ? config.qemu.enableKvm : d === '/dev/sev' ? config.qemu.enableSevSnp : false);
    for (const d of devices) {
      if (!d.problem) continue;
      if (needed(d.device)) throw new StartupError(`${d.problem}; or set MANAGER_GUEST_ISOLATION=false`);
      log.warn({ device: d.device }, d.problem);
    }
    firewall = new GuestFirewall(config.stateDir, { uids: config.isolation.uidRange, allow: config.isolation.allowLocal }, log);
    const uids = new UidPool(config.isolation.uidRange, procUidProcesses, (uid, left) =>
      log.error({ uid, processes: left }, 'processes of a removed VM\'s uid survive SIGKILL: the uid stays out of use until they are gone'),
    );
    isolation = { uids, groups: deviceGroups(devices), firewall };
  } else if (isolationMode === 'off') {
    log.warn('guest isolation is off (MANAGER_GUEST_ISOLATION=false): QEMU runs as the daemon\'s user and nothing but the /proc check keeps guests from calling the host\'s services through 10.0.2.2');
  }
  const { gpus, lockedMemory, templateGpu } = gpusOfThisHost(config, log, isolation !== undefined);
  manager = new VmManager(config, log, ports, new QemuDriver(config.qemu), { policies, observer: metrics, isolation, qemuGid: qemuUser?.gid, gpus, lockedMemory });
  const vms = manager;
  // Who is calling, once per connection: a supervised QEMU's socket means a guest (10.0.2.2).
  // A connection that comes before the records are read (the HTTP port opens first) waits for
  // them: until then the QEMUs an earlier run left are not known to be anyone's.
  let leftoversKnown!: () => void;
  const knownPids = new Promise<void>((resolve) => (leftoversKnown = resolve));
  // With a uid per VM the socket's uid names the guest; under sudo every QEMU runs as QEMU's
  // user, so a local peer socket of that uid is a guest's, whichever VM (the daemon cannot read
  // those QEMUs' descriptors to name it).
  const byUid = isolation
    ? { uidOwner: (uid: number) => vms.vmOfUid(uid), anyVm: () => vms.hasVms() }
    : qemuUser
      ? { uidOwner: (uid: number) => ({ vmUser: uid === qemuUser.uid }), anyVm: () => true }
      : undefined;
  const gate = new GuestPeerGate(config.guestPeers, (peer, self) => knownPids.then(() => ownerOfPeer(peer, self, () => vms.supervisedPids(isolation !== undefined), byUid)), log);
  log.info({ mode: describeGuestPeerMode(config.guestPeers) }, 'calls from guests');
  // Past the limit, accept() fails and so does every open: connections and VMs alike.
  void openFilesLimit().then((limit) => {
    const needed = descriptorsNeeded(config, config.maxVms);
    if (limit !== undefined && limit < needed) {
      log.warn({ limit, needed, max_vms: config.maxVms, max_connections: config.connections.maxTotal }, `the open-files limit (${limit}) is below what MANAGER_MAX_CONNECTIONS and MANAGER_MAX_VMS need (${needed}): raise LimitNOFILE= in the unit (ulimit -n), or lower them`);
    }
  });
  // Said once at start: what a guest or any other reacher of the port could do.
  for (const r of securityChecks(config)) if (r.status !== 'pass') log.warn({ check: r.check, remedy: r.remedy }, r.detail);

  // Each TCP port its own caps: a flood of one leaves the other's connections alone.
  const grpcGuard = new ConnectionGuard('grpc', config.connections, log, metrics);
  const httpGuard = new ConnectionGuard('http', config.connections, log, metrics);
  metrics.countConnections('grpc', () => grpcGuard.open);
  metrics.countConnections('http', () => httpGuard.open);

  // Health answers (503) while the daemon recovers its VMs.
  const limits = httpLimits(config.httpServer, config.connections.idleMs);
  const httpServer = createHttpServer({ registry: metrics.registry, build, instanceId, lifecycle: () => lifecycle }, httpTls, gate, limits, httpGuard);
  let http: { port: number; addresses: string[] };
  try {
    http = await listen(httpServer, config.http.host, config.http.port);
  } catch (err) {
    await locking; // another daemon on this state directory is the likelier cause: say that first
    throw new StartupError(`cannot listen on MANAGER_HTTP_HOST:MANAGER_HTTP_PORT (${hostPort(config.http.host, config.http.port)}): ${(err as Error).message}`);
  }
  log.info({ host: config.http.host, addresses: http.addresses, port: http.port, tls: httpTls !== undefined, mutual_tls: httpTls?.clientCa !== undefined, client_auth: httpTls?.clientAuth ?? 'none' }, 'HTTP endpoint listening');

  mark('http');
  const stateLock = await locking;
  stateLock.onLost(() => log.error({ lock: stateLock.file }, 'the state directory lock was lost (its flock process was killed): another daemon could now start on this MANAGER_STATE_DIR; restart this one'));
  mark('locked');
  // The table's install (one nft run) goes on while the records are read and the gRPC server is
  // built; all are needed before the port opens.
  const installing = firewall?.install();
  installing?.catch(() => undefined); // awaited below
  // Before the port opens, only the records of what an earlier run left are read: their ports,
  // slots and processes (whose guests are refused) are reserved. /proc and QMP come after.
  const leftovers = await manager.expectLeftovers();
  leftoversKnown();
  mark('leftovers');
  // In place before the port opens: a VM of the earlier run may be running, and a daemon that
  // cannot install it must not start at all. (It goes again once no VM is left.)
  if (firewall) {
    const outside = manager.leftoverUidsOutside(config.isolation.uidRange, leftovers);
    if (outside.length > 0) {
      const r = config.isolation.uidRange;
      throw new StartupError(
        `MANAGER_VM_UID_RANGE=${r.first}-${r.last} leaves out uid ${outside.join(', ')} of VMs still running from the previous run, which the guest firewall would then not cover: put the range back until those VMs are removed`,
      );
    }
  }

  // ManagerAdmin on TCP only when asked for (the configuration demands mutual TLS then). Built
  // while nft installs the table (~10-20 ms, mostly the kernel's commit).
  const transport = tcpTransportOptions(config.connections.idleMs);
  const grpcServer = createGrpcServer(manager, log, metrics, { admin: config.admin.onGrpcPort, transport });
  const { server } = grpcServer;
  mark('grpc server');
  if (firewall) {
    try {
      await installing;
    } catch (err) {
      throw new StartupError(
        `the guest firewall (nftables table ${firewall.table}) could not be installed: ${(err as Error).message}; install nftables and give the daemon CAP_NET_ADMIN, or set MANAGER_GUEST_ISOLATION=false (guests then reach the host's loopback)`,
      );
    }
    log.info({ table: firewall.table, uids: `${config.isolation.uidRange.first}-${config.isolation.uidRange.last}`, allowed: config.isolation.allowLocal.length }, 'guest firewall installed');
    mark('firewall');
  }
  let listener;
  try {
    listener = await listenGrpc({ host: config.grpc.host, port: config.grpc.port, credentials: serverCredentials(grpcTls), server, gate, guard: grpcGuard, log });
  } catch (err) {
    const where = hostPort(config.grpc.host, config.grpc.port);
    // The table installed a moment ago is not needed if no VM of an earlier run is left.
    await firewall?.removeIf(() => !manager.hasVms()).catch(() => false);
    throw new StartupError(`cannot listen on MANAGER_GRPC_HOST:MANAGER_GRPC_PORT (${where}): ${(err as Error).message}`);
  }
  mark('grpc listening');
  let admin: ReturnType<typeof createGrpcServer> | undefined;
  if (config.admin.socket !== '') {
    admin = createGrpcServer(manager, log, metrics, { admin: true });
    try {
      await bindAdminSocket(admin.server, config.admin.socket, adminGid);
    } catch (err) {
      // As for the gRPC port: the table installed a moment ago goes unless VMs of an earlier run are left.
      await firewall?.removeIf(() => !manager.hasVms()).catch(() => false);
      throw err;
    }
    setServing(admin, true);
    log.info({ socket: config.admin.socket, group: config.admin.socketGroup || null }, 'admin socket listening (ManagerAdmin and ManagerService)');
  }
  mark('admin listening');
  lifecycle = 'recovering';
  setServing(grpcServer, true);
  log.info(
    { host: config.grpc.host, address: listener.address, port: listener.port, tls: grpcTls !== undefined, mutual_tls: grpcTls?.clientCa !== undefined, client_auth: grpcTls?.clientAuth ?? 'none', admin: config.admin.onGrpcPort, startup_ms: Math.round(performance.now()), vm_dirs_to_recover: leftovers.length },
    'gRPC server listening',
  );
  const traced = config.tracing;
  if (traced.off === undefined) {
    startTracing({ config: traced, instanceId, version: build.version, log }).then(
      (t) => {
        tracing = t;
        log.info({ url: traced.url, url_from: traced.urlFrom, protocol: traced.protocol, sampler: traced.sampler.from, parent_based: traced.sampler.parentBased }, 'tracing started');
      },
      (err) => log.error({ err: String(err) }, 'tracing could not start: calls are served untraced'),
    );
  } else {
    log.info({ off_by: traced.off }, 'tracing off');
  }
  // Calls are served meanwhile; one about a VM not yet decided waits for it (ListVms for all).
  const recoveryStarted = performance.now();
  const recovery = manager.recover(leftovers).then(
    (recovered) => {
      mark('recovered');
      log.info({ ...recovered, ms: Math.round(performance.now() - recoveryStarted), since_start_ms: Math.round(performance.now()) }, 'state recovered');
      if (lifecycle === 'recovering') lifecycle = 'serving';
    },
    (err) => {
      // Each VM's failure is caught inside; this is the state directory itself failing.
      log.error({ err: String(err) }, 'recovery failed: VMs of an earlier run may be left unsupervised; restart the daemon once the state directory is readable');
      manager.abandonRecovery();
      if (lifecycle === 'recovering') lifecycle = 'serving';
    },
  );
  // Neither slows the start nor the first calls: once recovery is over and the daemon has
  // served for a moment, the preflight is logged for the operator (the host can be fixed while
  // the daemon runs), and the process spawner is loaded ahead of the first CreateVm (a CreateVm
  // before then loads it, and reads the QEMU version, itself). Run at once, this work held the
  // first call of a fresh start back by 70-90 ms.
  void Promise.all([recovery, new Promise((resolve) => setTimeout(resolve, AFTER_START_DELAY_MS))]).then(() => {
    void logPreflight(config, log);
    void preloadSpawner();
    // The binary's version picks the QMP option forms of each VM's argv, and its trial start
    // whether VMs get -sandbox (read once). The template is logged once that is known, so it
    // shows what a VM really gets.
    manager
      .probeQemu()
      .then((f) => {
        log.info({ qemu_version: f.text, qmp_reconnect: f.form.reconnect, sandbox: f.sandbox.supported }, 'QEMU version read');
        if (!f.sandbox.supported) log.warn({ bin: config.qemu.binPath }, `VMs run without QEMU's seccomp sandbox (-sandbox): ${f.sandbox.reason}`);
        log.info({ command: templateCommandLine(config, f.sandbox.supported, templateGpu) }, 'QEMU template command line');
      })
      .catch((err) => {
        log.warn(`could not read the QEMU version (retried at the next CreateVm): ${(err as Error).message}`);
        log.info({ command: templateCommandLine(config, false, templateGpu), sandbox: 'unknown' }, 'QEMU template command line');
      });
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    lifecycle = 'stopping';
    setServing(grpcServer, false);
    listener.close();
    if (admin) setServing(admin, false);
    // CreateVm may legitimately take the whole start timeout; let it finish, then no longer.
    const graceMs = config.startTimeoutMs + STOP_GRACE_EXTRA_MS;
    log.info({ signal, grace_ms: graceMs }, 'stopping: no new calls, VMs keep running');
    const callsDone = Promise.all([
      new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
      new Promise<void>((resolve) => (admin ? admin.server.tryShutdown(() => resolve()) : resolve())),
    ]);
    const graceOver = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
    void (async () => {
      manager.beginShutdown();
      await Promise.race([callsDone, graceOver]);
      server.forceShutdown();
      admin?.server.forceShutdown();
      if (admin) await removeAdminSocket(config.admin.socket);
      await manager.drain(STOP_DRAIN_MS);
      // What still runs as the uid of a VM removed a moment ago is killed before the daemon goes.
      isolation?.uids.retireNow();
      // Kept while a VM runs (QEMUs outlive the daemon); gone with the daemon otherwise.
      firewall?.stopWatching();
      if (firewall && (await firewall.removeIf(() => !manager.hasVms()).catch(() => false))) log.info({ table: firewall.table }, 'guest firewall removed: no VM left');
      httpServer.close();
      await Promise.race([tracing.shutdown(), new Promise((r) => setTimeout(r, STOP_TRACES_MS))]);
    })()
      .catch((err) => log.error({ err: String(err) }, 'error while stopping'))
      .finally(() => {
        log.info('stopped');
        process.exit(0);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
