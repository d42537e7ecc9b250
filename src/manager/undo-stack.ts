/**
 * What a launch has done so far, to be undone in reverse if a later step fails (as kata's
 * StartVM does): each step registers its undo as it runs, so a failure anywhere leaves nothing.
 */
import type { Logger } from 'pino';

export class UndoStack {
  private readonly undos: { what: string; undo: () => Promise<void> | void }[] = [];

  constructor(private readonly log: Logger) {}

  push(what: string, undo: () => Promise<void> | void): void {
    this.undos.push({ what, undo });
  }

  /** Undoes everything, last first; an undo that fails is logged and the others still run. */
  async unwind(): Promise<void> {
    for (let u = this.undos.pop(); u; u = this.undos.pop()) {
      try {
        await u.undo();
      } catch (err) {
        this.log.error({ step: u.what, err: String(err) }, `rollback: could not undo ${u.what}`);
      }
    }
  }
}
