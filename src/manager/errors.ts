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
