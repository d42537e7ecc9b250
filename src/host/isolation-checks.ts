/**
 * `check`'s part on guest isolation (SECURITY.md): whether this host can give each VM a user of
 * its own and keep guests off the host with the firewall, for the configuration in force.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import { GuestFirewall, QUIET_LOG } from './guest-firewall.js';
import type { CheckResult } from './check-result.js';
import { deviceAccess, hostUidRangeConflicts, readableByVmUsers, untraversableAncestors } from './vm-users.js';

const pass = (check: string, detail: string): CheckResult => ({ check, status: 'pass', detail, remedy: '' });
const fail = (check: string, detail: string, remedy: string): CheckResult => ({ check, status: 'fail', detail, remedy });
const warn = (check: string, detail: string, remedy: string): CheckResult => ({ check, status: 'warn', detail, remedy });

/** Whether `bin` is an executable on PATH or in the sbin directories (root's tools). */
function onPath(bin: string): boolean {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    if (dir === '') continue;
    try {
      fs.accessSync(path.join(dir, bin), fs.constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}


/** The files every VM's QEMU opens itself (the daemon copies the OVMF variables template). */
function launchFiles(config: Config): [string, string][] {
  const q = config.qemu;
  const files: [string, string][] = [];
  if (q.enableSevSnp) files.push(['MANAGER_QEMU_IGVM_FILE', q.igvmFile]);
  else if (q.enableTdx) files.push(['MANAGER_QEMU_OVMF_FILE', q.ovmfFile]);
  else files.push(['MANAGER_QEMU_OVMF_CODE_FILE', q.ovmfCode.file]);
  files.push(['MANAGER_QEMU_DISK_IMG_KERNEL_FILE', q.kernelFile], ['MANAGER_QEMU_DISK_IMG_ROOTFS_FILE', q.rootfsFile]);
  return files;
}

/** The VMs of the state directory whose QEMU runs now (their record's PID is alive), and as whom. */
function runningVms(stateDir: string): { name: string; pid: number; asRoot: boolean; ownUser: boolean }[] {
  const vms = path.join(stateDir, 'vms');
  let names: string[];
  try {
    names = fs.readdirSync(vms);
  } catch {
    return [];
  }
  const out: { name: string; pid: number; asRoot: boolean; ownUser: boolean }[] = [];
  for (const name of names) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(vms, name, 'record.json'), 'utf8')) as { pid?: number; runAs?: unknown };
      if (typeof r.pid !== 'number') continue;
      const status = fs.readFileSync(`/proc/${r.pid}/status`, 'utf8');
      out.push({ name, pid: r.pid, asRoot: /^Uid:\s+0\s/m.test(status), ownUser: Boolean(r.runAs) });
    } catch {
      /* no record, or not running */
    }
  }
  return out;
}

export async function isolationChecks(config: Config, uid = process.getuid?.() ?? 0): Promise<CheckResult[]> {
  const iso = config.isolation;
  if (!iso.enabled) {
    return [warn('guest isolation', 'off (MANAGER_GUEST_ISOLATION=false): QEMU runs as the daemon\'s user and no firewall keeps guests off the host\'s services', 'set MANAGER_GUEST_ISOLATION=true and run the daemon as root')];
  }
  if (config.qemu.useSudo) {
    // The unit's privileged step installs the table for MANAGER_QEMU_SUDO_USER; only root can look.
    if (uid !== 0) return [warn('guest firewall', 'under MANAGER_QEMU_USE_SUDO the table is installed by `cocos-manager firewall install` (the unit\'s ExecStartPre=+) and only root can list it', 'run `cocos-manager check` as root, or `sudo cocos-manager firewall status`')];
    const listed = await new GuestFirewall(config.stateDir, { uids: iso.uidRange, allow: iso.allowLocal }, QUIET_LOG).listing();
    return [listed !== undefined ? pass('guest firewall', 'table in place (installed by the unit\'s privileged step)') : fail('guest firewall', 'no table for this state directory: guests reach the host\'s loopback', 'enable ExecStartPre=+/usr/local/bin/cocos-manager firewall install in the unit, or run it now')];
  }
  const out: CheckResult[] = [];
  const range = `MANAGER_VM_UID_RANGE=${iso.uidRange.first}-${iso.uidRange.last}`;
  if (uid !== 0) out.push(fail('guest isolation', 'the daemon must run as root to give each VM a uid of its own and install the firewall', 'run it as root (the systemd unit does), or set MANAGER_GUEST_ISOLATION=false'));
  const conflicts = hostUidRangeConflicts(iso.uidRange);
  out.push(conflicts.length === 0 ? pass('VM uid range', `${range}: no account, group, subordinate or systemd id in it`) : fail('VM uid range', `${range} ${conflicts.join('; ')}`, 'choose a range that no account or container uses'));
  out.push(onPath('setpriv') ? pass('setpriv', 'present (util-linux)') : fail('setpriv', 'not found', 'apt-get install util-linux'));
  if (!onPath('nft')) out.push(fail('guest firewall', 'nft not found', 'apt-get install nftables'));
  else if (uid === 0) {
    const fw = new GuestFirewall(config.stateDir, { uids: iso.uidRange, allow: iso.allowLocal }, QUIET_LOG);
    const table = fw.table;
    const listed = await fw.listing();
    const running = runningVms(config.stateDir);
    out.push(
      listed !== undefined
        ? pass('guest firewall', `nftables table inet ${table} in place`)
        : running.length > 0
          ? fail('guest firewall', `nftables table inet ${table} is missing while ${running.length} VM(s) run: their guests reach the host`, 'start the daemon (it installs the table at start), or run `cocos-manager firewall install`')
          : pass('guest firewall', `nftables table inet ${table} not in place: none is needed while no VM runs (the daemon installs it before the first QEMU starts)`),
    );
  }
  for (const [setting, file] of launchFiles(config)) {
    // A missing file is named by its own check above; here only who may read one that exists.
    if (!fs.existsSync(file)) continue;
    const r = readableByVmUsers(file);
    out.push(r.ok ? pass(`readable by VM users: ${setting}`, file) : fail(`readable by VM users: ${setting}`, r.why, `QEMU runs as a VM's own uid: make ${file} world-readable and its directories world-searchable, or point ${setting} elsewhere`));
  }
  const blocked = untraversableAncestors(config.stateDir);
  if (blocked.length > 0) out.push(fail('state directory for VM users', `${config.stateDir} lies below ${blocked.join(', ')}, closed to others`, `chmod o+x ${blocked[0]} or choose another MANAGER_STATE_DIR`));
  for (const d of deviceAccess()) {
    const needed = d.device === '/dev/kvm' ? config.qemu.enableKvm : config.qemu.enableSevSnp;
    if (!needed) continue;
    out.push(d.problem ? fail(`${d.device} for VM users`, d.problem, 'see the detail') : pass(`${d.device} for VM users`, d.gid === undefined ? 'open to all' : `through group ${d.gid}`));
  }
  const rooted = runningVms(config.stateDir).filter((v) => v.asRoot && !v.ownUser).map((v) => `${v.name} (pid ${v.pid})`);
  if (rooted.length > 0) out.push(warn('VMs running as root', `started before guest isolation: ${rooted.join(', ')}`, 'remove and re-create them: their guests are not kept off the host by a uid of their own'));
  return out;
}
