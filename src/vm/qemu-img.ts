/**
 * qemu-img (Debian: qemu-utils), the one tool that makes and reads the VMs' disk images: no
 * shell, bounded time, its own words in every error. The manager reaches it through the
 * DiskImages port.
 */
import { type DiskImages, DiskImageError, type ImageInfo } from '../manager/disk-images.port.js';
import { loadExeca } from './spawner.js';

/** Creating an overlay or resizing writes a few KiB; a whole copy of a large image takes longer. */
const QUICK_MS = 60_000;
const COPY_MS = 60 * 60_000;

export class QemuImg implements DiskImages {
  constructor(private readonly bin = 'qemu-img') {}

  async info(file: string): Promise<ImageInfo> {
    // -U: the image may be open in a running QEMU (a source with overlays on it); only its header is read.
    const out = await this.run(['info', '-U', '--output=json', file], QUICK_MS, `read ${file}`);
    let j: { format?: unknown; 'virtual-size'?: unknown; 'backing-filename'?: unknown };
    try {
      j = JSON.parse(out);
    } catch {
      throw new DiskImageError(`qemu-img info ${file} printed no JSON`);
    }
    if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number') throw new DiskImageError(`qemu-img info ${file}: no format or virtual size`);
    return { format: j.format, virtualSize: j['virtual-size'], backingFile: typeof j['backing-filename'] === 'string' ? j['backing-filename'] : undefined };
  }

  async createOverlay(file: string, backing: string, backingFormat: string, size: number): Promise<void> {
    await this.run(['create', '-q', '-f', 'qcow2', '-b', backing, '-F', backingFormat, file, String(size)], QUICK_MS, `create ${file} on ${backing}`);
  }

  async convert(source: string, sourceFormat: string, file: string, format: string): Promise<void> {
    await this.run(['convert', '-q', '-f', sourceFormat, '-O', format, source, file], COPY_MS, `copy ${source} to ${file}`);
  }

  async resize(file: string, format: string, size: number): Promise<void> {
    await this.run(['resize', '-q', '-f', format, file, String(size)], QUICK_MS, `resize ${file}`);
  }

  private async run(args: string[], timeout: number, what: string): Promise<string> {
    const { execa } = await loadExeca();
    const r = await execa(this.bin, args, { reject: false, timeout, stdin: 'ignore', maxBuffer: 1024 * 1024 });
    const said = String(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
    if ((r as { code?: string }).code === 'ENOENT') throw new DiskImageError(`${this.bin} not found: install qemu-utils (make system-deps)`);
    if (r.timedOut) throw new DiskImageError(`qemu-img could not ${what} within ${timeout / 1000} s`);
    if (r.exitCode !== 0) throw new DiskImageError(`qemu-img could not ${what}${said ? `: ${said}` : ` (${r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`})`}`);
    return String(r.stdout);
  }
}
