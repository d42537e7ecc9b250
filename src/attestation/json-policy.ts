/**
 * Reference values as one JSON document: `policy`, `root_of_trust`, `pcr_values`; bytes in
 * base64: the fields of the Go manager's document and no others, since the Go verifier reads it
 * strictly (protojson rejects unknown fields). Where the values were pinned from is in the
 * VM's record and in the CoRIM form, not here.
 */
import { pcrValuesToJson } from './pcr-values.js';
import type { ReferenceValues } from './reference-values.js';

const b64 = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString('base64'));

/** JSON numbers for 64-bit values: exact even beyond 2^53, as Go's encoder writes them. */
function stringifyWithBigInts(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? `__u64__${v.toString()}` : v), 2).replace(
    /"__u64__(\d+)"/g,
    '$1',
  );
}

export function encodeJsonPolicy(rv: ReferenceValues): Uint8Array {
  const doc =
    rv.kind === 'sev-snp'
      ? {
          policy: {
            measurement: b64(rv.measurement),
            host_data: b64(rv.hostData),
            policy: rv.guestPolicy,
            vmpl: rv.vmpl,
            minimum_launch_tcb: rv.minimumLaunchTcb,
            product: rv.product,
          },
          root_of_trust: { product_line: rv.product, check_crl: true },
          pcr_values: rv.pcrs ? pcrValuesToJson(rv.pcrs) : undefined,
        }
      : {
          policy: {
            mr_td: b64(rv.mrtd),
            rtmrs: rv.rtmrs.map((r) => b64(r) ?? null),
            mr_seam: b64(rv.mrseam),
            td_attributes: b64(rv.tdAttributes),
            xfam: b64(rv.xfam),
            minimum_tee_tcb_svn: b64(rv.minTeeTcbSvn),
          },
          root_of_trust: { product_line: 'TDX', check_crl: true },
          pcr_values: rv.pcrs ? pcrValuesToJson(rv.pcrs) : undefined,
        };
  return new TextEncoder().encode(`${stringifyWithBigInts(doc)}\n`);
}
