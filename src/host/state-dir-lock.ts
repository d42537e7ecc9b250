/**
 * One daemon per state directory. Two daemons on one MANAGER_STATE_DIR would both re-adopt and
 * signal the same QEMUs, so the daemon holds an exclusive flock(2) on <state>/manager.lock for its
 * whole life. Node has no flock, so util-linux's flock(1) takes it and keeps it in a child that
 * lives exactly as long as the daemon: the child (cat) waits for EOF on a pipe from the daemon,
 * which the kernel closes when the daemon dies, even by SIGKILL. A crashed daemon leaves no stale
 * lock. node:child_process, not execa: a fixed argv with no shell, and execa's import would cost
 * the start ~140 ms (see vm/spawner.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { StartupError } from '../util/startup-error.js';

const CONFLICT = 75;
export const LOCK_FILE = 'manager.lock';

export interface StateDirLock {
  readonly file: string;
  /** Set if the lock holder dies while the daemon runs (someone killed it): the lock is gone. */
  onLost(cb: () => void): void;
}

function holderPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs flock(1) and resolves once it holds the lock, or with the reason it does not. flock runs
 * cat only once it holds the lock, so a byte that cat echoes back proves the lock is ours.
 */
function takeWithFlock(file: string, waitSeconds: number): Promise<{ child: ChildProcess } | { conflict: true } | { error: string }> {
  return new Promise((resolve) => {
    const mode = waitSeconds > 0 ? ['--timeout', String(waitSeconds)] : ['--nonblock'];
    const child = spawn('flock', [...mode, '--conflict-exit-code', String(CONFLICT), file, 'cat'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // a Ctrl-C to the daemon's terminal must not release the lock before the daemon is done
    });
    let out = '';
    let err = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) {
        child.stdout!.off('data', onData);
        child.removeListener('exit', onExit);
        resolve({ child });
      }
    };
    const onExit = (code: number | null) =>
      resolve(code === CONFLICT ? { conflict: true } : { error: err.trim().split('\n').pop() || `flock exited with ${code}` });
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    child.once('exit', onExit);
    child.once('error', (e) => resolve({ error: `cannot run flock(1) (util-linux): ${e.message}` }));
    child.stdin!.on('error', () => undefined); // flock exited (conflict) before reading: its exit says why
    child.stdin!.write('\n');
  });
}

export async function lockStateDir(stateDir: string): Promise<StateDirLock> {
  const file = path.join(stateDir, LOCK_FILE);
  let got = await takeWithFlock(file, 0);
  if ('conflict' in got) {
    const pid = holderPid(file);
    // The holder of a daemon that just died lets go a moment after it: wait for that, briefly.
    if (pid === undefined || !isRunning(pid)) got = await takeWithFlock(file, 5);
    if ('conflict' in got) {
      const who = pid !== undefined && isRunning(pid) ? `cocos-manager pid ${pid}` : 'another process';
      throw new StartupError(
        `MANAGER_STATE_DIR=${JSON.stringify(stateDir)} is in use by ${who} (lock ${file}): stop it, or give this daemon its own MANAGER_STATE_DIR`,
      );
    }
  }
  if ('error' in got) throw new StartupError(`cannot lock MANAGER_STATE_DIR=${JSON.stringify(stateDir)} (${file}): ${got.error}`);
  const { child } = got;
  // The holder must never keep the daemon alive, nor its stdout pipe fill up.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  child.stdout!.resume();
  child.stderr!.resume();
  fs.writeFileSync(file, `${process.pid}\n`);
  return {
    file,
    onLost(cb) {
      child.once('exit', cb);
    },
  };
}
