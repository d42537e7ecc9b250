/**
 * Which VM a local connection comes from, as far as the manager can say: the QEMUs it
 * supervises (their PIDs, for the peer check's descriptor scan) and the VM users' uids.
 */
import type { UidPool } from './uid-pool.js';
import type { VmRegistry } from './vm-registry.js';

/** A supervised QEMU's PID and its VM; `searchBelow`: QEMU below it (sudo) is not read yet. */
export type SupervisedPid = [pid: number, vmId: string, searchBelow: boolean];

/**
 * The PIDs of the QEMUs this manager supervises (QEMU under sudo: sudo's and QEMU's), with their
 * VM's id. Before recovery has checked them, the PIDs the records name, and what runs below them:
 * a guest of a VM being re-adopted is refused like any other (a PID reused by another process
 * since is taken for a guest's too: its connections opened meanwhile stay refused).
 * `withoutOwnUid`: only QEMUs without a uid of their own (started before guest isolation); with
 * one, a VM's guest is named by its socket's uid and no descriptor needs reading.
 */
export function supervisedPids(registry: VmRegistry, withoutOwnUid = false): SupervisedPid[] {
  const out: SupervisedPid[] = [];
  for (const [id, e] of registry.undecided()) if (!withoutOwnUid || e.uid === null) for (const pid of e.pids) out.push([pid, id, true]);
  for (const vm of registry.all()) {
    const pid = vm.pid;
    if (!vm.holdsResources || pid === undefined || (withoutOwnUid && vm.uid !== undefined)) continue;
    const below = vm.qemuPids;
    out.push([pid, vm.id, below === undefined]);
    for (const p of below ?? []) out.push([p, vm.id, false]);
  }
  return out;
}

/** The VM whose QEMU runs as `uid` (also before recovery has decided it), and whether `uid` is a VM user's at all. */
export function vmOfUid(registry: VmRegistry, uids: UidPool | undefined, uid: number): { vmUser: boolean; vmId?: string } {
  let vmId: string | undefined;
  for (const vm of registry.all()) if (vm.uid === uid) vmId = vm.id;
  if (vmId === undefined) for (const [id, e] of registry.undecided()) if (e.uid === uid) vmId = id;
  return { vmUser: vmId !== undefined || (uids?.includes(uid) ?? false), vmId };
}
