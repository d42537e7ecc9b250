/**
 * Pins what a VM was launched from, in its record, so that its attestation policy describes
 * that launch and not whatever the files on the host hold later: the SHA-384 of every file its
 * QEMU command line loads into the guest (IGVM, firmware, kernel, initramfs) and, for SEV-SNP,
 * igvmmeasure's launch digest of that IGVM content. A VM that boots from its own disk boots
 * what the disk's source holds (no kernel or initramfs): its pin is the source's digest, taken
 * when the source was pinned (src/manager/disk-source.ts), never hashed again per VM.
 *
 * At CreateVm the files are opened, and their identities taken, before QEMU starts; they are
 * hashed (and measured) while QEMU starts, and checked untouched once QEMU is ready (its main
 * loop runs only after it has loaded them), so the digests are of the bytes QEMU read. Pinning never blocks a launch: a file the daemon cannot read (QEMU may run as root under
 * sudo) or a failing igvmmeasure is recorded, and the VM's policy is refused with that reason.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { type LaunchInput, launchInputs } from '../qemu/launch-inputs.js';
import type { LaunchPin, PinnedFile, VmRecord } from '../vm/vm-record.js';
import { ManagerError } from './errors.js';
import { assertUnchanged, FileChangedError, type HashedFile, type HashingFile, hashFile, startHashing } from './file-digest.js';
import type { IgvmMeasurer } from '../host/igvm-measurement.js';
import { sourceStillIs } from './disk-source.js';

/** A pin taken at CreateVm, to be confirmed once QEMU has loaded its files. */
export interface PendingPin {
  pin: LaunchPin;
  /** Rejects (FAILED_PRECONDITION) if a pinned file was replaced or written to since it was hashed. */
  confirm(): Promise<void>;
}

const SETTING: Record<PinnedFile['role'], string> = {
  igvm: 'MANAGER_QEMU_IGVM_FILE',
  firmware: 'MANAGER_QEMU_OVMF_CODE_FILE / MANAGER_QEMU_OVMF_FILE',
  kernel: 'MANAGER_QEMU_DISK_IMG_KERNEL_FILE',
  initramfs: 'MANAGER_QEMU_DISK_IMG_ROOTFS_FILE',
  disk: 'MANAGER_QEMU_SRC_DISK_FILE',
};

