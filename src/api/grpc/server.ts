/**
 * The gRPC server: manager.ManagerService (wire-compatible with the Go manager's proto),
 * manager.ManagerAdmin (operator methods), grpc.health.v1.Health and server reflection.
 * The handlers parse what comes in (VmRequest, VmId), call the manager through its port and map
 * its errors to gRPC status codes; spans, metrics and log lines are call-telemetry.ts's.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import type { Logger } from 'pino';
import { ManagerError, type ErrorKind, VmNotFound } from '../../manager/errors.js';
import type { ManagerService, VmEvent, VmStatusView } from '../../manager/manager-service.port.js';
import { RequestError, validateCreateReq } from '../../request/create-request.js';
import { parseVmId, type VmId } from '../../request/vm-id.js';
import type { TlsMaterial } from '../tls.js';
import { type CallRecorder, callTelemetry } from './call-telemetry.js';
import type { ProtoGrpcType as ManagerProto } from './generated/manager.js';
import type { ProtoGrpcType as AdminProto } from './generated/manager-admin.js';
import type { ManagerAdminHandlers } from './generated/manager/ManagerAdmin.js';
import type { ManagerServiceHandlers } from './generated/manager/ManagerService.js';
import type { VmStatus } from './generated/manager/VmStatus.js';
import type { VmEvent as VmEventMsg } from './generated/manager/VmEvent.js';

const protoFile = (name: string) => fileURLToPath(new URL(`../../../proto/${name}`, import.meta.url));
export const PROTO_FILES = [protoFile('manager.proto'), protoFile('manager-admin.proto')];

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Every service this daemon serves (health included, for reflection). */
export function loadPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([...PROTO_FILES, healthProtoPath], LOADER_OPTIONS);
}

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

function toServiceError(err: unknown, log: Logger, method: string): { code: grpc.status; details: string } {
  if (err instanceof RequestError) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof ManagerError) return { code: STATUS[err.kind], details: err.message };
  // Unexpected: log it whole here, tell the caller only that it happened.
  log.error({ method, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'unexpected error');
  return { code: grpc.status.INTERNAL, details: `internal error in ${method}; see the manager's log` };
}

/** A unary handler answering from `handle`: a failure becomes the call's gRPC status. */
function unary<Req, Res>(method: string, log: Logger, handle: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => handle(call.request))
      .then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err, log, method) as grpc.ServiceError),
      );
  };
}

/**
 * A call about one VM: its id parsed from the request's `field`, which the errors name as the
 * caller wrote it (cvm_id in RemoveVm, id elsewhere).
 */
async function aboutVm<T>(field: string, raw: string, use: (id: VmId) => Promise<T>): Promise<T> {
  const id = parseVmId(field, raw);
  try {
    return await use(id);
  } catch (err) {
    if (err instanceof VmNotFound) throw new ManagerError('not-found', `no VM with ${field} ${JSON.stringify(id)} on this manager`);
    throw err;
  }
}

export function managerHandlers(manager: ManagerService, log: Logger): ManagerServiceHandlers {
  return {
    CreateVm: unary('CreateVm', log, async (req) => {
      const { id, port } = await manager.create(validateCreateReq(req));
      return { forwarded_port: String(port), cvm_id: id };
    }),
    RemoveVm: unary('RemoveVm', log, (req) =>
      aboutVm('cvm_id', req.cvm_id, async (id) => {
        await manager.remove(id);
        return {};
      }),
    ),
    CVMInfo: unary('CVMInfo', log, (req) =>
      aboutVm('id', req.id, async (id) => {
        const i = await manager.info(id);
        return {
          id: i.id,
          ovmf_version: i.ovmfVersion,
          cpu_num: i.cpuNum,
          cpu_type: i.cpuType,
          kernel_cmd: i.kernelCmd,
          eos_version: i.eosVersion,
        };
      }),
    ),
    AttestationPolicy: unary('AttestationPolicy', log, (req) =>
      aboutVm('id', req.id, async (id) => ({ info: Buffer.from(await manager.attestationPolicy(id)), id })),
    ),
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

function watchVms(manager: ManagerService, log: Logger): ManagerAdminHandlers['WatchVms'] {
  return (call) => {
    let done = false;
    let queued = 0;
    const end = () => {
      if (done) return;
      done = true;
      unsubscribe();
      offShutdown();
    };
    // The opening list is written whole, whatever its length (hundreds of VMs): only the
    // transitions after it count against the buffer.
    let listing = false;
    const send = (e: VmEvent): void => {
      if (done) return;
      if (listing) {
        call.write(toVmEvent(e));
        return;
      }
      if (queued >= WATCH_BUFFER) {
        log.warn({ method: 'WatchVms', buffered: queued }, 'a VM watcher does not keep up: dropped');
        end();
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
      end();
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'the manager is shutting down; watch again once it is back' });
    });
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
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

export function adminHandlers(manager: ManagerService, log: Logger): ManagerAdminHandlers {
  return {
    ListVms: unary('ListVms', log, async () => ({ vms: (await manager.list()).map(toVmStatus) })),
    GetVm: unary('GetVm', log, (req) => aboutVm('id', req.id, async (id) => toVmStatus(await manager.status(id)))),
    WatchVms: watchVms(manager, log),
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
export function createGrpcServer(manager: ManagerService, log: Logger, recorder: CallRecorder, { admin = true, transport = {} as grpc.ServerOptions } = {}): GrpcServer {
  const server = new grpc.Server({
    ...transport,
    'grpc.max_receive_message_length': 4 * 1024 * 1024,
    // Every call of every service below gets its span, metric sample and log line there.
    interceptors: [callTelemetry(log, recorder)],
  });
  // One load for the services and for reflection, which describes health too so grpcurl needs no .proto.
  const { pkg, reflection } = services();
  server.addService(pkg.manager.ManagerService.service, managerHandlers(manager, log));
  if (admin) server.addService(pkg.manager.ManagerAdmin.service, adminHandlers(manager, log));
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

