// The per-VM SEV-SNP and TDX argument vectors, built as the daemon builds them (its own
// configuration loader, VM directory with both 9P shares, buildQemuArgs), are accepted by
// QEMU 11.1 under TCG: the only failure is the missing hardware ("KVM required"), never an
// option QEMU rejects. The rest of each vector (devices, shares, firmware, kernel) is then run
// without the confidential-guest object and must reach QEMU's main loop, asked over QMP.
// The igvm-cfg elements are the one part no QEMU here can parse (Debian builds QEMU without
// IGVM): they are left out of the runs and checked against QEMU's documented syntax instead.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tmpDir } from './daemon.mjs';
import { GUEST_KERNEL } from './guest.mjs';
import { NEW_QEMU } from './qemu-versions.mjs';
import { FACTS } from './fake-host.mjs';
import { vmVector as perVmVector } from './vm-vector.mjs';

const RUN_TIMEOUT_MS = 60_000;

/** A request with every field that reaches the shares set. */
const REQUEST = {
  agent_log_level: 'debug', agent_cvm_server_ca_cert: Buffer.from('ca'), agent_cvm_client_key: Buffer.from('key'),
  agent_cvm_client_cert: Buffer.from('cert'), agent_cvm_server_url: 'prism.example:7001', agent_cvm_ca_url: 'https://ca.example',
  ttl: '', agent_certs_token: 't', aws_access_key_id: 'a', aws_secret_access_key: 's', aws_endpoint_url: 'https://s3.example',
  aws_region: 'r', aa_kbs_params: 'cc_kbc::http://10.0.2.2:8080',
};

/** The per-VM vector the daemon would launch on QEMU 11 for this configuration, with a real VM directory. */
// The vectors of an SEV-SNP host (SEV-SNP decided from it, as by default) and of a TDX host.
const vmVector = (env, stateDir) => perVmVector({ ...NEW_QEMU.env, ...env }, stateDir, REQUEST, { host: env.MANAGER_QEMU_ENABLE_TDX === 'true' ? FACTS.tdx : FACTS.sevSnp });

/** QEMU's `key=value,...` syntax, `,,` standing for a comma; the first bare word is `type`. */
function parseKeyval(text) {
  const out = {};
  const parts = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',' && text[i + 1] === ',') { cur += ','; i++; } else if (text[i] === ',') { parts.push(cur); cur = ''; } else cur += text[i];
  }
  parts.push(cur);
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    if (eq < 0 && i === 0) out.type = p;
    else out[p.slice(0, eq)] = p.slice(eq + 1);
  });
  return out;
}

/** Removes `-object <type>,...` pairs and the named `-machine` keys; drops a `-machine` left empty. */
function without(args, { objects = [], machineKeys = [] }) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1] ?? '';
    if (args[i] === '-object') {
      const type = next.startsWith('{') ? JSON.parse(next)['qom-type'] : parseKeyval(next).type;
      if (objects.includes(type)) { i++; continue; }
    }
    if (args[i] === '-machine') {
      const kept = next.split(',').filter((kv) => !machineKeys.includes(kv.split('=')[0])).join(',');
      i++;
      if (kept !== '') out.push('-machine', kept);
      continue;
    }
    out.push(args[i]);
  }
  return out;
}

/** Runs QEMU 11 to its exit, bounded; stderr split into lines. */
function runQemu(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(NEW_QEMU.bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`QEMU still running after ${RUN_TIMEOUT_MS} ms: ${stderr}`)); }, RUN_TIMEOUT_MS);
    p.once('error', (e) => { clearTimeout(timer); reject(e); });
    p.once('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, lines: stderr.split('\n').filter(Boolean) }); });
  });
}

/**
 * What QEMU may say besides its one error: the pty of `-monitor pty`, and TCG's warnings that it
 * cannot emulate some of the configured CPU model's features (-cpu EPYC; KVM would have them).
 */
const NOISE = [
  /^char device redirected to \/dev\/pts\/\d+ \(label compat_monitor0\)$/,
  /^qemu-system-x86_64: warning: TCG doesn't support requested feature: /,
];
const unexpected = (lines) => lines.filter((l) => !NOISE.some((re) => re.test(l)));

