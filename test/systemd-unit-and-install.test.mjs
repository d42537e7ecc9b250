// The systemd unit passes systemd-analyze verify with no warning, keeps VMs across restarts
// (KillMode=process), the env file lists every setting with its default, and `make install`
// stages a runnable daemon, the unit and the env file under DESTDIR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ROOT } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';
import { otlpReceiver } from './otlp-receiver.mjs';
import { loadConfig } from '../dist/config/load.js';
import { SETTING_LIST } from '../dist/config/settings.js';
import { FACTS } from './fake-host.mjs';

const UNIT = path.join(ROOT, 'systemd', 'cocos-manager.service');

function parseEnvFile(text) {
  const env = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    assert.ok(m, `not KEY=VALUE: ${line}`);
    env[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
  }
  return env;
}

test('systemd-analyze verify accepts the unit with no warning', () => {
  const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', r.stderr);
  const unit = fs.readFileSync(UNIT, 'utf8');
  assert.match(unit, /^KillMode=process$/m);
  assert.match(unit, /^EnvironmentFile=\/etc\/cocos\/cocos-manager.env$/m);
  assert.match(unit, /^Restart=on-failure$/m);
  assert.match(unit, /^StateDirectory=cocos-manager$/m);
  // The admin socket's directory (MANAGER_ADMIN_SOCKET=/run/cocos-manager/admin.sock).
  assert.match(unit, /^RuntimeDirectory=cocos-manager$/m);
  assert.doesNotMatch(unit, /^(PrivateDevices|MemoryDenyWriteExecute|NoNewPrivileges)=(yes|true)$/m);
});

test('LimitNOFILE bounds the daemon and holds the connection caps and 1000 VMs at the defaults', async () => {
  const { descriptorsNeeded } = await import('../dist/cli/serve.js');
  const unit = fs.readFileSync(UNIT, 'utf8');
  const m = /^LimitNOFILE=(\d+)$/m.exec(unit);
  assert.ok(m, 'LimitNOFILE= is set, to one number (soft = hard: no raising it past the bound)');
  const limit = Number(m[1]);
  const defaults = loadConfig({}, FACTS.plain);
  assert.ok(limit >= descriptorsNeeded(defaults, 1000), `${limit} < ${descriptorsNeeded(defaults, 1000)}`);
  // A bound, not systemd's 524288.
  assert.ok(limit <= 65536, `${limit}`);
});

test('the unit runs in the install prefix, so relative settings resolve there, not against /', () => {
  const unit = fs.readFileSync(UNIT, 'utf8');
  const prefix = /^ExecStart=\S+ .*?(\/\S+)\/dist\/cli\.js serve$/m.exec(unit)[1];
  assert.match(unit, new RegExp(`^WorkingDirectory=${prefix}$`, 'm'));
});

test('TimeoutStopSec covers the longest stop the settings allow', async () => {
  const { longestStopMs } = await import('../dist/cli/serve.js');
  const { MAX_START_TIMEOUT_MS } = await import('../dist/config/load.js');
  const unit = fs.readFileSync(UNIT, 'utf8');
  const stopSec = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)[1]);
  assert.ok(stopSec * 1000 > longestStopMs(MAX_START_TIMEOUT_MS), `${stopSec}s < ${longestStopMs(MAX_START_TIMEOUT_MS)} ms`);
  // And the bound is enforced: a longer start timeout is refused at start.
  const { runCli } = await import('./helpers.mjs');
  const r = runCli(['qemu-args'], { MANAGER_QEMU_START_TIMEOUT: '6m' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /MANAGER_QEMU_START_TIMEOUT="6m": expected a positive Go duration of at most 5m/);
});

