/**
 * What the manager asks of disk images (qemu-img): src/vm/qemu-img.ts runs the tool, tests pass
 * a stand-in that fails where a real qemu-img would not. The manager never runs a process itself
 * (a dependency-cruiser rule).
 */

/** What `qemu-img info` says of an image. */
export interface ImageInfo {
  format: string;
  virtualSize: number;
  /** The image has a backing file of its own (an overlay is not a source). */
  backingFile: string | undefined;
}

export interface DiskImages {
  info(file: string): Promise<ImageInfo>;
  /** A qcow2 file of `size` bytes whose backing file (read-only to QEMU) is `backing`, in `backingFormat`. */
  createOverlay(file: string, backing: string, backingFormat: string, size: number): Promise<void>;
  /** A whole copy of `source` (in `sourceFormat`) into `file`, in `format`. */
  convert(source: string, sourceFormat: string, file: string, format: string): Promise<void>;
  resize(file: string, format: string, size: number): Promise<void>;
}

/** qemu-img failed: its words, and what it was doing. */
export class DiskImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiskImageError';
  }
}
