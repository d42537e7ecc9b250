/**
 * manager.ManagerService over gRPC, wire-compatible with the Go manager's proto.
 * Maps the manager's error kinds to gRPC status codes; logs one line per call.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { ManagerError, type ErrorKind } from '../../manager/errors.js';
import type { VmManager } from '../../manager/vm-manager.js';
import type { TlsMaterial } from '../tls.js';
import type { ProtoGrpcType } from './generated/manager.js';
import type { ManagerServiceHandlers } from './generated/manager/ManagerService.js';

export const PROTO_PATH = fileURLToPath(new URL('../../../proto/manager.proto', import.meta.url));

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function loadManagerPackage(): ProtoGrpcType {
  const def = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
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

function toServiceError(err: unknown, log: Logger, method: string): Partial<grpc.ServiceError> {
  if (err instanceof ManagerError) return { code: STATUS[err.kind], details: err.message };
  // Unexpected: log it whole here, tell the caller only that it happened.
  log.error({ method, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'unexpected error');
  return { code: grpc.status.INTERNAL, details: `internal error in ${method}; see the manager's log` };
}

/** Wraps a handler: timing, status mapping, one log line per call (no request data in it). */
function unary<Req, Res>(
  method: string,
  log: Logger,
  handle: (req: Req) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = process.hrtime.bigint();
    Promise.resolve()
      .then(() => handle(call.request))
      .then(
        (res) => {
          log.info({ method, code: 'OK', ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'rpc');
          callback(null, res);
        },
        (err: unknown) => {
          const e = toServiceError(err, log, method);
          log.info({ method, code: grpc.status[e.code!], ms: Number(process.hrtime.bigint() - started) / 1e6, details: e.details }, 'rpc');
          callback(e as grpc.ServiceError);
        },
      );
  };
}

export function managerHandlers(manager: VmManager, log: Logger): ManagerServiceHandlers {
  return {
    CreateVm: unary('CreateVm', log, async (req) => {
      const { id, port } = await manager.create(req);
      return { forwarded_port: String(port), cvm_id: id };
    }),
    RemoveVm: unary('RemoveVm', log, async (req) => {
      await manager.remove(req.cvm_id);
      return {};
    }),
    CVMInfo: unary('CVMInfo', log, (req) => {
      const i = manager.info(req.id);
      return {
        id: i.id,
        ovmf_version: i.ovmfVersion,
        cpu_num: i.cpuNum,
        cpu_type: i.cpuType,
        kernel_cmd: i.kernelCmd,
        eos_version: i.eosVersion,
      };
    }),
    AttestationPolicy: unary('AttestationPolicy', log, async (req) => ({
      info: Buffer.from(await manager.attestationPolicy(req.id)),
      id: req.id,
    })),
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

export function createGrpcServer(manager: VmManager, log: Logger): grpc.Server {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(loadManagerPackage().manager.ManagerService.service, managerHandlers(manager, log));
  return server;
}

export function bindServer(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}
