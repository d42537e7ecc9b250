/**
 * `cocos-manager firewall install|remove|status`: the guest firewall by hand. Under
 * MANAGER_QEMU_USE_SUDO the daemon is not root and cannot install it: the unit's privileged
 * step (`ExecStartPre=+/usr/local/bin/cocos-manager firewall install`) does, for the uid of
 * MANAGER_QEMU_SUDO_USER, from the same environment file. With a root daemon it is the
 * daemon's own business; these commands are for operators (status) and that step.
 */
import type { Config } from '../config/types.js';
import { FirewallError, GuestFirewall, QUIET_LOG } from '../host/guest-firewall.js';
import { resolveQemuUser } from '../host/qemu-user.js';
import { StartupError } from '../util/startup-error.js';

export const FIREWALL_HELP = `Usage: cocos-manager firewall install | remove | status

The nftables table that refuses guests' connections to this host (SECURITY.md), for the
daemon of MANAGER_STATE_DIR: the uids of MANAGER_VM_UID_RANGE, or under MANAGER_QEMU_USE_SUDO
the uid of MANAGER_QEMU_SUDO_USER. install replaces it atomically; remove deletes it; status
prints it (exit 1 when it is not in place). Needs root (CAP_NET_ADMIN).
`;

async function firewallFor(config: Config): Promise<GuestFirewall> {
  const uids = config.qemu.useSudo ? (({ uid }) => ({ first: uid, last: uid }))(await resolveQemuUser(config.qemu.sudoUser)) : config.isolation.uidRange;
  return new GuestFirewall(config.stateDir, { uids, allow: config.isolation.allowLocal }, QUIET_LOG);
}

export async function firewallCommand(config: Config, action: string): Promise<{ text: string; ok: boolean }> {
  if (!config.isolation.enabled) throw new StartupError('MANAGER_GUEST_ISOLATION=false: there is no guest firewall to manage');
  const fw = await firewallFor(config);
  try {
    switch (action) {
      case 'install':
        await fw.install();
        fw.stopWatching();
        return { text: `installed nftables table inet ${fw.table}`, ok: true };
      case 'remove':
        await fw.removeIf(() => true);
        return { text: `removed nftables table inet ${fw.table}`, ok: true };
      case 'status': {
        const listing = await fw.listing();
        return listing === undefined ? { text: `nftables table inet ${fw.table} is not in place`, ok: false } : { text: listing.trimEnd(), ok: true };
      }
      default:
        throw new StartupError(`unknown firewall action "${action}": install, remove or status`);
    }
  } catch (err) {
    if (err instanceof FirewallError) throw new StartupError(`nftables table inet ${fw.table}: ${err.message}`);
    throw err;
  }
}