/** Starts QEMU with a QMP socket, and once QMP answers (machine and devices are up) quits it. */
async function reachesMainLoop(args, dir) {
  const sock = path.join(dir, 'qmp.sock');
  const p = spawn(NEW_QEMU.bin, [...args, '-S', '-qmp', `unix:${sock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => p.once('close', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  try {
    let status;
    while (Date.now() < deadline && status === undefined && p.exitCode === null) {
      status = await new Promise((resolve) => {
        const c = net.connect(sock);
        let buf = '';
        const replies = [];
        c.setTimeout(Math.max(1, deadline - Date.now()), () => c.destroy());
        c.on('data', (d) => {
          buf += d;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const msg = JSON.parse(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            if (msg.QMP) c.write('{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n');
            else if ('return' in msg || 'error' in msg) {
              replies.push(msg);
              if (replies.length === 2) { c.write('{"execute":"quit"}\n'); resolve(msg.return?.status ?? JSON.stringify(msg)); }
            }
          }
        });
        c.on('error', () => resolve(undefined));
        c.on('close', () => resolve(undefined));
      });
      // The socket is not there until QEMU has parsed its options: try again shortly.
      if (status === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    let timer;
    const exit = await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, Math.max(1, deadline - Date.now()), { code: 'timeout' }); })]);
    clearTimeout(timer);
    return { status, exit, lines: stderr.split('\n').filter(Boolean) };
  } finally {
    p.kill('SIGKILL');
  }
}

describe(`per-VM confidential vectors on ${NEW_QEMU.name}`, { skip: NEW_QEMU.skip || (!fs.existsSync(GUEST_KERNEL) && 'run `make guest` first (make test does)') }, () => {
  let dir;
  before(() => { dir = tmpDir('cocos-cvm-vectors-'); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('TDX: the whole vector fails only with "KVM required" for tdx-guest', async () => {
    const args = await vmVector({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true' }, path.join(dir, 'tdx'));
    assert.ok(args.includes('-fsdev') && args.some((a) => a.includes('"qom-type":"tdx-guest"')), args.join(' '));
    const r = await runQemu(args);
    assert.equal(r.code, 1, r.lines.join('\n'));
    assert.deepEqual(unexpected(r.lines), ['qemu-system-x86_64: cannot set up private guest memory for tdx-guest: KVM required']);
  });

  test('TDX: the vector without its tdx-guest object reaches the main loop (devices, shares, -bios, -nodefaults)', async () => {
    const args = without(await vmVector({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true' }, path.join(dir, 'tdx-rest')), {
      objects: ['tdx-guest'], machineKeys: ['confidential-guest-support'],
    });
    const r = await reachesMainLoop(args, path.join(dir, 'tdx-rest'));
    assert.equal(r.status, 'prelaunch', r.lines.join('\n'));
    assert.equal(r.exit.code, 0, r.lines.join('\n'));
    assert.deepEqual(unexpected(r.lines), []);
  });

  test('SEV-SNP without igvm-cfg: the vector fails only with "KVM required" for sev-snp-guest', async () => {
    const full = await vmVector({ MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: Buffer.alloc(32, 7).toString('base64') }, path.join(dir, 'snp'));
    const args = without(full, { objects: ['igvm-cfg'], machineKeys: ['igvm-cfg'] });
    assert.equal(args.length, full.length - 2, 'exactly the igvm-cfg object is left out');
    assert.ok(args.includes('-fsdev') && args.some((a) => a.startsWith('sev-snp-guest,') && a.includes(',host-data=')), args.join(' '));
    const r = await runQemu(args);
    assert.equal(r.code, 1, r.lines.join('\n'));
    assert.deepEqual(unexpected(r.lines), ['qemu-system-x86_64: cannot set up private guest memory for sev-snp-guest: KVM required']);
  });

  test('SEV-SNP: the vector without sev-snp-guest and igvm-cfg reaches the main loop (memfd backend, devices, shares)', async () => {
    const args = without(await vmVector({}, path.join(dir, 'snp-rest')), {
      objects: ['sev-snp-guest', 'igvm-cfg'], machineKeys: ['confidential-guest-support', 'igvm-cfg'],
    });
    const r = await reachesMainLoop(args, path.join(dir, 'snp-rest'));
    assert.equal(r.status, 'prelaunch', r.lines.join('\n'));
    assert.equal(r.exit.code, 0, r.lines.join('\n'));
    assert.deepEqual(unexpected(r.lines), []);
  });

  test('SEV-SNP with igvm-cfg: this QEMU, built without IGVM, rejects exactly that object', async () => {
    const r = await runQemu(await vmVector({}, path.join(dir, 'snp-igvm')));
    assert.equal(r.code, 1);
    assert.deepEqual(unexpected(r.lines), [
      `qemu-system-x86_64: -object igvm-cfg,id=igvm0,file=/root/coconut-qemu.igvm: Parameter 'qom-type' does not accept value 'igvm-cfg'`,
    ]);
  });
});

// QEMU's documented syntax (qapi/qom.json, IgvmCfgProperties, since 10.1; docs/system/igvm.rst):
// `-object igvm-cfg,id=<id>,file=<path>` with `file` mandatory and no other property, referred to
// by the machine property `igvm-cfg=<id>`; the IGVM file carries the firmware, so no -bios or
// pflash drive may come with it. No QEMU on this machine can check this, so the test does.
test('the SEV-SNP vector\'s igvm-cfg elements follow QEMU\'s documented syntax', async () => {
  const dir = tmpDir('cocos-igvm-syntax-');
  try {
    const args = await vmVector({ MANAGER_QEMU_IGVM_FILE: '/fw/a,b.igvm', MANAGER_QEMU_IGVM_ID: 'igvm,0' }, dir);
    const objects = args.flatMap((a, i) => (args[i - 1] === '-object' && !a.startsWith('{') ? [parseKeyval(a)] : []));
    const igvm = objects.filter((o) => o.type === 'igvm-cfg');
    assert.equal(igvm.length, 1);
    assert.deepEqual(Object.keys(igvm[0]).sort(), ['file', 'id', 'type'], 'id and the mandatory file, nothing else');
    assert.equal(igvm[0].file, '/fw/a,b.igvm', 'a comma in the path survives QEMU\'s parsing');
    const machines = args.flatMap((a, i) => (args[i - 1] === '-machine' ? [parseKeyval(`type=${a}`)] : []));
    const refs = machines.filter((m) => 'igvm-cfg' in m).map((m) => m['igvm-cfg']);
    assert.deepEqual(refs, [igvm[0].id], 'the machine refers to the object by its id');
    assert.ok(!args.includes('-bios') && !args.some((a) => a.startsWith('if=pflash')), 'no other firmware beside the IGVM file');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
