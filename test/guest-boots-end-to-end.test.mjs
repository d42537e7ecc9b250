// The whole chain, real: CreateVm → QEMU (TCG) → OVMF → Linux → 9P shares → agent on guest
// port 7002 → host port forwarded → RemoveVm. The guest is built by `make guest` (build/guest/).
// On each QEMU of qemu-versions.mjs (Debian 12's 7.2 and 11.1 from trixie-backports).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, isAlive, portIsFree, tcgEnv, tmpDir, waitFor } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL, consoleTail, waitForAgentReport } from './guest.mjs';
import { makePki } from './pki.mjs';
import { QEMUS } from './qemu-versions.mjs';

const BOOT_TIMEOUT_MS = 120_000;
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

for (const qemu of QEMUS) describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  let daemon;
  let client;
  let state;
  let pki;

  before(async () => {
    assert.ok(fs.existsSync(GUEST_KERNEL) && fs.existsSync(GUEST_INITRD), 'run `make guest` first (make test does)');
    pki = makePki(tmpDir('cocos-e2e-pki-'));
    state = tmpDir('cocos-e2e-');
    // The development profile's changes for a host without KVM or SEV-SNP, and a smaller VM so
    // two boot quickly on a 2-core machine.
    daemon = await Daemon.start(tcgEnv(state, {
      ...qemu.env,
      MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
      MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    }));
    client = daemon.client();
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  async function bootAndReport(req) {
    const vm = await call(client, 'CreateVm', req, 60_000);
    try {
      const report = await waitForAgentReport(Number(vm.forwarded_port), BOOT_TIMEOUT_MS);
      return { vm, report };
    } catch (err) {
      err.message += `\n--- serial console of ${vm.cvm_id} ---\n${consoleTail(state, vm.cvm_id)}`;
      throw err;
    }
  }

  test('a CVM boots, mounts both shares and its agent reports exactly what the manager sent', async () => {
    const cert = pki.read('client.pem');
    const key = pki.read('client.key');
    const ca = pki.read('ca.pem');
    const t0 = Date.now();
    const { vm, report } = await bootAndReport({
      agent_log_level: 'debug',
      agent_cvm_server_url: 'prism.example:7001',
      agent_cvm_ca_url: 'https://certs.example',
      agent_certs_token: 'token-e2e',
      agent_cvm_client_cert: cert,
      agent_cvm_client_key: key,
      agent_cvm_server_ca_cert: ca,
      aws_access_key_id: 'AKIAE2E',
      aws_secret_access_key: 'secret-e2e',
      aws_endpoint_url: 'https://s3.example',
      aws_region: 'eu-central-1',
      aa_kbs_params: 'cc_kbc::http://10.0.2.2:8080',
    });
    const bootMs = Date.now() - t0;
    process.stderr.write(`# guest boot to agent report on ${qemu.name}: ${bootMs} ms\n`);
    assert.deepEqual(report.environment, [
      'AGENT_LOG_LEVEL=debug',
      'AGENT_CVM_GRPC_URL=prism.example:7001',
      `AGENT_CVM_ID=${vm.cvm_id}`,
      'AGENT_CERTS_TOKEN=token-e2e',
      'AGENT_CVM_CA_URL=https://certs.example',
      'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem',
      'AGENT_CVM_GRPC_CLIENT_KEY=/etc/certs/key.pem',
      'AGENT_CVM_GRPC_SERVER_CA_CERTS=/etc/certs/ca.pem',
      'AWS_ACCESS_KEY_ID=AKIAE2E',
      'AWS_SECRET_ACCESS_KEY=secret-e2e',
      'AWS_ENDPOINT_URL=https://s3.example',
      'AWS_REGION=eu-central-1',
    ]);
    assert.deepEqual(report.certs, {
      'ca.pem': { size: ca.length, sha256: sha256(ca) },
      'cert.pem': { size: cert.length, sha256: sha256(cert) },
      'key.pem': { size: key.length, sha256: sha256(key) },
    });
    assert.match(report.cmdline, /(^| )agent\.aa_kbc_params=cc_kbc::http:\/\/10\.0\.2\.2:8080( |$)/);
    assert.match(report.cmdline, /^quiet console=null /);

    const { pid } = JSON.parse(fs.readFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), 'utf8'));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
    assert.ok(await waitFor(() => !isAlive(pid), 5_000), 'QEMU gone');
    assert.ok(await portIsFree(Number(vm.forwarded_port)), 'port free');
    assert.equal(fs.existsSync(path.join(state, 'vms', vm.cvm_id)), false, 'directory gone');
  });

  test('two CVMs boot at once and each agent sees its own values only', async () => {
    const [a, b] = await Promise.all([
      bootAndReport({ agent_log_level: 'info', agent_cvm_server_url: 'a.example:1', agent_cvm_client_cert: Buffer.from('cert-of-a') }),
      bootAndReport({ agent_log_level: 'warn', agent_cvm_server_url: 'b.example:2', aa_kbs_params: 'only-b' }),
    ]);
    assert.notEqual(a.vm.forwarded_port, b.vm.forwarded_port);
    assert.deepEqual(a.report.environment, [
      'AGENT_LOG_LEVEL=info', 'AGENT_CVM_GRPC_URL=a.example:1', `AGENT_CVM_ID=${a.vm.cvm_id}`, 'AGENT_CERTS_TOKEN=', 'AGENT_CVM_CA_URL=',
      'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem',
    ]);
    assert.deepEqual(b.report.environment, [
      'AGENT_LOG_LEVEL=warn', 'AGENT_CVM_GRPC_URL=b.example:2', `AGENT_CVM_ID=${b.vm.cvm_id}`, 'AGENT_CERTS_TOKEN=', 'AGENT_CVM_CA_URL=',
    ]);
    assert.deepEqual(Object.keys(a.report.certs), ['cert.pem']);
    assert.deepEqual(b.report.certs, {});
    assert.doesNotMatch(a.report.cmdline, /aa_kbc_params/);
    assert.match(b.report.cmdline, /agent\.aa_kbc_params=only-b/);
    await Promise.all([a, b].map(({ vm }) => call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000)));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
  });
});
