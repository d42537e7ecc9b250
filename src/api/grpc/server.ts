/**
 * The gRPC server: manager.ManagerService (wire-compatible with the Go manager's proto),
 * manager.ManagerAdmin (operator methods), grpc.health.v1.Health and server reflection.
 * One span, one metric sample and one log line per call; errors mapped to gRPC status codes.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { context, propagation, SpanKind, SpanStatusCode, type TextMapGetter, trace } from '@opentelemetry/api';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import { ManagerError, type ErrorKind } from '../../manager/errors.js';
import type { VmEvent, VmManager, VmStatusView } from '../../manager/vm-manager.js';
import { observeGoApiCall } from '../../telemetry/metrics.js';
import { tracer } from '../../telemetry/spans.js';
import type { TlsMaterial } from '../tls.js';
import { loadPackageDefinition } from './protos.js';
import type { ProtoGrpcType as ManagerProto } from './generated/manager.js';
import type { ProtoGrpcType as AdminProto } from './generated/manager-admin.js';
import type { ManagerAdminHandlers } from './generated/manager/ManagerAdmin.js';
import type { ManagerServiceHandlers } from './generated/manager/ManagerService.js';
import type { VmStatus } from './generated/manager/VmStatus.js';
import type { VmEvent as VmEventMsg } from './generated/manager/VmEvent.js';

type Registration = [grpc.ServiceDefinition, grpc.UntypedServiceImplementation];

/**
 * Server reflection (v1 and v1alpha), answered by @grpc/reflection, which is built at the first
 * reflection call: its two descriptor indexes and the .proto loads of its own service (again for
 * each server) were ~30-60 ms of every start, for calls an operator makes by hand (grpcurl).
 * What it answers is the same; the first call waits for the build.
 */
function lazyReflection(def: protoLoader.PackageDefinition): Registration[] {
  type Served = { method: grpc.MethodDefinition<unknown, unknown>; handler: grpc.handleBidiStreamingCall<unknown, unknown> };
  let served: Map<string, Served> | undefined;
  const real = (path: string): Served => {
    if (served === undefined) {
      const found = new Map<string, Served>();
      new ReflectionService(def).addToServer({
        addService: (service, impl) => {
          for (const [name, method] of Object.entries(service)) found.set(method.path, { method, handler: impl[name] as grpc.handleBidiStreamingCall<unknown, unknown> });
        },
      });
      served = found;
    }
    const s = served.get(path);
    if (s === undefined) throw new Error(`@grpc/reflection serves no ${path}`);
    return s;
  };
  return ['grpc.reflection.v1', 'grpc.reflection.v1alpha'].map((pkgName): Registration => {
    const path = `/${pkgName}.ServerReflection/ServerReflectionInfo`;
    const method: grpc.MethodDefinition<unknown, unknown> = {
      path,
      requestStream: true,
      responseStream: true,
      originalName: 'serverReflectionInfo',
      requestSerialize: (v) => real(path).method.requestSerialize(v),
      requestDeserialize: (b) => real(path).method.requestDeserialize(b),
      responseSerialize: (v) => real(path).method.responseSerialize(v),
      responseDeserialize: (b) => real(path).method.responseDeserialize(b),
    };
    return [{ ServerReflectionInfo: method }, { ServerReflectionInfo: (call: grpc.ServerDuplexStream<unknown, unknown>) => real(path).handler(call) }];
  });
}

// Loaded once per process and shared by the TCP server, the refusing server and the admin
// socket's server: each load parses the .proto text again (~5-10 ms). The definitions are only
// read by the servers.
let loaded: { def: protoLoader.PackageDefinition; pkg: ManagerProto & AdminProto; reflection: Registration[] } | undefined;
function services(): NonNullable<typeof loaded> {
  if (loaded === undefined) {
    const def = loadPackageDefinition();
    const pkg = grpc.loadPackageDefinition(def) as unknown as ManagerProto & AdminProto;
    loaded = { def, pkg, reflection: lazyReflection(def) };
  }
  return loaded;
}

const STATUS: Record<ErrorKind, grpc.status> = {
  'invalid-argument': grpc.status.INVALID_ARGUMENT,
  'not-found': grpc.status.NOT_FOUND,
  'resource-exhausted': grpc.status.RESOURCE_EXHAUSTED,
  'failed-precondition': grpc.status.FAILED_PRECONDITION,
  unavailable: grpc.status.UNAVAILABLE,
  unimplemented: grpc.status.UNIMPLEMENTED,
  internal: grpc.status.INTERNAL,
};

export interface CallRecorder {
  rpc(method: string, code: string, seconds: number): void;
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get: (m, key) => {
    const v = m.get(key);
    return v.length === 0 ? undefined : v.map(String);
  },
};

