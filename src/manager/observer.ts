/** What the manager reports as it works, for metrics; the manager knows nothing of Prometheus. */
export type QemuExitCause = 'removed' | 'ttl' | 'exited' | 'crashed' | 'killed' | 'start-failed';

export interface ManagerObserver {
  vmStarted(seconds: number): void;
  qemuExited(cause: QemuExitCause): void;
}

export const NO_OBSERVER: ManagerObserver = {
  vmStarted: () => undefined,
  qemuExited: () => undefined,
};
