// A VM's attestation policy describes the launch of that VM: the files its QEMU loaded are
// hashed at CreateVm (and the SEV-SNP launch digest taken from that IGVM content), kept in the
// VM's record, and the policy is built from there, never from what the files on the host hold
// later. A policy that would not identify the VM is refused; VMs from older records are
// measured once when re-adopted, and say so.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, tmpDir } from './daemon.mjs';
import { runCli } from './helpers.mjs';
import { decodeCbor } from './cbor-reader.mjs';
import { callsOf, contentDigest, makeIgvmmeasureStandIns } from './fixtures-igvmmeasure.mjs';
import { launchInputs } from '../dist/qemu/launch-inputs.js';
import { encodeUnsignedCorim } from '../dist/attestation/corim.js';
import { SEV_SNP_HOST, TDX_HOST } from './fake-host.mjs';

const sha384 = (data) => createHash('sha384').update(data).digest('hex');
const V1 = 'IGVM image, first build';
const V2 = 'IGVM image, second build: longer';
const V3 = 'IGVM image, third build';

let root;
let dirOf;
let kernel;
let initrd;
let firmware;

before(() => {
  root = tmpDir('cocos-pin-');
  dirOf = makeIgvmmeasureStandIns(path.join(root, 'bin'));
  kernel = path.join(root, 'bzImage');
  initrd = path.join(root, 'rootfs.cpio.gz');
  firmware = path.join(root, 'OVMF.fd');
  fs.writeFileSync(kernel, 'kernel bytes');
  fs.writeFileSync(initrd, Buffer.alloc(3 * 1024 * 1024 + 17, 7)); // several read chunks
  fs.writeFileSync(firmware, 'firmware bytes');
});

/** An operator's replacement: a new file renamed over the old name. */
function replace(file, content) {
  fs.writeFileSync(`${file}.new`, content);
  fs.renameSync(`${file}.new`, file);
}

const files = { MANAGER_QEMU_DISK_IMG_KERNEL_FILE: kernel, MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: initrd };

function snpEnv(state, igvm, extra = {}) {
  return fakeQemuEnv(state, {
    MANAGER_QEMU_ENABLE_SEV_SNP: 'true',
    MANAGER_QEMU_IGVM_FILE: igvm,
    MANAGER_ATTESTATION_POLICY_BINARY_PATH: dirOf('content'),
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: kernel,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: initrd,
    ...extra,
  });
}

/** Live processes whose command line names `dir`. */
function qemusOf(dir) {
  return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e) && isAlive(Number(e))).filter((e) => {
    try {
      return fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(dir);
    } catch {
      return false;
    }
  });
}

const readRecord = (state, id) => JSON.parse(fs.readFileSync(path.join(state, 'vms', id, 'record.json'), 'utf8'));

async function policy(client, id) {
  return (await call(client, 'AttestationPolicy', { id })).info;
}

/** The measurements of a CoRIM policy by mkey, and the CoMID's launch-inputs entry. */
function readCorim(info) {
  const corim = decodeCbor(info);
  assert.equal(corim.tag, 501);
  const comid = decodeCbor(corim.value.get(1)[0].value);
  const [[, measurements]] = comid.get(4).get(0);
  assert.ok(measurements.length > 0);
  return { byKey: new Map(measurements.map((m) => [m.get(0), m.get(1)])), launchInputs: comid.get('launch-inputs') };
}

const launchDigest = (info) => readCorim(info).byKey.get('launch-measurement').get(2)[0][1].toString('hex');

