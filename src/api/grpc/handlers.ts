/**
 * The handlers of manager.ManagerService and manager.ManagerAdmin: each parses what comes in
 * (VmRequest, VmId), asks the manager through its port and maps its errors to gRPC status codes.
 * Spans, metrics and log lines are the interceptor's (call-telemetry.ts).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ManagerError, type ErrorKind, VmNotFound } from '../../manager/errors.js';
import type { ManagerService, VmEvent, VmStatusView } from '../../manager/manager-service.port.js';
import { RequestError, validateCreateReq } from '../../request/create-request.js';
import { parseVmId, type VmId } from '../../request/vm-id.js';
import type { ManagerAdminHandlers } from './generated/manager/ManagerAdmin.js';
import type { ManagerServiceHandlers } from './generated/manager/ManagerService.js';
import type { VmStatus } from './generated/manager/VmStatus.js';
import type { VmEvent as VmEventMsg } from './generated/manager/VmEvent.js';

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
    gpu: v.gpu ?? '',
    cvm_kind: v.cvmKind,
    cvm_decision: v.cvmDecision ?? '',
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
