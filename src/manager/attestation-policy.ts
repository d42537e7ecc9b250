/** AttestationPolicy: the reference values of one VM, encoded as configured (CoRIM, signed or not, or JSON). */
import type { KeyObject } from 'node:crypto';
import type { PcrValues } from '../attestation/pcr-values.js';
import { type ReferenceValues, snpReferenceValues, tdxReferenceValues } from '../attestation/reference-values.js';
import type { Config } from '../config/types.js';
import type { VmRecord } from '../vm/vm-record.js';
import { ManagerError } from './errors.js';
import type { IgvmMeasurer } from './igvm-measurement.js';

export class AttestationPolicies {
  constructor(
    private readonly config: Config,
    private readonly measurer: IgvmMeasurer,
    private readonly pcrs: PcrValues | undefined,
    private readonly signingKey: KeyObject | undefined,
  ) {}

  async referenceValues(record: VmRecord): Promise<ReferenceValues> {
    const launch = record.launch;
    if (launch.kind === 'sev-snp') {
      const measurement = await this.measurer.measure(launch.igvmFile ?? this.config.qemu.igvmFile);
      return snpReferenceValues(this.config.attestation, { measurement, hostDataBase64: launch.hostData, cpu: launch.cpu }, this.pcrs);
    }
    if (launch.kind === 'tdx') return tdxReferenceValues(this.config.attestation, this.pcrs);
    throw new ManagerError(
      'failed-precondition',
      `VM ${record.id} is neither SEV-SNP nor TDX (plain OVMF boot): it produces no attestation report, so there is no policy to verify it against`,
    );
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