function inspect(info) {
  const f = path.join(root, `policy-${Math.random().toString(16).slice(2)}.bin`);
  fs.writeFileSync(f, info);
  const r = runCli(['policy', 'inspect', f]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('SEV-SNP: the IGVM file replaced after CreateVm leaves the running VM\'s policy as it was; a new VM gets the new measurement; igvmmeasure runs once per content', async () => {
  const state = tmpDir();
  const igvm = path.join(root, 'snp.igvm');
  fs.writeFileSync(igvm, V1);
  const calls = () => callsOf(dirOf('content')).length;
  const before = calls();
  const d = await Daemon.start(snpEnv(state, igvm), { host: SEV_SNP_HOST });
  const client = d.client();
  try {
    const a = await call(client, 'CreateVm', {});
    assert.equal(calls(), before + 1, 'measured at CreateVm');
    const first = await policy(client, a.cvm_id);
    assert.equal(launchDigest(first), contentDigest(V1));

    replace(igvm, V2);
    assert.deepEqual(await policy(client, a.cvm_id), first, 'the running VM keeps the policy of its launch');

    const b = await call(client, 'CreateVm', {});
    assert.equal(launchDigest(await policy(client, b.cvm_id)), contentDigest(V2));
    assert.equal(calls(), before + 2);

    // The first content again, written in place: known content, no new run of the tool.
    fs.writeFileSync(igvm, V1);
    const c = await call(client, 'CreateVm', {});
    assert.equal(launchDigest(await policy(client, c.cvm_id)), contentDigest(V1));
    assert.equal(calls(), before + 2, 'igvmmeasure ran once per distinct content');

    // The record holds what was pinned, and when.
    const pin = readRecord(state, a.cvm_id).pinned;
    assert.equal(pin.takenAt, 'create');
    assert.equal(pin.snpLaunchMeasurement, contentDigest(V1));
    assert.deepEqual(pin.files.map((f) => [f.role, f.path, f.sha384]), [
      ['igvm', igvm, sha384(V1)],
      ['kernel', kernel, sha384(fs.readFileSync(kernel))],
      ['initramfs', initrd, sha384(fs.readFileSync(initrd))],
    ]);

    // The policy says which files its values come from; policy inspect shows it.
    const { launchInputs: li } = readCorim(first);
    assert.equal(li.get('pinned'), 'create');
    assert.deepEqual(li.get('files')[0].get('digest'), [7, Buffer.from(sha384(V1), 'hex')]);
    const shown = inspect(first);
    assert.ok(shown.pins.asserts.includes('launch-measurement'));
    assert.match(shown.pins.pinned, /at CreateVm/);
    assert.deepEqual(shown.pins.fromFiles[0], { role: 'igvm', path: igvm, sha384: sha384(V1) });
    for (const v of [a, b, c]) await call(client, 'RemoveVm', { cvm_id: v.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('TDX and plain VMs: the SHA-384 of the firmware, kernel and initramfs QEMU was given are pinned', async () => {
  const expected = [
    ['firmware', firmware, sha384(fs.readFileSync(firmware))],
    ['kernel', kernel, sha384(fs.readFileSync(kernel))],
    ['initramfs', initrd, sha384(fs.readFileSync(initrd))],
  ];
  const tdxState = tmpDir();
  const tdx = await Daemon.start(fakeQemuEnv(tdxState, {
    ...files,
    MANAGER_QEMU_ENABLE_TDX: 'true',
    MANAGER_QEMU_OVMF_FILE: firmware,
    MANAGER_TDX_MRTD: '01'.repeat(48),
    MANAGER_ATTESTATION_POLICY_FORMAT: 'json',
  }), { host: TDX_HOST });
  let client = tdx.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    const pin = readRecord(tdxState, vm.cvm_id).pinned;
    assert.deepEqual(pin.files.map((f) => [f.role, f.path, f.sha384]), expected);
    assert.equal(pin.snpLaunchMeasurement, null);
    const doc = JSON.parse((await policy(client, vm.cvm_id)).toString('utf8'));
    // The JSON form has exactly the Go manager's keys: its verifier rejects unknown fields.
    assert.deepEqual(Object.keys(doc).sort(), ['policy', 'root_of_trust'].concat(doc.pcr_values ? ['pcr_values'] : []).sort());
    const shown = inspect(Buffer.from(JSON.stringify(doc)));
    assert.deepEqual(shown.pins.asserts, ['mr_td']);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await tdx.stop();
  }

  const plainState = tmpDir();
  const plain = await Daemon.start(fakeQemuEnv(plainState, { ...files, MANAGER_QEMU_OVMF_CODE_FILE: firmware }));
  client = plain.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    assert.deepEqual(readRecord(plainState, vm.cvm_id).pinned.files.map((f) => [f.role, f.path, f.sha384]), expected);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await plain.stop();
  }
});

test('a TDX policy that would not identify the TD is refused with FAILED_PRECONDITION naming the settings', async () => {
  for (const extra of [{}, { MANAGER_TDX_XFAM: 'e718060000000000', MANAGER_TDX_MRSEAM: '5e'.repeat(48), MANAGER_ATTESTATION_POLICY_FORMAT: 'json' }]) {
    const d = await Daemon.start(fakeQemuEnv(tmpDir(), { ...files, MANAGER_QEMU_ENABLE_TDX: 'true', ...extra }), { host: TDX_HOST });
    const client = d.client();
    try {
      const vm = await call(client, 'CreateVm', {});
      await assert.rejects(policy(client, vm.cvm_id), (e) => e.code === 9 && /MANAGER_TDX_MRTD/.test(e.details) && /MANAGER_TDX_RTMR0/.test(e.details));
      await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    } finally {
      client.close();
      await d.stop();
    }
  }
});

test('the CoRIM encoder never writes a reference triple with no measurements', () => {
  const empty = { kind: 'tdx', mrtd: undefined, rtmrs: [undefined, undefined, undefined, undefined], mrseam: undefined, tdAttributes: undefined, xfam: undefined, minTeeTcbSvn: undefined, pcrs: undefined };
  assert.throws(() => encodeUnsignedCorim('5f1b2d39-0c4e-4f7e-9a55-0d2b1c3e4f50', empty), /without measurements/);
});

test('SEV-SNP: an IGVM file the daemon cannot read does not stop CreateVm; the policy is refused naming it', async () => {
  const missing = path.join(root, 'no-such.igvm');
  const d = await Daemon.start(snpEnv(tmpDir(), missing), { host: SEV_SNP_HOST });
  const client = d.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    await assert.rejects(policy(client, vm.cvm_id), (e) => e.code === 9 && e.details.includes(missing) && /MANAGER_QEMU_IGVM_FILE/.test(e.details));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('a launch file replaced while QEMU starts: CreateVm fails with FAILED_PRECONDITION and leaves nothing behind', async () => {
  const state = tmpDir();
  const k = path.join(root, 'racy-bzImage');
  fs.writeFileSync(k, 'kernel v1');
  const gate = path.join(root, 'qemu-may-listen');
  const d = await Daemon.start(fakeQemuEnv(state, { ...files, MANAGER_QEMU_DISK_IMG_KERNEL_FILE: k, FAKE_QEMU_MODE: `listen-when:${gate}` }));
  const client = d.client();
  try {
    const creating = call(client, 'CreateVm', {});
    const started = await d.waitForLog((l) => l.msg === 'starting QEMU');
    replace(k, 'kernel v2');
    fs.writeFileSync(gate, '');
    await assert.rejects(creating, (e) => e.code === 9 && /kernel file .* changed while the VM was starting/.test(e.details) && e.details.includes('MANAGER_QEMU_DISK_IMG_KERNEL_FILE'));
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), [], 'rolled back');
    assert.deepEqual(qemusOf(path.join(state, 'vms', started.cvm_id)), [], 'its QEMU is gone');
    // Unchanged from here on: the next CreateVm pins the new kernel.
    const vm = await call(client, 'CreateVm', {});
    assert.equal(readRecord(state, vm.cvm_id).pinned.files.find((f) => f.role === 'kernel').sha384, sha384('kernel v2'));
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('a VM re-adopted from a record without pinned values is measured once, at adoption, and the log says the values were taken after launch', async () => {
  const state = tmpDir();
  const igvm = path.join(root, 'old.igvm');
  fs.writeFileSync(igvm, V1);
  const env = snpEnv(state, igvm);
  const first = await Daemon.start(env, { host: SEV_SNP_HOST });
  const [vm] = await first.createVms({});
  const second = await first.restart({
    whileDown: () => {
      // As written before pinning existed.
      const rec = readRecord(state, vm.cvm_id);
      delete rec.pinned;
      fs.writeFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), JSON.stringify(rec));
      replace(igvm, V3);
    },
  });
  let third;
  let client = second.client();
  try {
    const line = await second.waitForLog((l) => l.cvm_id === vm.cvm_id && /after the launch/.test(l.msg ?? ''));
    assert.equal(line.level, 'warn');
    const pin = readRecord(state, vm.cvm_id).pinned;
    assert.equal(pin.takenAt, 'adoption');
    assert.equal(pin.files[0].sha384, sha384(V3));
    const info = await policy(client, vm.cvm_id);
    assert.equal(launchDigest(info), contentDigest(V3));
    assert.match(inspect(info).pins.pinned, /after its launch/);
    client.close();

    // Once: a third start finds the values in the record.
    let calls;
    third = await second.restart({ signal: 'SIGTERM', whileDown: () => { calls = callsOf(dirOf('content')).length; } });
    client = third.client();
    await third.waitForLog((l) => l.cvm_id === vm.cvm_id && l.msg === 're-adopted a running VM');
    assert.equal(third.logs.lines.some((l) => /after the launch/.test(l.msg ?? '')), false);
    assert.equal(launchDigest(await policy(client, vm.cvm_id)), contentDigest(V3));
    assert.equal(callsOf(dirOf('content')).length, calls, 'not measured again');
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await (third ?? second).stop();
  }
});

test('the launch files are read from the QEMU command line itself, commas and all', () => {
  assert.deepEqual(
    launchInputs([
      'qemu-system-x86_64',
      '-drive', 'if=pflash,format=raw,unit=0,file=/fw/OVMF,,CODE.fd,readonly=on',
      '-drive', 'if=pflash,format=raw,unit=1,file=/state/vms/x/OVMF_VARS.fd',
      '-object', 'igvm-cfg,id=igvm0,file=/img/a,,b.igvm',
      '-bios', '/fw/OVMF.fd',
      '-kernel', '/img/bzImage',
      '-append', '-kernel not-a-file',
      '-initrd', '/img/rootfs.cpio.gz',
    ]),
    [
      { role: 'firmware', path: '/fw/OVMF,CODE.fd' },
      { role: 'igvm', path: '/img/a,b.igvm' },
      { role: 'firmware', path: '/fw/OVMF.fd' },
      { role: 'kernel', path: '/img/bzImage' },
      { role: 'initramfs', path: '/img/rootfs.cpio.gz' },
    ],
  );
});