test('cocos-manager.env lists every setting, each with a comment, and its values are the defaults', () => {
  const text = fs.readFileSync(path.join(ROOT, 'cocos-manager.env'), 'utf8');
  const env = parseEnvFile(text);
  const names = SETTING_LIST.map((s) => s.env);
  assert.deepEqual(Object.keys(env).sort(), [...names].sort());
  const lines = text.split('\n');
  for (const key of names) {
    const i = lines.findIndex((l) => l.startsWith(`${key}=`));
    assert.match(lines[i - 1], /^# \S/, `comment above ${key}`);
  }
  // The same decisions too (their reasons name the variable as given: "auto" here, unset there).
  for (const host of [FACTS.plain, FACTS.sevSnp, FACTS.tdx]) {
    const { cvm: fromFileCvm, ...fromFile } = loadConfig(env, host);
    const { cvm: defaultsCvm, ...defaults } = loadConfig({}, host);
    assert.deepEqual(fromFile, defaults);
    assert.equal(fromFileCvm.kind, defaultsCvm.kind);
  }
});

test('make install (install-files, after the build) with DESTDIR stages the daemon, the unit and the env file', () => {
  const dest = tmpDir('cocos-install-');
  const r = spawnSync('make', ['-s', 'install-files', `DESTDIR=${dest}`], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const unit = path.join(dest, 'etc/systemd/system/cocos-manager.service');
  assert.ok(fs.existsSync(unit));
  assert.equal(fs.statSync(path.join(dest, 'etc/cocos/cocos-manager.env')).mode & 0o777, 0o640);
  assert.equal(fs.readlinkSync(path.join(dest, 'usr/local/bin/cocos-manager')), '/opt/cocos-manager/dist/cli.js');
  assert.equal(fs.existsSync(path.join(dest, 'opt/cocos-manager/node_modules/typescript')), false, 'no dev dependencies');
  const run = spawnSync(process.execPath, [path.join(dest, 'opt/cocos-manager/dist/cli.js'), 'qemu-args'], {
    encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH, MANAGER_QEMU_ENABLE_SEV_SNP: 'false' },
  });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(JSON.parse(run.stdout)[0], '-enable-kvm');
  // A second install keeps the operator's env file.
  fs.writeFileSync(path.join(dest, 'etc/cocos/cocos-manager.env'), 'MANAGER_MAX_VMS=3\n');
  assert.equal(spawnSync('make', ['-s', 'install-files', `DESTDIR=${dest}`], { cwd: ROOT, timeout: 300_000 }).status, 0);
  assert.equal(fs.readFileSync(path.join(dest, 'etc/cocos/cocos-manager.env'), 'utf8'), 'MANAGER_MAX_VMS=3\n');
});

// The install has no node_modules: the daemon is the bundle, with the .proto files that its
// dependencies find through their own directory (health, reflection) copied beside it.
test('the installed daemon serves health, reflection and ManagerService, and exports traces, with no node_modules', async () => {
  const dest = tmpDir('cocos-install-');
  const r = spawnSync('make', ['-s', 'install-files', `DESTDIR=${dest}`], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const prefix = path.join(dest, 'opt/cocos-manager');
  assert.equal(fs.existsSync(path.join(prefix, 'node_modules')), false);
  // Tracing on: the OpenTelemetry SDK is a chunk of its own, loaded once the daemon serves.
  const rx = await otlpReceiver();
  const d = await Daemon.start(fakeQemuEnv(tmpDir('cocos-install-state-'), { COCOS_JAEGER_URL: rx.url, COCOS_JAEGER_TRACE_RATIO: '1' }), { cli: path.join(prefix, 'dist/cli.js'), cwd: prefix });
  try {
    const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(ROOT, 'node_modules', file), { keepCase: true, defaults: true, enums: String }));
    const health = new (load('grpc-health-check/proto/health/v1/health.proto').grpc.health.v1.Health)(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
    assert.equal((await call(health, 'Check', { service: 'manager.ManagerService' })).status, 'SERVING');
    health.close();
    const reflection = new (load('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto').grpc.reflection.v1.ServerReflection)(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
    const answer = await new Promise((resolve, reject) => {
      const stream = reflection.ServerReflectionInfo({ deadline: Date.now() + 5_000 });
      stream.once('data', (res) => { stream.end(); resolve(res); });
      stream.on('error', reject);
      stream.write({ file_containing_symbol: 'grpc.health.v1.Health' });
    });
    reflection.close();
    assert.ok(answer.file_descriptor_response.file_descriptor_proto.some((b) => Buffer.from(b).includes('HealthCheckRequest')));
    await d.waitForLog((l) => l.msg === 'tracing started');
    const client = d.client();
    assert.equal((await call(client, 'CVMInfo', { id: 'x' })).id, 'x');
    client.close();
    assert.ok(await waitFor(() => rx.spans.some((s) => s.name === 'manager.ManagerService/CVMInfo'), 10_000), `span exported: ${JSON.stringify(rx.requests)}`);
    const body = await (await fetch(`http://127.0.0.1:${d.httpPort}/health`)).json();
    assert.equal(body.version, JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version, 'dist/build-info.json read');
  } finally {
    await d.stop();
    await rx.close();
  }
});
