/**
 * MANAGER_QEMU_USE_SUDO's QEMU user (MANAGER_QEMU_SUDO_USER): sudo runs QEMU as this unprivileged
 * user, never as root. The daemon, not root, cannot chown a VM's files to it, so they are shared
 * through its group instead: the daemon's user is a member of the QEMU user's primary group, and
 * what QEMU must open (the VM's directory, its shares, its OVMF_VARS copy, its QMP socket) gets
 * that group and group permissions; nothing else of the daemon's does. Resolved once at start.
 */
import fs from 'node:fs/promises';
import { StartupError } from '../util/startup-error.js';

export interface QemuUser {
  name: string;
  uid: number;
  /** Its primary group: the one the VM's files are shared through. */
  gid: number;
}

const SETTING = 'MANAGER_QEMU_SUDO_USER';

/** The user by name or numeric id, from /etc/passwd (sudo's `-u` needs an account there too). */
export async function resolveQemuUser(spec: string): Promise<QemuUser> {
  let text = '';
  try {
    text = await fs.readFile('/etc/passwd', 'utf8');
  } catch {
    /* no user database: the user cannot be resolved */
  }
  const numeric = /^\d+$/.test(spec);
  for (const line of text.split('\n')) {
    const [name, , uid, gid] = line.split(':');
    if (name === undefined || uid === undefined || gid === undefined) continue;
    if (numeric ? uid === spec : name === spec) {
      const user = { name, uid: Number(uid), gid: Number(gid) };
      // The config refuses "root" and 0; another name for uid 0 would give QEMU root again.
      if (user.uid === 0) throw new StartupError(`invalid ${SETTING}=${JSON.stringify(spec)}: it is uid 0; QEMU must run as an unprivileged user`);
      if (user.gid === 0) throw new StartupError(`invalid ${SETTING}=${JSON.stringify(spec)}: its primary group is 0 (root); give it a group of its own`);
      return user;
    }
  }
  throw new StartupError(
    `invalid ${SETTING}=${JSON.stringify(spec)}: no such user in /etc/passwd (create it: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin ${numeric ? 'cocos-qemu' : spec})`,
  );
}

/**
 * What the daemon needs to share the VM's files with the QEMU user, checked before anything
 * starts: membership of its group (chown to a group needs it), and no other way in for that
 * group (the admin socket is 0660 to its group: QEMU's user there would drive the manager).
 */
export function checkSharing(user: QemuUser, adminSocketGid: number | undefined, adminSocket: string): void {
  const uid = process.getuid?.() ?? 0;
  const egid = process.getegid?.() ?? 0;
  if (uid !== 0 && egid !== user.gid && !(process.getgroups?.() ?? []).includes(user.gid)) {
    throw new StartupError(
      `${SETTING}=${user.name}: this daemon's user (uid ${uid}) is not a member of ${user.name}'s group (gid ${user.gid}), so it cannot give QEMU its VM files: usermod -aG ${user.gid} <daemon user>, then restart the daemon`,
    );
  }
  if (uid === user.uid) {
    throw new StartupError(`${SETTING}=${user.name}: the daemon runs as that user itself; QEMU's user must be another one`);
  }
  if (adminSocket !== '' && (adminSocketGid ?? egid) === user.gid) {
    throw new StartupError(
      `MANAGER_ADMIN_SOCKET_GROUP: the admin socket's group would be ${user.name}'s (gid ${user.gid}), so QEMU's user could drive the manager: set MANAGER_ADMIN_SOCKET_GROUP to an operators' group, or give the daemon's user a primary group of its own`,
    );
  }
}
