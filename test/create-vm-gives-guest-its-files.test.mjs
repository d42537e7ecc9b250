// CreateVm gives the guest exactly the env file and certificates of the spec, with safe modes,
// forwards a real port to the agent, and RemoveVm takes everything away again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, readAgent, tmpDir, waitFor } from './daemon.mjs';

let daemon;
let client;
let state;
let records;

before(async () => {
  state = tmpDir();
  records = tmpDir('cocos-rec-');
  daemon = await Daemon.start(fakeQemuEnv(state, { FAKE_QEMU_RECORD_DIR: records, MANAGER_EOS_VERSION: 'eos-1.2' }));
  client = daemon.client();
});
after(async () => {
  client?.close();
  await daemon?.stop();
});

const CERT = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n');
const KEY = Buffer.from('-----BEGIN PRIVATE KEY-----\nMIIBsecretkey\n-----END PRIVATE KEY-----\n');
const CA = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n');

test('the env file holds every line of the spec, in order, with the request values', async () => {
  const res = await call(client, 'CreateVm', {
    agent_log_level: 'debug',
    agent_cvm_server_url: 'computations.example:7001',
    agent_cvm_ca_url: 'https://ca.example',
    agent_certs_token: 'tok-123',
    agent_cvm_client_cert: CERT,
    agent_cvm_client_key: KEY,
    agent_cvm_server_ca_cert: CA,
    aws_access_key_id: 'AKIA1',
    aws_secret_access_key: 'SECRET/abc',
    aws_endpoint_url: 'https://s3.example',
    aws_region: 'eu-west-1',
  });
  assert.match(res.cvm_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const report = await readAgent(Number(res.forwarded_port));
  assert.equal(
    report.environment,
    [
      'AGENT_LOG_LEVEL=debug',
      'AGENT_CVM_GRPC_URL=computations.example:7001',
      `AGENT_CVM_ID=${res.cvm_id}`,
      'AGENT_CERTS_TOKEN=tok-123',
      'AGENT_CVM_CA_URL=https://ca.example',
      'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem',
      'AGENT_CVM_GRPC_CLIENT_KEY=/etc/certs/key.pem',
      'AGENT_CVM_GRPC_SERVER_CA_CERTS=/etc/certs/ca.pem',
      'AWS_ACCESS_KEY_ID=AKIA1',
      'AWS_SECRET_ACCESS_KEY=SECRET/abc',
      'AWS_ENDPOINT_URL=https://s3.example',
      'AWS_REGION=eu-west-1',
      '',
    ].join('\n'),
  );
  assert.deepEqual(report.certs, { 'ca.pem': CA.length, 'cert.pem': CERT.length, 'key.pem': KEY.length });

  const dir = path.join(state, 'vms', res.cvm_id);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'certs', 'key.pem')), KEY);
  const mode = (p) => fs.statSync(p).mode & 0o777;
  // A root daemon gives each VM a user of its own (guest isolation): the VM's directory and
  // shares are then root:<its gid>, readable by its QEMU and nobody else; otherwise the daemon's alone.
  const isolated = process.getuid() === 0;
  assert.equal(mode(path.join(state, 'vms')), isolated ? 0o711 : 0o700);
  assert.equal(mode(dir), isolated ? 0o710 : 0o700);
  assert.equal(mode(path.join(dir, 'env')), isolated ? 0o750 : 0o700);
  assert.equal(mode(path.join(dir, 'certs')), isolated ? 0o750 : 0o700);
  assert.equal(mode(path.join(dir, 'env', 'environment')), isolated ? 0o640 : 0o600);
  assert.equal(mode(path.join(dir, 'certs', 'key.pem')), isolated ? 0o640 : 0o600);
  assert.equal(mode(path.join(dir, 'OVMF_VARS.fd')), 0o600);
  if (isolated) {
    const gid = fs.statSync(dir).gid;
    assert.ok(gid >= 1_900_000_000, `the VM's gid, not root's: ${gid}`);
    for (const p of [path.join(dir, 'certs', 'key.pem'), path.join(dir, 'env', 'environment')]) assert.equal(`${fs.statSync(p).uid}:${fs.statSync(p).gid}`, `0:${gid}`, p);
  }
  assert.deepEqual(fs.readFileSync(path.join(dir, 'OVMF_VARS.fd')), fs.readFileSync('/usr/share/OVMF/OVMF_VARS.fd'));

  await call(client, 'RemoveVm', { cvm_id: res.cvm_id });
  assert.equal(fs.existsSync(dir), false, 'VM directory removed, secrets included');
});