function reason(err: unknown): string {
  if (err instanceof FileChangedError || err instanceof ManagerError) return err.message;
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

export class LaunchPinner {
  constructor(private readonly measurer: IgvmMeasurer) {}

  /** Pins the launch inputs of a VM about to be started (its record carries the command). */
  async atCreate(record: VmRecord, log: Logger): Promise<PendingPin> {
    const { pin, opened, measured } = await this.take(record, 'create', log);
    return {
      pin,
      confirm: async () => {
        await measured; // hashing and igvmmeasure ran while QEMU started
        // Unchanged from before QEMU started until now: QEMU read the bytes that were hashed.
        for (const { input, file } of opened) {
          try {
            await assertUnchanged(file);
          } catch (err) {
            throw new ManagerError(
              'failed-precondition',
              `the ${input.role} file ${JSON.stringify(input.path)} (${SETTING[input.role]}) changed while the VM was starting (${reason(err)}): what QEMU loaded is not known, so the VM was not kept; try again`,
            );
          }
        }
        // QEMU opened the disk's backing file by now: still the content the disk was made on?
        const source = record.disk?.source;
        if (source && !(await sourceStillIs(source))) {
          throw new ManagerError(
            'failed-precondition',
            `the disk source ${JSON.stringify(source.path)} (${SETTING.disk}) changed while the VM was starting: what its disk holds is not known, so the VM was not kept; try again`,
          );
        }
      },
    };
  }

  /**
   * A VM re-adopted from a record written before pinning existed is measured once, now. The
   * values are those of the files as they are now, after the launch: `save` writes them to the
   * record so this happens only once.
   */
  async atAdoption(record: VmRecord, log: Logger, save: () => Promise<void>): Promise<void> {
    if (record.pinned) return;
    try {
      const { pin, measured } = await this.take(record, 'adoption', log);
      await measured;
      record.pinned = pin;
    } catch (err) {
      log.error({ err: reason(err) }, 'could not pin the launch measurements of a re-adopted VM: its attestation policy will be refused');
      return;
    }
    log.warn(
      { pinned: record.pinned },
      'this VM was launched before launch measurements were pinned: its launch files were hashed and measured now, after the launch, so its attestation policy holds them to the files as they are at adoption',
    );
    await save().catch((err: unknown) =>
      log.error({ err: reason(err) }, 'could not write the pinned values to the VM record: they will be measured again at the next start'),
    );
  }

  /** The SNP launch digest of the VM's pinned IGVM content. */
  async snpMeasurement(record: VmRecord, pin: LaunchPin): Promise<Uint8Array> {
    if (pin.snpLaunchMeasurement) return Uint8Array.from(Buffer.from(pin.snpLaunchMeasurement, 'hex'));
    const igvm = pin.files.find((f) => f.role === 'igvm');
    const refuse = (why: string): never => {
      throw new ManagerError('failed-precondition', `no launch measurement was pinned for VM ${record.id}: ${why}`);
    };
    if (!igvm?.sha384) return refuse(pin.measurementError ?? 'QEMU was given no IGVM file');
    // igvmmeasure failed when the VM was pinned; the content was pinned, so it can be measured
    // now, but only if the file still holds exactly that content.
    let now: HashedFile;
    try {
      now = await hashFile(path.resolve(igvm.path));
    } catch (err) {
      return refuse(`${pin.measurementError}; and the IGVM file ${JSON.stringify(igvm.path)} cannot be read now (${reason(err)})`);
    }
    if (now.sha384 !== igvm.sha384) {
      return refuse(`${pin.measurementError}; and the IGVM file ${JSON.stringify(igvm.path)} no longer holds the content the VM was launched from (SHA-384 ${now.sha384}, launched from ${igvm.sha384})`);
    }
    const digest = await this.measurer.measureContent(now);
    pin.snpLaunchMeasurement = Buffer.from(digest).toString('hex');
    pin.measurementError = null;
    return digest;
  }

  /**
   * Opens the launch files and takes their identities before anything else can read them, then
   * hashes them and (SEV-SNP) measures the IGVM content while the caller goes on, so hashing and
   * igvmmeasure overlap QEMU's start. `measured` settles (never rejects) once the pin is complete;
   * `opened` are the files whose identities confirm() compares.
   */
  private async take(
    record: VmRecord,
    takenAt: LaunchPin['takenAt'],
    log: Logger,
  ): Promise<{ pin: LaunchPin; opened: { input: LaunchInput; file: HashingFile }[]; measured: Promise<void> }> {
    const inputs = launchInputs(record.command);
    type Opened = { input: LaunchInput; file: HashingFile; error: null } | { input: LaunchInput; file: null; error: string };
    const results = await Promise.all(
      inputs.map(async (input): Promise<Opened> => {
        try {
          return { input, file: await startHashing(path.resolve(input.path)), error: null };
        } catch (err) {
          return { input, file: null, error: reason(err) };
        }
      }),
    );
    const files: PinnedFile[] = results.map((r) => ({ role: r.input.role, path: r.input.path, sha384: null, error: r.error }));
    const disk = record.disk?.source;
    if (disk) files.push({ role: 'disk', path: disk.path, sha384: disk.sha384, error: null });
    const pin: LaunchPin = { takenAt, at: new Date().toISOString(), files, snpLaunchMeasurement: null, measurementError: null };
    const opened = results.flatMap((r) => (r.file ? [{ input: r.input, file: r.file }] : []));

    const measured = (async () => {
      let igvm: HashedFile | undefined;
      await Promise.all(
        results.map(async (r, i) => {
          if (!r.file) return;
          try {
            files[i]!.sha384 = await r.file.sha384;
            if (r.input.role === 'igvm') igvm = { path: r.file.path, identity: r.file.identity, sha384: files[i]!.sha384! };
          } catch (err) {
            files[i]!.error = reason(err);
          }
        }),
      );
      for (const f of files) {
        if (f.error) log.warn({ role: f.role, path: f.path, setting: SETTING[f.role] }, `cannot hash a launch file, its digest is not pinned: ${f.error}`);
      }
      if (record.launch.kind !== 'sev-snp') return;
      const unread = files.find((f) => f.role === 'igvm');
      if (!igvm) {
        pin.measurementError = unread ? `cannot read the IGVM file ${JSON.stringify(unread.path)} (MANAGER_QEMU_IGVM_FILE): ${unread.error}` : 'QEMU was given no IGVM file';
        return;
      }
      try {
        pin.snpLaunchMeasurement = Buffer.from(await this.measurer.measureContent(igvm)).toString('hex');
      } catch (err) {
        pin.measurementError = reason(err);
        log.warn({ err: pin.measurementError }, 'igvmmeasure failed: no launch measurement is pinned; the VM runs, but its attestation policy needs the IGVM file unchanged');
      }
    })();
    return { pin, opened, measured };
  }
}
