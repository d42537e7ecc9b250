/**
 * Reference values as one JSON document: `policy`, `root_of_trust`, `pcr_values`; bytes in
 * base64. `launch_inputs` says which files (by SHA-384, hex) the values were pinned from.
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
  const launchInputs = rv.launch ? { pinned: rv.launch.pinned, files: rv.launch.files } : undefined;
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
          launch_inputs: launchInputs,
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
          launch_inputs: launchInputs,
        };
  return new TextEncoder().encode(`${stringifyWithBigInts(doc)}\n`);
}
