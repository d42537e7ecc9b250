// AttestationPolicy returns what a verifier needs for that VM: a CoRIM (checked here with a
// CBOR reader of the test's own, not the daemon's encoder), signed when a key is configured,
// or the JSON form with the same values.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { runCli } from './helpers.mjs';
import { decodeCbor } from './cbor-reader.mjs';
import { DIGEST, callsOf, makeIgvmmeasureStandIns } from './fixtures-igvmmeasure.mjs';
import { SEV_SNP_HOST, TDX_HOST } from './fake-host.mjs';

const HOST_DATA = Buffer.alloc(32, 0x5a);
const PCR0 = 'aa'.repeat(32);
const PCR7 = 'bb'.repeat(32);
const PCR0_384 = 'cc'.repeat(48);
let dir;
let dirOf;
let igvm;
let pcrFile;
let keyFile;
let pubKey;

before(() => {
  dir = tmpDir('cocos-att-');
  dirOf = makeIgvmmeasureStandIns(path.join(dir, 'bin'));
  igvm = path.join(dir, 'coconut-qemu.igvm');
  fs.writeFileSync(igvm, 'igvm');
  pcrFile = path.join(dir, 'pcrs.json');
  fs.writeFileSync(pcrFile, JSON.stringify({ pcr_values: { sha256: { 0: PCR0, 7: PCR7 }, sha384: { 0: PCR0_384 } } }));
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  keyFile = path.join(dir, 'signing.pem');
  fs.writeFileSync(keyFile, privateKey.export({ type: 'sec1', format: 'pem' }));
  pubKey = publicKey;
});

const snpEnv = (extra = {}) => fakeQemuEnv(tmpDir(), {
  MANAGER_QEMU_ENABLE_SEV_SNP: 'true',
  MANAGER_QEMU_ENABLE_HOST_DATA: 'true',
  MANAGER_QEMU_HOST_DATA: HOST_DATA.toString('base64'),
  MANAGER_QEMU_IGVM_FILE: igvm,
  MANAGER_QEMU_CPU: 'EPYC-Genoa',
  MANAGER_SNP_MIN_LAUNCH_TCB: '0xdb18000000000004',
  MANAGER_ATTESTATION_POLICY_BINARY_PATH: dirOf('good'),
  MANAGER_PCR_VALUES: pcrFile,
  ...extra,
});

/** The policy of a VM created by a daemon with `env` on a fake SEV-SNP host (or `host`). */
async function policyOf(env, host = SEV_SNP_HOST) {
  const d = await Daemon.start(env, { host });
  const client = d.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    const res = await call(client, 'AttestationPolicy', { id: vm.cvm_id });
    assert.equal(res.id, vm.cvm_id);
    const again = await call(client, 'AttestationPolicy', { id: vm.cvm_id });
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    return { vm, info: res.info, again: again.info };
  } finally {
    client.close();
    await d.stop();
  }
}

/** The reference triple's measurements, keyed by mkey, from a decoded unsigned CoRIM. */
function measurementsOf(corimTagged, vmId) {
  assert.equal(corimTagged.tag, 501);
  const corim = corimTagged.value;
  assert.deepEqual(corim.get(0), Buffer.from(vmId.replaceAll('-', ''), 'hex'));
  const tags = corim.get(1);
  assert.equal(tags.length, 1);
  assert.equal(tags[0].tag, 506);
  assert.ok(Buffer.isBuffer(tags[0].value), 'CoMID inside a byte string');
  const comid = decodeCbor(tags[0].value);
  const triples = comid.get(4).get(0);
  assert.equal(triples.length, 1);
  const [env, measurements] = triples[0];
  return { env: env.get(0), byKey: new Map(measurements.map((m) => [m.get(0), m.get(1)])) };
}

function checkSnpValues(byKey, env) {
  assert.equal(env.get(1), 'AMD');
  assert.equal(env.get(2), 'SEV-SNP Genoa');
  assert.deepEqual(byKey.get('launch-measurement').get(2), [[7, Buffer.from(DIGEST, 'hex')]]);
  assert.deepEqual(byKey.get('host-data').get(4), { tag: 560, value: HOST_DATA });
  assert.deepEqual(byKey.get('guest-policy').get(4), { tag: 560, value: Buffer.from('0000000000030000', 'hex') });
  assert.deepEqual(byKey.get('vmpl').get(4), { tag: 560, value: Buffer.from([2]) });
  assert.deepEqual(byKey.get('minimum-launch-tcb').get(1), { tag: 553, value: 0xdb18000000000004n });
  const regs = byKey.get('vtpm-pcrs').get(14);
  assert.deepEqual([...regs.keys()], [0, 7]);
  assert.deepEqual(regs.get(0), [[1, Buffer.from(PCR0, 'hex')], [7, Buffer.from(PCR0_384, 'hex')]]);
  assert.deepEqual(regs.get(7), [[1, Buffer.from(PCR7, 'hex')]]);
}

