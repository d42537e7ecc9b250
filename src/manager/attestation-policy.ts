/**
 * AttestationPolicy: the reference values of one VM, encoded as configured (CoRIM, signed or not,
 * or JSON). The launch values come from the VM's record, pinned when it was launched, never
 * from the files on the host now; a policy that would not identify the VM is refused.
 */
import type { KeyObject } from 'node:crypto';
import type { PcrValues } from '../attestation/pcr-values.js';
import {
  type LaunchProvenance,
  type ReferenceValues,
  snpReferenceValues,
  tdxReferenceValues,
} from '../attestation/reference-values.js';
import type { Config } from '../config/types.js';
import type { LaunchPin, VmRecord } from '../vm/vm-record.js';
import { ManagerError } from './errors.js';
import type { LaunchPinner } from './launch-pin.js';

function provenance(pin: LaunchPin): LaunchProvenance {
  return {
    pinned: pin.takenAt,
    files: pin.files.flatMap((f) => (f.sha384 ? [{ role: f.role, path: f.path, sha384: f.sha384 }] : [])),
  };
}

export class AttestationPolicies {
  constructor(
    private readonly config: Config,
    /** Pins launch values at CreateVm and re-adoption (called by the VM manager). */
    readonly pinner: LaunchPinner,
    private readonly pcrs: PcrValues | undefined,
    private readonly signingKey: KeyObject | undefined,
  ) {}

  async referenceValues(record: VmRecord): Promise<ReferenceValues> {
    const launch = record.launch;
    if (launch.kind === 'plain') {
      throw new ManagerError(
        'failed-precondition',
        `VM ${record.id} is neither SEV-SNP nor TDX (plain OVMF boot): it produces no attestation report, so there is no policy to verify it against`,
      );
    }
    const pin = record.pinned;
    if (!pin) {
      throw new ManagerError(
        'failed-precondition',
        `VM ${record.id} has no pinned launch values: it was launched before they were pinned and could not be measured when it was re-adopted (see the daemon's log); recreate the VM`,
      );
    }
    if (launch.kind === 'sev-snp') {
      const measurement = await this.pinner.snpMeasurement(record, pin);
      const rv = snpReferenceValues(this.config.attestation, { measurement, hostDataBase64: launch.hostData, cpu: launch.cpu }, this.pcrs);
      return { ...rv, launch: provenance(pin) };
    }
    const rv = tdxReferenceValues(this.config.attestation, this.pcrs);
    // MRSEAM, TD attributes, XFAM, the TCB SVN and PCRs describe the platform or add to a TD's
    // identity; without MRTD or an RTMR any TD would meet the policy.
    if (!rv.mrtd && rv.rtmrs.every((r) => r === undefined)) {
      throw new ManagerError(
        'failed-precondition',
        `the TDX policy of VM ${record.id} would not identify the TD: set MANAGER_TDX_MRTD and/or MANAGER_TDX_RTMR0..MANAGER_TDX_RTMR3 (the TD's own measurements; MANAGER_TDX_MRSEAM, MANAGER_TDX_TD_ATTRIBUTES, MANAGER_TDX_XFAM, MANAGER_TDX_MIN_TEE_TCB_SVN and MANAGER_PCR_VALUES only add to them)`,
      );
    }
    return { ...rv, launch: provenance(pin) };
  }

  async policyFor(record: VmRecord): Promise<Uint8Array> {
    const rv = await this.referenceValues(record);
    // The encoders (and the CBOR library) load on the first policy asked for, not at start.
    if (this.config.attestationPolicyFormat === 'json') return (await import('../attestation/json-policy.js')).encodeJsonPolicy(rv);
    const { encodeUnsignedCorim } = await import('../attestation/corim.js');
    const corim = encodeUnsignedCorim(record.id, rv);
    return this.signingKey ? (await import('../attestation/cose.js')).signCorim(corim, this.signingKey) : corim;
  }
}
