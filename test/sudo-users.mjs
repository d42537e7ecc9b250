// The MANAGER_QEMU_USE_SUDO setup the documentation prescribes, made for a test (as root): a
// system user for the daemon, a system user (with a group of its own) for QEMU, the daemon's
// user a member of that group, and a sudoers rule that lets the daemon's user run the QEMU binary
// as the QEMU user only. Removed again by cleanUpSudo(). Each test file its own pair (`tag`), so
// that files run in parallel never remove each other's users.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export const QEMU = '/usr/bin/qemu-system-x86_64';

export const isRoot = process.getuid?.() === 0;
export const haveSudo = fs.existsSync('/usr/bin/sudo') && fs.existsSync('/usr/sbin/visudo');
export const skipReason = !isRoot ? 'needs root to create the system users and the sudoers rule' : !haveSudo ? 'sudo is not installed (make system-deps)' : false;

/** The users of one test file, and the rule the documentation gives operators, for them. */
export function sudoNames(tag) {
  const daemonUser = `cocos-sudo-${tag}`;
  const qemuUser = `cocos-qemu-${tag}`;
  return { daemonUser, qemuUser, sudoers: `/etc/sudoers.d/${daemonUser}`, rule: `${daemonUser} ALL=(${qemuUser}) NOPASSWD: ${QEMU}` };
}

function ids(user) {
  return {
    uid: Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim()),
  };
}

function ensureUser(user) {
  try {
    execFileSync('id', ['-u', user], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', user]);
  }
  return ids(user);
}

/** Creates (or reuses) both users and the rule; returns their names and ids. */
export function setUpSudo(tag) {
  const n = sudoNames(tag);
  const daemon = ensureUser(n.daemonUser);
  const qemu = ensureUser(n.qemuUser);
  // The daemon's user shares the VMs' files with QEMU's user through QEMU's group.
  execFileSync('gpasswd', ['-a', n.daemonUser, n.qemuUser], { stdio: 'ignore' });
  // A sudoers.d file name with a dot is ignored by sudo: the temporary one is checked, then renamed.
  const tmp = `${n.sudoers}.tmp`;
  fs.writeFileSync(tmp, `${n.rule}\n`, { mode: 0o440 });
  execFileSync('visudo', ['-cf', tmp], { stdio: 'ignore' });
  fs.renameSync(tmp, n.sudoers);
  return { ...n, daemon, qemu };
}

/** Removes the rule and both users (and their groups). Best effort: a test's end. */
export function cleanUpSudo(tag) {
  const n = sudoNames(tag);
  fs.rmSync(n.sudoers, { force: true });
  for (const user of [n.daemonUser, n.qemuUser]) {
    try {
      execFileSync('userdel', [user], { stdio: 'ignore' });
    } catch {
      /* gone already, or a process of it still runs */
    }
  }
}