function toServiceError(err: unknown, log: Logger, method: string): { code: grpc.status; details: string } {
  if (err instanceof ManagerError) return { code: STATUS[err.kind], details: err.message };
  // Unexpected: log it whole here, tell the caller only that it happened.
  log.error({ method, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'unexpected error');
  return { code: grpc.status.INTERNAL, details: `internal error in ${method}; see the manager's log` };
}

/** Wraps a handler: span (continuing the caller's traceparent), timing, status mapping, log line. */
function unary<Req, Res>(
  service: string,
  method: string,
  log: Logger,
  recorder: CallRecorder,
  handle: (req: Req) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = process.hrtime.bigint();
    const parent = propagation.extract(context.active(), call.metadata, metadataGetter);
    const span = tracer.startSpan(
      `${service}/${method}`,
      { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.service': service, 'rpc.method': method } },
      parent,
    );
    const finish = (code: grpc.status, details?: string) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const name = grpc.status[code];
      span.setAttribute('rpc.grpc.status_code', code);
      if (code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: details ?? name });
      span.end();
      recorder.rpc(method, name ?? String(code), seconds);
      observeGoApiCall(`/${service}/${method}`, seconds);
      // Successful calls at debug (CreateVm and RemoveVm log their own lines); failures at info.
      const line = { method, code: name, ms: seconds * 1000, ...(details ? { details } : {}) };
      if (code === grpc.status.OK) log.debug(line, 'rpc');
      else if (code === grpc.status.INTERNAL) log.warn(line, 'rpc');
      else log.info(line, 'rpc');
    };
    context.with(trace.setSpan(parent, span), () => {
      Promise.resolve()
        .then(() => handle(call.request))
        .then(
          (res) => {
            finish(grpc.status.OK);
            callback(null, res);
          },
          (err: unknown) => {
            const e = toServiceError(err, log, method);
            finish(e.code, e.details);
            callback(e as grpc.ServiceError);
          },
        );
    });
  };
}

export function managerHandlers(manager: VmManager, log: Logger, recorder: CallRecorder): ManagerServiceHandlers {
  const S = 'manager.ManagerService';
  return {
    CreateVm: unary(S, 'CreateVm', log, recorder, async (req) => {
      const { id, port } = await manager.create(req);
      return { forwarded_port: String(port), cvm_id: id };
    }),
    RemoveVm: unary(S, 'RemoveVm', log, recorder, async (req) => {
      await manager.remove(req.cvm_id);
      return {};
    }),
    CVMInfo: unary(S, 'CVMInfo', log, recorder, async (req) => {
      const i = await manager.info(req.id);
      return {
        id: i.id,
        ovmf_version: i.ovmfVersion,
        cpu_num: i.cpuNum,
        cpu_type: i.cpuType,
        kernel_cmd: i.kernelCmd,
        eos_version: i.eosVersion,
      };
    }),
    AttestationPolicy: unary(S, 'AttestationPolicy', log, recorder, async (req) => ({
      info: Buffer.from(await manager.attestationPolicy(req.id)),
      id: req.id,
    })),
  };
}

function toVmStatus(v: VmStatusView): VmStatus {
  return {
    id: v.id,
    state: v.state,
    pid: v.pid ?? 0,
    forwarded_port: String(v.hostPort),
    created_at: v.createdAt,
    ttl_deadline: v.expiresAt ?? '',
    has_exit: v.exit !== null,
    exit_code: v.exit?.code ?? 0,
    exit_signal: v.exit?.signal ?? '',
    kernel_cmd: v.kernelCmdline,
    exit_cause: v.exit?.cause ?? '',
    pause_reason: v.pauseReason ?? '',
  };
}

/** Events a watcher may have queued before it is dropped: the daemon never waits for a reader. */
export const WATCH_BUFFER = 256;

function watchVms(manager: VmManager, log: Logger, recorder: CallRecorder): ManagerAdminHandlers['WatchVms'] {
  return (call) => {
    const started = process.hrtime.bigint();
    // Like every other method: a span continuing the caller's trace, the metric's label, an rpc line.
    const span = tracer.startSpan(
      'manager.ManagerAdmin/WatchVms',
      { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.service': 'manager.ManagerAdmin', 'rpc.method': 'WatchVms' } },
      propagation.extract(context.active(), call.metadata, metadataGetter),
    );
    let done = false;
    let queued = 0;
    let sent = 0;
    const finish = (code: string) => {
      if (done) return;
      done = true;
      unsubscribe();
      offShutdown();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      span.setAttribute('rpc.grpc.status_code', grpc.status[code as keyof typeof grpc.status] as number);
      span.setAttribute('cocos.events_sent', sent);
      if (code !== 'OK' && code !== 'CANCELLED') span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      span.end();
      recorder.rpc('WatchVms', code, seconds);
      const line = { method: 'WatchVms', code, ms: seconds * 1000, events: sent };
      if (code === 'OK' || code === 'CANCELLED') log.debug(line, 'rpc');
      else log.info(line, 'rpc');
    };
    // The opening list is written whole, whatever its length (hundreds of VMs): only the
    // transitions after it count against the buffer.
    let listing = false;
    const send = (e: VmEvent): void => {
      if (done) return;
      sent++;
      if (listing) {
        call.write(toVmEvent(e));
        return;
      }
      if (queued >= WATCH_BUFFER) {
        log.warn({ method: 'WatchVms', buffered: queued }, 'a VM watcher does not keep up: dropped');
        finish('RESOURCE_EXHAUSTED');
        // Ends the stream with a status after what is already queued; nothing more is added.
        call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `the watcher fell ${WATCH_BUFFER} events behind and was dropped; watch again` });
        return;
      }
      // write() returning false means the transport buffers it; count until it drains.
      if (!call.write(toVmEvent(e))) queued++;
    };
    call.on('drain', () => {
      queued = 0;
    });
    let unsubscribe = () => {};
    const offShutdown = manager.onShutdown(() => {
      finish('UNAVAILABLE');
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'the manager is shutting down; watch again once it is back' });
    });
    call.on('cancelled', () => finish('CANCELLED'));
    call.on('close', () => finish('OK'));
    call.on('error', () => finish('CANCELLED'));
    // The current list once recovery has decided every VM an earlier run left, then each
    // transition; subscribing and listing in one tick, so nothing falls between them.
    void manager.recovered().then(() => {
      if (done) return;
      unsubscribe = manager.watch(send);
      const now = new Date().toISOString();
      listing = true;
      for (const v of manager.listNow()) send({ id: v.id, from: 'new', to: v.state, reason: 'current', at: now, vm: v });
      listing = false;
    });
  };
}

