/**
 * A VM id as the manager takes it: parsed once, where a request enters, so nothing past the
 * API checks it again. Pure.
 */
import { RequestError } from './request-error.js';

declare const parsed: unique symbol;
/** Only parseVmId makes one (the brand is not exported): a raw string does not type-check. */
export type VmId = string & { readonly [parsed]: true };

export const MAX_VM_ID_LENGTH = 128;

/**
 * Never used as a path (the registry maps it), but bounded and printable: it is echoed in
 * errors and logs. `field`: the proto field the caller filled (cvm_id, id), which the error names.
 */
export function parseVmId(field: string, raw: string): VmId {
  if (raw === '') throw new RequestError(field, 'is empty');
  if (raw.length > MAX_VM_ID_LENGTH) throw new RequestError(field, `longer than ${MAX_VM_ID_LENGTH} characters`);
  if (/\p{Cc}/u.test(raw)) throw new RequestError(field, 'must not contain control characters');
  return raw as VmId;
}