test('SEV-SNP: an unsigned CoRIM with measurement, host data, policy, VMPL, TCB, product and PCRs', async () => {
  const calls = callsOf(dirOf('good')).length;
  const { vm, info, again } = await policyOf(snpEnv());
  const { env, byKey } = measurementsOf(decodeCbor(info), vm.cvm_id);
  checkSnpValues(byKey, env);
  assert.deepEqual(info, again);
  assert.equal(callsOf(dirOf('good')).length, calls + 1, 'igvmmeasure ran once for two calls');
});

test('SEV-SNP with MANAGER_CORIM_SIGNING_KEY: a COSE_Sign1 that verifies, and fails once a byte is flipped', async () => {
  const { vm, info } = await policyOf(snpEnv({ MANAGER_CORIM_SIGNING_KEY: keyFile }));
  const sign1 = decodeCbor(info);
  assert.equal(sign1.tag, 18);
  const [protectedBytes, unprotected, payload, signature] = sign1.value;
  const header = decodeCbor(protectedBytes);
  assert.equal(header.get(1), -7);
  assert.equal(header.get(3), 'application/rim+cbor');
  assert.ok(unprotected instanceof Map);
  assert.equal(signature.length, 64);
  const tbs = (p) => Buffer.concat([
    Buffer.from([0x84, 0x6a]), Buffer.from('Signature1'),
    Buffer.from([0x58, protectedBytes.length]), protectedBytes,
    Buffer.from([0x40]),
    p.length < 256 ? Buffer.from([0x58, p.length]) : Buffer.from([0x59, p.length >> 8, p.length & 0xff]), p,
  ]);
  assert.ok(verify('sha256', tbs(payload), { key: pubKey, dsaEncoding: 'ieee-p1363' }, signature));
  const flipped = Buffer.from(payload);
  flipped[flipped.length - 1] ^= 0x01;
  assert.equal(verify('sha256', tbs(flipped), { key: pubKey, dsaEncoding: 'ieee-p1363' }, signature), false);
  const { env, byKey } = measurementsOf(decodeCbor(payload), vm.cvm_id);
  checkSnpValues(byKey, env);

  // The operator's view: policy inspect verifies with the public half.
  const signedFile = path.join(dir, 'signed.cbor');
  fs.writeFileSync(signedFile, info);
  const pubFile = path.join(dir, 'signing.pub.pem');
  fs.writeFileSync(pubFile, pubKey.export({ type: 'spki', format: 'pem' }));
  const ok = runCli(['policy', 'inspect', signedFile, '--key', pubFile]);
  assert.equal(ok.status, 0, ok.stderr);
  const shown = JSON.parse(ok.stdout);
  assert.equal(shown.format, 'signed-corim');
  assert.equal(shown.signature, 'verified');
  assert.ok(JSON.stringify(shown).includes(DIGEST));
  const tampered = Buffer.from(info);
  tampered[tampered.length - 70] ^= 0x01;
  fs.writeFileSync(signedFile, tampered);
  const bad = runCli(['policy', 'inspect', signedFile, '--key', pubFile]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /signature does not verify/);
});

test('MANAGER_ATTESTATION_POLICY_FORMAT=json carries the same values', async () => {
  const { info } = await policyOf(snpEnv({ MANAGER_ATTESTATION_POLICY_FORMAT: 'json' }));
  const doc = JSON.parse(info.toString('utf8'));
  assert.deepEqual(doc.policy, {
    measurement: Buffer.from(DIGEST, 'hex').toString('base64'),
    host_data: HOST_DATA.toString('base64'),
    policy: 0x30000,
    vmpl: 2,
    minimum_launch_tcb: doc.policy.minimum_launch_tcb,
    product: 'Genoa',
  });
  // 64-bit TCB written exactly (beyond 2^53), as a JSON number.
  assert.ok(info.toString('utf8').includes(`"minimum_launch_tcb": ${0xdb18000000000004n.toString()},`));
  assert.deepEqual(doc.root_of_trust, { product_line: 'Genoa', check_crl: true });
  assert.deepEqual(doc.pcr_values, { sha256: { 0: PCR0, 7: PCR7 }, sha384: { 0: PCR0_384 } });
});