function toVmEvent(e: VmEvent): VmEventMsg {
  return { id: e.id, from: e.from, to: e.to, reason: e.reason, at: e.at, vm: toVmStatus(e.vm) };
}

export function adminHandlers(manager: VmManager, log: Logger, recorder: CallRecorder): ManagerAdminHandlers {
  const S = 'manager.ManagerAdmin';
  return {
    ListVms: unary(S, 'ListVms', log, recorder, async () => ({ vms: (await manager.list()).map(toVmStatus) })),
    GetVm: unary(S, 'GetVm', log, recorder, async (req) => toVmStatus(await manager.status(req.id))),
    WatchVms: watchVms(manager, log, recorder),
  };
}

export function serverCredentials(tls: TlsMaterial | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.clientCa ?? null,
    [{ private_key: tls.key, cert_chain: tls.certChain }],
    tls.clientCa !== undefined,
  );
}

export interface GrpcServer {
  server: grpc.Server;
  health: HealthImplementation;
  /** The names health answers for ('' is the whole server). */
  services: string[];
}

/** A server pings a connection with a call open after this much silence (a peer gone dead). */
export const KEEPALIVE_TIME_MS = 2 * 60_000;
/** ... and closes it when the ping is not answered within this. */
export const KEEPALIVE_TIMEOUT_MS = 20_000;
/** Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); clients queue the rest. */
export const MAX_CONCURRENT_STREAMS = 100;
/** nghttp2's memory per connection, in MiB (headers tables, queued frames); past it, new streams are refused. */
export const MAX_SESSION_MEMORY_MIB = 32;

/**
 * The bounds of each connection of a TCP port (docs/configuration.md, "Connections"): the
 * idle timeout closes a connection with no call open (a client reconnects by itself), the
 * keep-alive pings find dead peers of connections with calls open, and the stream and memory
 * limits bound what one connection can hold. grpc-js has no ping policy of its own; nghttp2
 * ends a session that floods PINGs or SETTINGS (it caps the acknowledgements it queues).
 */
export function tcpTransportOptions(idleMs: number): grpc.ServerOptions {
  return {
    'grpc.max_connection_idle_ms': idleMs,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    'grpc-node.max_session_memory': MAX_SESSION_MEMORY_MIB,
  };
}

/**
 * A server of ManagerService, health and reflection, and of ManagerAdmin when `admin` (the admin
 * socket always; the TCP port only when asked for and behind mutual TLS). `transport`: the
 * per-connection bounds of a TCP port (the admin socket's server has none).
 */
export function createGrpcServer(manager: VmManager, log: Logger, recorder: CallRecorder, { admin = true, transport = {} as grpc.ServerOptions } = {}): GrpcServer {
  const server = new grpc.Server({ ...transport, 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  // One load for the services and for reflection, which describes health too so grpcurl needs no .proto.
  const { pkg, reflection } = services();
  server.addService(pkg.manager.ManagerService.service, managerHandlers(manager, log, recorder));
  if (admin) server.addService(pkg.manager.ManagerAdmin.service, adminHandlers(manager, log, recorder));
  // Not serving until the daemon has recovered its VMs and says so.
  const names = ['', 'manager.ManagerService', ...(admin ? ['manager.ManagerAdmin'] : [])];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, 'NOT_SERVING'])));
  health.addToServer(server);
  for (const [service, impl] of reflection) server.addService(service, impl);
  return { server, health, services: names };
}

export function setServing(g: GrpcServer, serving: boolean): void {
  const status = serving ? 'SERVING' : 'NOT_SERVING';
  for (const name of g.services) g.health.setStatus(name, status);
}

export function bindServer(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

