#!/usr/bin/env node
// `make demo`: starts the daemon with the development profile, creates a CVM through the gRPC
// API, waits for its agent on the forwarded port, prints the agent's report and the boot time,
// removes the VM and stops the daemon. Every wait is bounded.
// `make demo DISK=1` (--disk): the VM boots from a disk of its own, an overlay of
// build/guest/disk.qcow2 (`make guest-disk`); the demo shows the disk as `vm info` does, and
// that it is gone with the VM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const port = Number(process.env.MANAGER_GRPC_PORT ?? 7001);
const say = (s) => process.stdout.write(`demo: ${s}\n`);
const withDisk = process.argv.includes('--disk');
const diskEnv = withDisk ? { MANAGER_QEMU_ENABLE_DISK: 'true', MANAGER_QEMU_SRC_DISK_FILE: path.join(root, 'build', 'guest', 'disk.qcow2') } : {};

const daemon = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), 'serve'], {
  env: { ...process.env, ...diskEnv, MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_LOG_LEVEL: process.env.DEMO_LOG_LEVEL ?? 'error' },
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

const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');
const sourceHash = withDisk ? sha384(diskEnv.MANAGER_QEMU_SRC_DISK_FILE) : undefined;
let disk;

/** The VM's disk as GetVm (the admin socket) gives it, with what the file system says of it. */
async function diskInfo(id) {
  const admin = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(root, 'proto', 'manager-admin.proto'), { keepCase: true, longs: String, defaults: true })).manager;
  const c = new admin.ManagerAdmin(`unix:${process.env.MANAGER_ADMIN_SOCKET}`, grpc.credentials.createInsecure());
  const status = await new Promise((resolve, reject) => c.GetVm({ id }, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r))));
  c.close();
  disk = status.disk;
  const st = fs.statSync(disk.file);
  return [
    `  disk               ${disk.file} (${disk.kind}, ${disk.format}, ${Number(disk.virtual_size) / 2 ** 30} GiB virtual, ${st.size} bytes on disk)`,
    `  owner, mode        uid ${st.uid}, ${(st.mode & 0o777).toString(8).padStart(4, '0')}`,
    `  disk source        ${disk.source}`,
    `  disk source sha384 ${disk.source_sha384}`,
  ].join('\n');
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
  if (withDisk) {
    say("aa_kbs_params was given, but a disk boot has no way to pass it (the daemon logs a warning naming the field): the cmdline above is the disk's own");
    say(`its disk, as \`cocos-manager vm info\` shows it:\n${await diskInfo(vm.cvm_id)}`);
  }
} catch (err) {
  say(`failed: ${err.details ?? err.message}`);
  process.exitCode = 1;
} finally {
  if (vm) {
    await rpc('RemoveVm', { cvm_id: vm.cvm_id }).then(() => say('VM removed'), (e) => say(`RemoveVm failed: ${e.details}`));
    if (disk) say(`its disk ${fs.existsSync(disk.file) ? 'is still there: unexpected' : 'went with it'}; the source is ${sourceHash === sha384(disk.source) ? 'unchanged' : 'CHANGED'}`);
  }
  client.close();
  await stopDaemon();
  say('daemon stopped');
}