test('TDX: MRTD, RTMR0..3 and MRSEAM from their settings, as sha-384 digests', async () => {
  const v = (b) => b.repeat(48);
  const { vm, info } = await policyOf(fakeQemuEnv(tmpDir(), {
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true',
    MANAGER_TDX_MRTD: v('01'), MANAGER_TDX_RTMR0: v('10'), MANAGER_TDX_RTMR1: v('11'), MANAGER_TDX_RTMR2: v('12'), MANAGER_TDX_RTMR3: v('13'),
    MANAGER_TDX_MRSEAM: v('5e'), MANAGER_TDX_XFAM: 'e718060000000000',
  }), TDX_HOST);
  const { env, byKey } = measurementsOf(decodeCbor(info), vm.cvm_id);
  assert.equal(env.get(1), 'Intel');
  for (const [k, b] of [['MRTD', '01'], ['RTMR0', '10'], ['RTMR1', '11'], ['RTMR2', '12'], ['RTMR3', '13'], ['MRSEAM', '5e']]) {
    assert.deepEqual(byKey.get(k).get(2), [[7, Buffer.from(v(b), 'hex')]], k);
  }
  assert.deepEqual(byKey.get('xfam').get(4), { tag: 560, value: Buffer.from('e718060000000000', 'hex') });
});

test('a plain (neither SEV-SNP nor TDX) VM: FAILED_PRECONDITION saying so', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir()));
  const client = d.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    await assert.rejects(call(client, 'AttestationPolicy', { id: vm.cvm_id }), (e) => e.code === 9 && /neither SEV-SNP nor TDX/.test(e.details));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('a failing igvmmeasure: FAILED_PRECONDITION carrying its stderr', async () => {
  const d = await Daemon.start(snpEnv({ MANAGER_ATTESTATION_POLICY_BINARY_PATH: dirOf('exit-1') }), { host: SEV_SNP_HOST });
  const client = d.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    await assert.rejects(call(client, 'AttestationPolicy', { id: vm.cvm_id }), (e) => e.code === 9 && /cannot parse IGVM file/.test(e.details));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

const badPcrs = [
  ['not JSON', '{', /not valid JSON/],
  ['index 24', JSON.stringify({ pcr_values: { sha256: { 24: PCR0 } } }), /sha256\["24"\]: PCR index must be 0\.\.23/],
  ['sha256 of 48 bytes', JSON.stringify({ sha256: { 3: PCR0_384 } }), /sha256\["3"\]: expected hex of 32 bytes/],
  ['sha384 not hex', JSON.stringify({ sha384: { 1: 'zz'.repeat(48) } }), /sha384\["1"\]: expected hex of 48 bytes/],
  ['unknown bank', JSON.stringify({ pcr_values: { sha1: {} } }), /unknown PCR bank "sha1"/],
];
for (const [name, content, why] of badPcrs) {
  test(`a PCR file with ${name} stops the start with exit 2 naming the file and entry`, () => {
    const f = path.join(dir, `bad-${name.replaceAll(' ', '-')}.json`);
    fs.writeFileSync(f, content);
    const r = runCli(['serve'], snpEnv({ MANAGER_PCR_VALUES: f }));
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(r.stderr.includes(`MANAGER_PCR_VALUES=${JSON.stringify(f)}`), r.stderr);
    assert.match(r.stderr, why);
  });
}

test('a signing key that is not EC P-256 stops the start with exit 2', () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const f = path.join(dir, 'p384.pem');
  fs.writeFileSync(f, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const r = runCli(['serve'], snpEnv({ MANAGER_CORIM_SIGNING_KEY: f }));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /MANAGER_CORIM_SIGNING_KEY=.* must be an EC P-256 key/);
});

test('a PCR file with sha256/sha384 at its top level is accepted too', async () => {
  const f = path.join(dir, 'flat.json');
  fs.writeFileSync(f, JSON.stringify({ sha256: { 4: PCR7 } }));
  const { vm, info } = await policyOf(snpEnv({ MANAGER_PCR_VALUES: f }));
  const { byKey } = measurementsOf(decodeCbor(info), vm.cvm_id);
  assert.deepEqual([...byKey.get('vtpm-pcrs').get(14).entries()], [[4, [[1, Buffer.from(PCR7, 'hex')]]]]);
});
