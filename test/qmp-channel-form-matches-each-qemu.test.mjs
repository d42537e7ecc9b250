// The QMP channel of the per-VM argv is built from the binary's version, and each binary takes
// its form: QEMU greets on the daemon's socket, accepts qmp_capabilities, answers query-status
// and quit, with no warning on stderr (11.1 warns on -mon and rejects reconnect=).
// Real binaries: the host's qemu-system-x86_64 (Debian 12: 7.2) and QEMU 11 of the test bed
// (build/qemu-11, `make qemu-bed`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { tmpDir } from './daemon.mjs';
import { QEMUS } from './qemu-versions.mjs';

const { parseQemuVersion, qmpFormFor, qmpChannelArgs } = await import(path.join(ROOT, 'dist/qemu/qmp-args.js'));
const { QmpChannel } = await import(path.join(ROOT, 'dist/vm/qmp.js'));


test('the forms by version: reconnect= and -mon before 9.2, reconnect-ms= from 9.2, -object monitor-qmp from 11.1', () => {
  const argsFor = (text) => qmpChannelArgs(qmpFormFor(parseQemuVersion(text)), '/s,x/qmp.sock');
  assert.deepEqual(argsFor('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)'), ['-chardev', 'socket,id=qmp,path=/s,,x/qmp.sock,reconnect=1', '-mon', 'chardev=qmp,mode=control']);
  assert.deepEqual(argsFor('QEMU emulator version 9.2.0'), ['-chardev', 'socket,id=qmp,path=/s,,x/qmp.sock,reconnect-ms=1000', '-mon', 'chardev=qmp,mode=control']);
  assert.deepEqual(argsFor('QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)'), ['-chardev', 'socket,id=qmp,path=/s,,x/qmp.sock,reconnect-ms=1000', '-object', 'monitor-qmp,id=qmp-monitor,chardev=qmp']);
  assert.equal(parseQemuVersion('not qemu'), undefined);
});

for (const { name, bin, skip } of QEMUS) {
  test(`${name}: takes the form its version picks and talks QMP on the daemon's socket`, { skip, timeout: 60_000 }, async () => {
    const version = parseQemuVersion(execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 20_000 }));
    assert.ok(version, 'version parsed');
    const dir = tmpDir('cocos-qmp-');
    const qmp = new QmpChannel(path.join(dir, 'qmp.sock'));
    await qmp.listen();
    const args = ['-machine', 'none', '-nographic', '-nodefaults', '-monitor', 'none', ...qmpChannelArgs(qmpFormFor(version), qmp.socketPath)];
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    const events = [];
    qmp.onEvent((e) => events.push(e));
    try {
      await Promise.race([qmp.whenConnected(), exited.then((c) => { throw new Error(`QEMU exited (${c}): ${stderr}`); })]);
      assert.equal(qmp.greeting.qemu.major, version.major);
      const st = await qmp.queryStatus();
      assert.equal(st.status, 'running');
      // A QMP error comes back as a rejection (the channel's raw path, which the manager's typed
      // commands go through).
      await assert.rejects(qmp.execute('no-such-command'), /not been found|CommandNotFound/);
      await qmp.quit();
      assert.equal(await exited, 0);
      assert.ok(events.some((e) => e.event === 'SHUTDOWN' && e.data.reason === 'host-qmp-quit'), JSON.stringify(events));
      assert.doesNotMatch(stderr, /warning|deprecated|invalid/i);
    } finally {
      child.kill('SIGKILL');
      qmp.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
