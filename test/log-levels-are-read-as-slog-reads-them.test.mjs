// MANAGER_LOG_LEVEL as the Go manager reads it (slog.Level.UnmarshalText): a name in any case,
// and slog's offsets, mapped to the pino level that shows the lines slog would show. Read by a
// real daemon: what reaches stdout is what the level lets through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { adminPkg, call, fakeQemuEnv, spawnServe, tmpDir, waitFor } from './daemon.mjs';

/**
 * Starts a daemon with `level`, waits until it answers on its admin socket (its ports are logged
 * at info, which some levels hide), stops it and returns every line it wrote.
 */
async function linesAt(level) {
  const { proc, logs, adminSocket } = spawnServe(fakeQemuEnv(tmpDir(), { MANAGER_LOG_LEVEL: level }));
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal)));
  const admin = new adminPkg.ManagerAdmin(`unix:${adminSocket}`, grpc.credentials.createInsecure());
  const answers = () => call(admin, 'ListVms', {}, 2_000).then(() => true, () => false);
  let up;
  try {
    up = await waitFor(async () => proc.exitCode !== null || (fs.existsSync(adminSocket) && (await answers())), 20_000, 50);
  } finally {
    admin.close();
    proc.kill('SIGTERM');
  }
  assert.ok(up && proc.exitCode === null, `the daemon did not answer on its admin socket: ${logs.stderr}`);
  assert.equal(await exited, 0, logs.stderr);
  return logs.lines;
}

const levels = (lines) => new Set(lines.map((l) => l.level));

test('DEBUG and debug: debug lines and up', async () => {
  for (const level of ['DEBUG', 'debug', 'DEBUG-4']) {
    const lines = await linesAt(level);
    assert.ok(levels(lines).has('debug'), `${level}: ${[...levels(lines)]}`);
    assert.ok(levels(lines).has('info'), level);
  }
});

test('Info and INFO-1: info lines and up, no debug', async () => {
  for (const level of ['Info', 'INFO-1']) {
    const lines = await linesAt(level);
    assert.ok(levels(lines).has('info'), level);
    assert.ok(!levels(lines).has('debug'), level);
  }
});

test('INFO+2 shows what slog would (WARN and up): warnings, no info', async () => {
  for (const level of ['INFO+2', 'WARN', 'warn']) {
    const lines = await linesAt(level);
    // fakeQemuEnv's opt-out is said at warn at every start.
    assert.ok(lines.some((l) => l.level === 'warn' && /MANAGER_ALLOW_NON_CONFIDENTIAL_VMS=true/.test(l.msg)), `${level}: ${JSON.stringify(lines)}`);
    assert.deepEqual([...levels(lines)].filter((l) => l === 'info' || l === 'debug'), [], level);
  }
});

test('ERROR+5: above anything the daemon writes, so nothing', async () => {
  assert.deepEqual(await linesAt('ERROR+5'), []);
});
