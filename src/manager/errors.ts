/** Failures the API reports to callers, by kind; the API layer maps each kind to a gRPC status. */
export type ErrorKind =
  | 'invalid-argument'
  | 'not-found'
  | 'resource-exhausted'
  | 'failed-precondition'
  | 'unavailable'
  | 'unimplemented'
  | 'internal';

export class ManagerError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ManagerError';
  }
}

/** No VM with this id here. The API words it for the caller, with the field the caller filled (cvm_id, id). */
export class VmNotFound extends ManagerError {
  constructor(readonly vmId: string) {
    super('not-found', `no VM with id ${JSON.stringify(vmId)} on this manager`);
    this.name = 'VmNotFound';
  }
}
