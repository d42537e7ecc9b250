/**
 * ManagerAdmin's home: a Unix socket, mode 0660, optionally given to a group of operators. File
 * permissions are its authentication, and no guest can reach a Unix socket through QEMU's
 * user-mode network.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { StartupError } from '../../util/startup-error.js';
import { bindServer } from './server.js';

/** A group name (from /etc/group) or a numeric id. */
export async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = await fs.readFile('/etc/group', 'utf8');
  } catch {
    /* no group database: the name cannot be resolved */
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw new StartupError(`invalid MANAGER_ADMIN_SOCKET_GROUP=${JSON.stringify(group)}: no such group in /etc/group`);
}

/** Whether something answers on the socket (a daemon already running with this path). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** `gid` undefined: the daemon's own group. */
export async function bindAdminSocket(server: grpc.Server, socketPath: string, gid: number | undefined): Promise<void> {
  const fail = (what: string) => new StartupError(`cannot serve on MANAGER_ADMIN_SOCKET=${JSON.stringify(socketPath)}: ${what}`);
  // systemd's RuntimeDirectory= makes /run/cocos-manager; elsewhere (development) it is made here.
  // 0755: the socket's own mode decides who may connect.
  try {
    await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  } catch (err) {
    throw fail(`its directory cannot be created (${(err as NodeJS.ErrnoException).code})`);
  }
  try {
    const st = await fs.lstat(socketPath);
    if (!st.isSocket()) throw fail('the path exists and is not a socket');
    if (await answers(socketPath)) throw fail('another process serves on it (is the daemon already running?)');
    await fs.unlink(socketPath); // left by a daemon that did not stop cleanly
  } catch (err) {
    if (err instanceof StartupError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fail((err as NodeJS.ErrnoException).code ?? String(err));
  }
  try {
    await bindServer(server, `unix:${socketPath}`, grpc.ServerCredentials.createInsecure());
    await fs.chmod(socketPath, 0o660);
    if (gid !== undefined) await fs.chown(socketPath, -1, gid);
  } catch (err) {
    throw fail((err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
}

/** Removes the socket at stop, so the next start finds no stale file. */
export async function removeAdminSocket(socketPath: string): Promise<void> {
  await fs.unlink(socketPath).catch(() => undefined);
}
