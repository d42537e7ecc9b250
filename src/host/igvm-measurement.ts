/**
 * The SNP launch digest of an IGVM file, from `igvmmeasure <file> measure -b` (no shell, bounded
 * time). Cached by the file's content (its SHA-384), never by name, size or time, which a
 * replaced file can keep; concurrent first calls for the same content share one run.
 */
import path from 'node:path';
import { loadExeca } from '../vm/spawner.js';
import { ManagerError } from '../manager/errors.js';
import { assertUnchanged, FileChangedError, type HashedFile, hashFile } from '../manager/file-digest.js';

export class IgvmMeasurer {
  private readonly cache = new Map<string, Promise<Uint8Array>>();
  /** How many times the tool actually ran (for tests and metrics). */
  runs = 0;

  constructor(
    private readonly binaryDir: string,
    private readonly timeoutMs: number,
  ) {}

  get binary(): string {
    return path.join(this.binaryDir, 'igvmmeasure');
  }

  /** Hashes the file, then measures that content (see measureContent). */
  async measure(igvmFile: string): Promise<Uint8Array> {
    let hashed: HashedFile;
    try {
      hashed = await hashFile(igvmFile);
    } catch (err) {
      const why = err instanceof FileChangedError ? err.message : (err as NodeJS.ErrnoException).code ?? String(err);
      throw new ManagerError('failed-precondition', `cannot read the IGVM file ${JSON.stringify(igvmFile)} (MANAGER_QEMU_IGVM_FILE): ${why}`);
    }
    return this.measureContent(hashed);
  }

  /**
   * The launch digest of the content `hashed` describes. On a cache miss igvmmeasure reads the
   * file by its path, so the file must still be that content when the tool is done (same inode,
   * size and times); otherwise nothing is remembered and the caller is told.
   */
  measureContent(hashed: HashedFile): Promise<Uint8Array> {
    const key = hashed.sha384;
    let pending = this.cache.get(key);
    if (!pending) {
      pending = this.run(hashed.path).then(async (digest) => {
        try {
          await assertUnchanged(hashed);
        } catch (err) {
          throw new ManagerError('failed-precondition', `the IGVM file changed while igvmmeasure read it (${(err as Error).message}); try again`);
        }
        return digest;
      });
      this.cache.set(key, pending);
      pending.catch(() => this.cache.delete(key)); // a failure is not remembered: the next call retries
    }
    return pending;
  }

  private async run(igvmFile: string): Promise<Uint8Array> {
    this.runs++;
    const { execa } = await loadExeca();
    const r = await execa(this.binary, [igvmFile, 'measure', '-b'], {
      timeout: this.timeoutMs,
      reject: false,
      stdin: 'ignore',
      maxBuffer: 64 * 1024,
    });
    const stderr = String(r.stderr ?? '').trim().slice(-2000);
    const fail = (why: string): never => {
      throw new ManagerError('failed-precondition', `igvmmeasure (${this.binary}) ${why}${stderr ? `; stderr: ${stderr}` : ''}`);
    };
    if ((r as { code?: string }).code === 'ENOENT') fail('not found (MANAGER_ATTESTATION_POLICY_BINARY_PATH)');
    if (r.timedOut) fail(`did not finish within MANAGER_IGVMMEASURE_TIMEOUT (${this.timeoutMs} ms)`);
    if (r.failed && r.exitCode === undefined) fail(`could not run: ${r.originalMessage ?? r.shortMessage}`);
    if (r.exitCode !== 0) fail(`exited with status ${r.exitCode}`);
    const lines = String(r.stdout).split(/\r?\n/).filter((l) => l.trim() !== '');
    if (lines.length !== 1) fail(`printed ${lines.length} lines; expected exactly one line of hex`);
    const hex = lines[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(hex)) fail('printed something that is not hex');
    if (hex.length !== 96) fail(`printed ${hex.length / 2} bytes; expected the 48-byte SNP launch digest`);
    return Uint8Array.from(Buffer.from(hex, 'hex'));
  }
}
