/**
 * Prometheus metrics (prom-client). Labels are bounded sets (method, gRPC code, VM state, exit
 * cause): never a VM id.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry, Summary } from 'prom-client';
import type { ConnectionObserver, GuardedApi, RefusalReason } from '../api/connection-guard.js';
import type { ManagerObserver, QemuExitCause } from '../manager/observer.js';

/**
 * The Go manager's two families (magistrala's prometheus.MakeMetrics("manager", "api"), go-kit
 * wrappers over client_golang), beside ours so that dashboards and alerts made for it keep
 * working. Its label values are the Go service's method names, for ManagerService's methods only.
 */
const GO_METHODS: Readonly<Record<string, string>> = {
  '/manager.ManagerService/CreateVm': 'Run',
  '/manager.ManagerService/RemoveVm': 'Stop',
  '/manager.ManagerService/AttestationPolicy': 'FetchAttestationPolicy',
  '/manager.ManagerService/CVMInfo': 'ReturnCVMInfo',
};

// One pair per process, whichever registry serves it: observeGoApiCall needs no handle.
const goRequests = new Counter({
  name: 'manager_api_request_count',
  help: 'Number of requests received.',
  labelNames: ['method'],
  registers: [],
});
// go-kit observes seconds, whatever the name says. The quantiles and their window are
// client_golang's (objectives 0.5, 0.9, 0.99; DefMaxAge 10 min in DefAgeBuckets 5).
const goLatency = new Summary({
  name: 'manager_api_request_latency_microseconds',
  help: 'Total duration of requests in microseconds.',
  labelNames: ['method'],
  percentiles: [0.5, 0.9, 0.99],
  maxAgeSeconds: 600,
  ageBuckets: 5,
  registers: [],
});

/** Counts a call as the Go manager does; `grpcMethod` is its path (/manager.ManagerService/CreateVm), others are not Go's. */
export function observeGoApiCall(grpcMethod: string, seconds: number): void {
  const method = GO_METHODS[grpcMethod];
  if (method === undefined) return;
  goRequests.inc({ method });
  goLatency.observe({ method }, seconds);
}

export interface MetricSources {
  vmsByState(): Record<string, number>;
  portsFree(): number;
}

export class Metrics implements ManagerObserver, ConnectionObserver {
  readonly registry = new Registry();
  private readonly rpcRequests: Counter<'method' | 'code'>;
  private readonly rpcDuration: Histogram<'method' | 'code'>;
  private readonly startDuration: Histogram;
  private readonly exits: Counter<'cause'>;
  private readonly connectionsRefused: Counter<'api' | 'reason'>;
  private readonly openConnections = new Map<GuardedApi, () => number>();

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'cocos_manager_' });
    this.registry.registerMetric(goRequests);
    this.registry.registerMetric(goLatency);
    this.rpcRequests = new Counter({
      name: 'cocos_manager_rpc_requests_total',
      help: 'gRPC calls handled, by method and status code',
      labelNames: ['method', 'code'],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: 'cocos_manager_rpc_duration_seconds',
      help: 'gRPC call latency, by method and status code',
      labelNames: ['method', 'code'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.startDuration = new Histogram({
      name: 'cocos_manager_vm_start_duration_seconds',
      help: 'From spawning QEMU to QEMU listening on the forwarded port',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers,
    });
    this.exits = new Counter({
      name: 'cocos_manager_qemu_exits_total',
      help: 'QEMU processes that ended, by cause',
      labelNames: ['cause'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'cocos_manager_connections_refused_total',
      help: 'Connections to the gRPC TCP port or the HTTP port closed at once: over the cap per peer (per_peer) or in total (total), or no guest-peer verdict within MANAGER_CONNECTION_VERDICT_TIMEOUT (verdict_timeout)',
      labelNames: ['api', 'reason'],
      registers,
    });
    const open = this.openConnections;
    new Gauge({
      name: 'cocos_manager_connections_open',
      help: 'Connections open on the gRPC TCP port and on the HTTP port (what MANAGER_MAX_CONNECTIONS caps)',
      labelNames: ['api'],
      registers,
      collect() {
        for (const [api, count] of open) this.set({ api }, count());
      },
    });
    new Gauge({
      name: 'cocos_manager_vms',
      help: 'VMs known to the manager, by state',
      labelNames: ['state'],
      registers,
      collect() {
        for (const [state, n] of Object.entries(sources.vmsByState())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'cocos_manager_ports_free',
      help: 'Ports of MANAGER_QEMU_HOST_FWD_RANGE not held by a VM',
      registers,
      collect() {
        this.set(sources.portsFree());
      },
    });
  }

  rpc(method: string, code: string, seconds: number): void {
    this.rpcRequests.inc({ method, code });
    this.rpcDuration.observe({ method, code }, seconds);
  }

  vmStarted(seconds: number): void {
    this.startDuration.observe(seconds);
  }

  qemuExited(cause: QemuExitCause): void {
    this.exits.inc({ cause });
  }

  connectionRefused(api: GuardedApi, reason: RefusalReason): void {
    this.connectionsRefused.inc({ api, reason });
  }

  /** Where the open-connections gauge reads a port's count (its guard). */
  countConnections(api: GuardedApi, open: () => number): void {
    this.openConnections.set(api, open);
  }
}
