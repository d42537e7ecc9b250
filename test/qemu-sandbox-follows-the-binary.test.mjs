// QEMU's own seccomp sandbox with the stand-in QEMU: a binary that takes `-sandbox` (found by a
// trial start) gets it in every VM's argv and in the logged template; one without seccomp
// (FAKE_QEMU_NO_SECCOMP=1, failing as QEMU does) still runs VMs, without it, and the daemon's
// start log and `cocos-manager check` say why. A QEMU killed by its filter (SIGSYS) reads
// "killed by its seccomp sandbox (SIGSYS)" in GetVm and WatchVms.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCli } from './helpers.mjs';
import { Daemon, FAKE_QEMU, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';

const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
const NO_SECCOMP = /-sandbox on,obsolete=deny,\S*: -sandbox support is not enabled in this QEMU binary/;

/** The argv each stand-in QEMU of this daemon was started with (FAKE_QEMU_RECORD_DIR). */
const argvs = (records) => fs.readdirSync(records).map((f) => JSON.parse(fs.readFileSync(path.join(records, f), 'utf8')).argv);

for (const seccomp of [true, false]) describe(seccomp ? 'a QEMU with seccomp' : 'a QEMU built without seccomp', () => {
  let daemon;
  let client;
  let admin;
  let records;
  let modeFile;
  const extra = seccomp ? {} : { FAKE_QEMU_NO_SECCOMP: '1' };
  before(async () => {
    const state = tmpDir('cocos-sandbox-');
    // Writable by the VMs' users: the stand-in writes its argv there as its VM's uid.
    records = tmpDir('cocos-sandbox-rec-');
    modeFile = path.join(state, 'mode');
    fs.writeFileSync(modeFile, 'normal');
    daemon = await Daemon.start(fakeQemuEnv(state, { FAKE_QEMU_RECORD_DIR: records, FAKE_QEMU_MODE_FILE: modeFile, ...extra }));
    client = daemon.client();
    admin = daemon.adminClient();
  });
  after(async () => {
    client?.close();
    admin?.close();
    await daemon?.stop();
  });

  test(seccomp ? 'every VM runs under -sandbox, as the logged template says' : 'VMs still run, without -sandbox; the start log says why, once', async () => {
    const version = await daemon.waitForLog((l) => l.msg === 'QEMU version read', 15_000);
    assert.equal(version.sandbox, seccomp);
    const template = await daemon.waitForLog((l) => l.msg === 'QEMU template command line', 5_000);
    assert.equal(template.command.endsWith(` -sandbox ${SANDBOX}`), seccomp, template.command);
    await call(client, 'CreateVm', {});
    await call(client, 'CreateVm', {});
    const started = argvs(records);
    assert.equal(started.length, 2);
    for (const argv of started) {
      if (seccomp) assert.deepEqual(argv.slice(-2), ['-sandbox', SANDBOX]);
      else assert.ok(!argv.includes('-sandbox'), argv.join(' '));
    }
    const warnings = daemon.logs.lines.filter((l) => /seccomp sandbox/.test(l.msg ?? ''));
    if (seccomp) assert.deepEqual(warnings, []);
    else {
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.equal(warnings[0].level, 'warn');
      assert.match(warnings[0].msg, /^VMs run without QEMU's seccomp sandbox \(-sandbox\): exit code 1: qemu-system-x86_64: /);
      assert.match(warnings[0].msg, NO_SECCOMP);
      assert.equal(warnings[0].bin, FAKE_QEMU);
    }
  });

  test(`check ${seccomp ? 'passes' : 'warns about'} the sandbox, naming the binary${seccomp ? '' : ' and the reason'}`, () => {
    const r = runCli(['check'], { MANAGER_QEMU_BIN_PATH: FAKE_QEMU, MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_KVM: 'false', MANAGER_QEMU_HOST_FWD_RANGE: '47110-47111', ...extra }, { timeout: 60_000 });
    const row = r.stdout.split('\n').find((l) => /^\w+\s+qemu sandbox\s/.test(l));
    assert.ok(row, r.stdout + r.stderr);
    if (seccomp) assert.match(row, new RegExp(`^PASS\\s+qemu sandbox\\s+-sandbox ${SANDBOX}$`));
    else {
      assert.match(row, /^WARN\s+qemu sandbox\s+/);
      assert.ok(row.includes(`${FAKE_QEMU} does not take -sandbox, VMs run without it: exit code 1: `), row);
      assert.match(row, NO_SECCOMP);
    }
  });

  if (seccomp) test('a QEMU killed by its seccomp filter: GetVm and WatchVms say so', async () => {
    const trigger = path.join(tmpDir('cocos-sandbox-trip-'), 'trip');
    fs.writeFileSync(modeFile, `seccomp-kill-when:${trigger}`);
    const vm = await call(client, 'CreateVm', {});
    const events = [];
    const stream = admin.WatchVms({});
    stream.on('data', (e) => events.push(e));
    stream.on('error', () => {});
    try {
      assert.ok(await waitFor(() => events.some((e) => e.id === vm.cvm_id && e.reason === 'current'), 5_000));
      fs.writeFileSync(trigger, '');
      const gone = (e) => e.id === vm.cvm_id && ['crashed', 'stopped'].includes(e.to);
      assert.ok(await waitFor(() => events.some(gone), 10_000), JSON.stringify(events.map((e) => [e.to, e.reason])));
      const ev = events.find(gone);
      assert.equal(ev.to, 'crashed');
      assert.equal(ev.reason, 'QEMU exited: killed by its seccomp sandbox (SIGSYS)');
      const v = await call(admin, 'GetVm', { id: vm.cvm_id });
      assert.equal(v.state, 'crashed');
      assert.equal(v.exit_signal, 'SIGSYS');
      assert.equal(v.exit_cause, 'killed by its seccomp sandbox (SIGSYS)');
      const line = await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && /QEMU exited on its own/.test(l.msg ?? ''), 5_000);
      assert.match(line.msg, /killed by its seccomp sandbox \(SIGSYS\)/);
    } finally {
      stream.cancel();
    }
  });
});
