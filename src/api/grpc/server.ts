/**
 * The gRPC server: manager.ManagerService (wire-compatible with the Go manager's proto),
 * manager.ManagerAdmin (operator methods), grpc.health.v1.Health and server reflection, each call
 * through the call-telemetry interceptor; the transport bounds of a TCP port.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ManagerService } from '../../manager/manager-service.port.js';
import type { TlsMaterial } from '../tls.js';
import { type CallRecorder, callTelemetry } from './call-telemetry.js';
import { adminHandlers, managerHandlers } from './handlers.js';
import { loadPackageDefinition } from './protos.js';
import type { ProtoGrpcType as ManagerProto } from './generated/manager.js';
import type { ProtoGrpcType as AdminProto } from './generated/manager-admin.js';

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

