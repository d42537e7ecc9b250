// Shared test helpers: paths and bounded process runs.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { runOnFakeHost } from './fake-host.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');

/** A clean environment: PATH and HOME only, so the host's MANAGER_* never leak into a test. */
export function baseEnv(extra = {}) {
  return { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root', ...extra };
}

/** Runs the CLI synchronously, bounded to 20 s; `host`: as on that fake host (fake-host.mjs). */
export function runCli(args, env = {}, { host, ...opts } = {}) {
  const r = host !== undefined
    ? runOnFakeHost(host, [process.execPath, CLI, ...args], { env: baseEnv(env), timeout: opts.timeout ?? 20_000 })
    : spawnSync(process.execPath, [CLI, ...args], {
      env: baseEnv(env),
      encoding: 'utf8',
      timeout: 20_000,
      ...opts,
    });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}
