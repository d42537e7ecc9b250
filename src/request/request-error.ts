/** A request field the API refuses (INVALID_ARGUMENT): names the field and the rule, never the value. */
export class RequestError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'RequestError';
  }
}
