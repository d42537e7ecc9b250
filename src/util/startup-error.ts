/** A start-up failure the operator must fix (unreadable certificate, unwritable state dir...): exit 2, one line. */
export class StartupError extends Error {
  override name = 'StartupError';
}
