/**
 * execa, loaded on first use: importing it costs ~140 ms, which the daemon's start should not
 * pay; serve() preloads it right after the daemon is serving.
 */
type Execa = typeof import('execa');

let loading: Promise<Execa> | undefined;

export function loadExeca(): Promise<Execa> {
  loading ??= import('execa');
  return loading;
}

export function preloadSpawner(): Promise<unknown> {
  return loadExeca().catch(() => undefined);
}