test('optional lines are left out when their fields are empty; only given certs are written', async () => {
  const res = await call(client, 'CreateVm', { agent_log_level: 'info', agent_cvm_client_cert: CERT });
  const report = await readAgent(Number(res.forwarded_port));
  assert.equal(
    report.environment,
    `AGENT_LOG_LEVEL=info\nAGENT_CVM_GRPC_URL=\nAGENT_CVM_ID=${res.cvm_id}\nAGENT_CERTS_TOKEN=\nAGENT_CVM_CA_URL=\nAGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem\n`,
  );
  assert.deepEqual(report.certs, { 'cert.pem': CERT.length });
  await call(client, 'RemoveVm', { cvm_id: res.cvm_id });
});

test('aa_kbs_params reaches that VM kernel command line only, and CVMInfo reports it', async () => {
  const a = await call(client, 'CreateVm', { aa_kbs_params: 'cc_kbc::http://kbs.example:8080' });
  const b = await call(client, 'CreateVm', {});
  assert.equal((await readAgent(Number(a.forwarded_port))).cmdline, 'quiet console=null agent.aa_kbc_params=cc_kbc::http://kbs.example:8080');
  assert.equal((await readAgent(Number(b.forwarded_port))).cmdline, 'quiet console=null');
  assert.notEqual(a.forwarded_port, b.forwarded_port);
  const info = await call(client, 'CVMInfo', { id: a.cvm_id });
  assert.deepEqual(info, {
    id: a.cvm_id,
    ovmf_version: 'edk2-stable202408',
    cpu_num: 4,
    cpu_type: 'EPYC',
    kernel_cmd: 'quiet console=null agent.aa_kbc_params=cc_kbc::http://kbs.example:8080',
    eos_version: 'eos-1.2',
  });
  await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
  await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
});

test('CVMInfo of an unknown id answers the configured values, as the Go manager does', async () => {
  const info = await call(client, 'CVMInfo', { id: 'not-a-vm' });
  assert.equal(info.id, 'not-a-vm');
  assert.equal(info.kernel_cmd, 'quiet console=null');
  assert.equal(info.cpu_num, 4);
});

test('RemoveVm stops QEMU, frees the port and deletes the directory; unknown ids are NOT_FOUND', async () => {
  const res = await call(client, 'CreateVm', {});
  const port = Number(res.forwarded_port);
  const rec = JSON.parse(fs.readFileSync(path.join(state, 'vms', res.cvm_id, 'record.json'), 'utf8'));
  assert.equal(rec.state, 'running');
  assert.ok(isAlive(rec.pid));
  await call(client, 'RemoveVm', { cvm_id: res.cvm_id });
  assert.ok(await waitFor(() => !isAlive(rec.pid), 2_000), 'QEMU gone');
  assert.ok(await portIsFree(port), 'port free');
  assert.equal(fs.existsSync(path.join(state, 'vms', res.cvm_id)), false);
  await assert.rejects(call(client, 'RemoveVm', { cvm_id: res.cvm_id }), (e) => e.code === 5 && /no VM with cvm_id/.test(e.details));
  await assert.rejects(call(client, 'AttestationPolicy', { id: res.cvm_id }), (e) => e.code === 5);
});

test('the QEMU command line is logged once per VM with the cvm id, pasteable, and no secret', async () => {
  const res = await call(client, 'CreateVm', { agent_cvm_client_key: KEY, aws_secret_access_key: 'SUPERSECRET', agent_certs_token: 'TOKENVALUE' });
  const line = await daemon.waitForLog((l) => l.msg === 'starting QEMU' && l.cvm_id === res.cvm_id);
  assert.equal(line.level, 'info');
  assert.match(line.command, /fake-qemu\.mjs .*-netdev user,id=vmnic,hostfwd=tcp::\d+-:7002 /);
  assert.match(line.command, /-append 'quiet console=null'/);
  await call(client, 'RemoveVm', { cvm_id: res.cvm_id });
  const all = daemon.allLogText();
  for (const secret of ['MIIBsecretkey', 'SUPERSECRET', 'TOKENVALUE']) assert.equal(all.includes(secret), false, secret);
});
