// The sudoers rule MANAGER_QEMU_USE_SUDO needs gives the daemon's user no root. QEMU with
// arguments of one's choosing runs commands (`migrate "exec:…"` on the monitor), loads code
// (`-plugin`) and opens files (`-chardev file,path=`): under a rule `(root)` each is root. With
// the documented rule `(<QEMU user>)`, as the daemon's user: sudo refuses root outright, and
// through the rule each of the three runs as the QEMU user. Each is shown against a control run
// as root, so the test fails if QEMU ran as root. Needs root to set up users and the rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { waitFor } from './daemon.mjs';
import { QEMU, cleanUpSudo, setUpSudo, skipReason } from './sudo-users.mjs';

const TAG = 'noroot';
const BARE = ['-machine', 'none', '-nodefaults', '-display', 'none'];

/** Runs `cmd args` as uid/gid (or as root), the monitor on stdin; bounded. */
function run(who, cmd, args, input = 'quit\n') {
  const r = spawnSync(cmd, args, { ...(who ?? {}), input, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.error, undefined, `${cmd} did not finish: ${r.error}`);
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/** A directory only root may enter, holding a file only root may read. */
function rootOnly(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-rootonly-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o700);
  return dir;
}

test('USE_SUDO\'s sudoers rule gives the daemon\'s user no root: root is refused; monitor exec, -plugin and -chardev file run as the QEMU user', {
  skip: skipReason,
  timeout: 180_000,
}, async (t) => {
  const { daemon, qemu, qemuUser } = setUpSudo(TAG);
  t.after(() => cleanUpSudo(TAG));
  const asDaemon = { uid: daemon.uid, gid: daemon.gid };
  const viaRule = (args) => ['-n', '-u', qemuUser, '--', QEMU, ...args];

  // 1. sudo refuses root, by name, by id and by default, and any other command.
  for (const args of [['-n', '-u', 'root', QEMU, '--version'], ['-n', '-u', '#0', QEMU, '--version'], ['-n', QEMU, '--version'], ['-n', '-u', qemuUser, '/bin/sh', '-c', 'id -u']]) {
    const r = run(asDaemon, 'sudo', args);
    assert.notEqual(r.status, 0, `sudo ${args.join(' ')} was allowed: ${r.out}`);
    assert.match(r.out, /a password is required|not allowed/, r.out);
  }
  // ...and allows the rule itself.
  assert.match(run(asDaemon, 'sudo', viaRule(['--version'])).out, /QEMU emulator version/);

  // 2. The monitor's migrate "exec:" runs a shell command: as the QEMU user, not root. The file
  // goes to a directory anyone may write to, so that root would have written it too.
  const open = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-exec-'));
  t.after(() => fs.rmSync(open, { recursive: true, force: true }));
  fs.chmodSync(open, 0o1777);
  const monitor = (file) => `migrate "exec:id -u > ${file}"\ninfo migrate\nquit\n`;
  // Control: the same as root writes 0 (the command did run, and the check below can fail).
  run(undefined, QEMU, [...BARE, '-monitor', 'stdio'], monitor(path.join(open, 'root')));
  const viaSudo = run(asDaemon, 'sudo', viaRule([...BARE, '-monitor', 'stdio']), monitor(path.join(open, 'sudo')));
  assert.equal(viaSudo.status, 0, viaSudo.out);
  // QEMU quits once migration has completed; the shell that wrote the file is its child.
  const written = (f) => fs.existsSync(f) && fs.readFileSync(f, 'utf8').trim() !== '';
  assert.ok(await waitFor(() => written(path.join(open, 'root')) && written(path.join(open, 'sudo')), 10_000), 'both exec commands wrote their files');
  assert.equal(fs.readFileSync(path.join(open, 'root'), 'utf8').trim(), '0');
  assert.equal(fs.readFileSync(path.join(open, 'sudo'), 'utf8').trim(), String(qemu.uid));

  // 3. -plugin loads a shared object: one only root may read (a QEMU module, which is no plugin)
  // is opened by root (then refused for a missing symbol), never by the QEMU user.
  const secret = rootOnly(t);
  const so = path.join(secret, 'plugin.so');
  const module = fs.readdirSync('/usr/lib/x86_64-linux-gnu/qemu').find((f) => f.endsWith('.so'));
  assert.ok(module, 'a QEMU module to stand in for a plugin');
  fs.copyFileSync(path.join('/usr/lib/x86_64-linux-gnu/qemu', module), so);
  fs.chmodSync(so, 0o600);
  const rootPlugin = run(undefined, QEMU, [...BARE, '-plugin', so, '-monitor', 'stdio']);
  assert.match(rootPlugin.out, /undefined symbol: qemu_plugin_install/, `root opened it: ${rootPlugin.out}`);
  const sudoPlugin = run(asDaemon, 'sudo', viaRule([...BARE, '-plugin', so, '-monitor', 'stdio']));
  assert.notEqual(sudoPlugin.status, 0);
  assert.match(sudoPlugin.out, /Could not load plugin .*Permission denied/, sudoPlugin.out);

  // 4. -chardev file,path= opens (creates) a file: not in root's directory.
  const target = path.join(secret, 'chardev-out');
  const sudoChardev = run(asDaemon, 'sudo', viaRule([...BARE, '-chardev', `file,id=c,path=${target}`, '-monitor', 'stdio']));
  assert.notEqual(sudoChardev.status, 0);
  assert.match(sudoChardev.out, /Could not open .*Permission denied/, sudoChardev.out);
  assert.equal(fs.existsSync(target), false);
  run(undefined, QEMU, [...BARE, '-chardev', `file,id=c,path=${target}`, '-monitor', 'stdio']);
  assert.equal(fs.existsSync(target), true, 'control: root creates it');
});

