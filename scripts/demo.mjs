#!/usr/bin/env node
// `make demo`: starts the daemon with the development profile, creates a CVM through the gRPC
// API, waits for its agent on the forwarded port, prints the agent's report and the boot time,
// removes the VM and stops the daemon. Every wait is bounded.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const port = Number(process.env.MANAGER_GRPC_PORT ?? 7001);
const say = (s) => process.stdout.write(`demo: ${s}\n`);

const daemon = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), 'serve'], {
  env: { ...process.env, MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_LOG_LEVEL: process.env.DEMO_LOG_LEVEL ?? 'error' },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const stopDaemon = () => new Promise((resolve) => {
  if (daemon.exitCode !== null) return resolve();
  daemon.once('exit', resolve);
  daemon.kill('SIGTERM');
});

const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(root, 'proto', 'manager.proto'), { keepCase: true, defaults: true })).manager;
const client = new pkg.ManagerService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const rpc = (method, req, ms = 60_000) => new Promise((resolve, reject) =>
  client[method](req, { deadline: Date.now() + ms }, (err, res) => (err ? reject(err) : resolve(res))));

function ask(p) {
  return new Promise((resolve) => {
    const s = net.connect({ port: p, host: '127.0.0.1' });
    let data = '';
    s.setTimeout(3_000, () => s.destroy());
    s.on('data', (d) => { data += d; });
    s.on('close', () => resolve(data));
    s.on('error', () => resolve(''));
  });
}

let vm;
try {
  await new Promise((resolve, reject) => client.waitForReady(Date.now() + 20_000, (e) => (e ? reject(e) : resolve())));
  say('daemon is up; creating a CVM (software emulation: expect 15-30 s)');
  const t0 = Date.now();
  vm = await rpc('CreateVm', {
    agent_log_level: 'debug',
    agent_cvm_server_url: 'prism.example:7001',
    agent_cvm_client_cert: Buffer.from('-----BEGIN CERTIFICATE-----\ndemo\n-----END CERTIFICATE-----\n'),
    agent_cvm_client_key: Buffer.from('-----BEGIN PRIVATE KEY-----\ndemo\n-----END PRIVATE KEY-----\n'),
    agent_cvm_server_ca_cert: Buffer.from('-----BEGIN CERTIFICATE-----\ndemo-ca\n-----END CERTIFICATE-----\n'),
    aws_access_key_id: 'AKIADEMO',
    aws_secret_access_key: 'demo-secret',
    aws_region: 'eu-west-1',
    aa_kbs_params: 'cc_kbc::http://10.0.2.2:8080',
    ttl: '10m',
  });
  say(`CreateVm answered in ${Date.now() - t0} ms: cvm_id=${vm.cvm_id}, agent forwarded to host port ${vm.forwarded_port}`);
  let report = '';
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline && !report.includes('== end')) {
    report = await ask(Number(vm.forwarded_port));
    if (!report.includes('== end')) await new Promise((r) => setTimeout(r, 500));
  }
  if (!report.includes('== end')) throw new Error('the agent did not answer within 180 s; see state/vms/<id>/console.log');
  say(`agent answered ${Date.now() - t0} ms after CreateVm was called; its report:\n\n${report}`);
} catch (err) {
  say(`failed: ${err.details ?? err.message}`);
  process.exitCode = 1;
} finally {
  if (vm) {
    await rpc('RemoveVm', { cvm_id: vm.cvm_id }).then(() => say('VM removed'), (e) => say(`RemoveVm failed: ${e.details}`));
  }
  client.close();
  await stopDaemon();
  say('daemon stopped');
}
