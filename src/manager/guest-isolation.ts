/** What keeps guests off the host, as the manager uses it (SECURITY.md): absent when isolation is off. */
import type { GuestFirewall } from '../host/guest-firewall.js';
import type { UidPool } from './uid-pool.js';

export interface GuestIsolation {
  /** A uid (and gid) of its own for each VM's QEMU. */
  uids: UidPool;
  /** The device groups (/dev/kvm, /dev/sev) every VM's QEMU joins. */
  groups: number[];
  /** The connect-time firewall: in place before a QEMU starts, gone with the last VM. */
  firewall: Pick<GuestFirewall, 'ensure' | 'removeIf' | 'table'>;
}
