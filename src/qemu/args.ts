/**
 * The QEMU argument vector, ordered and shaped as docs/qemu-argv.md explains (the Go manager's).
 * Pure: configuration and per-VM values in, argv out. The binary is kept apart.
 */
import type { QemuConfig } from '../config/types.js';
import { withExplicitUnit } from '../util/size.js';
import { gpuArgs } from './gpu-args.js';
import { type QmpForm, qmpChannelArgs } from './qmp-args.js';

/** What differs between two VMs started from the same configuration. */
export interface VmLaunch {
  /** Host port forwarded to the agent's guest port. */
  hostPort: number;
  /** The VM's own copy of the OVMF variables file (plain OVMF boot only). */
  ovmfVarsFile: string;
  /** Value of aa_kbs_params; non-empty adds ` agent.aa_kbc_params=<value>` to the kernel command line. */
  aaKbsParams?: string;
  /** The two 9P shares; absent in the template. */
  shares?: { certsDir: string; envDir: string };
  /** The VM's QMP channel (QEMU connects to the daemon's socket); absent in the template. */
  qmp?: { socketPath: string; form: QmpForm };
  /** Whether the binary takes SANDBOX_OPTION (found by a trial start: src/vm/qemu-version.ts). */
  sandbox?: boolean;
  /** The PCI address of the host GPU the VM is given (VFIO passthrough); absent: none. */
  gpu?: string;
}

/**
 * QEMU's own seccomp filter: no obsolete system calls, no setuid/setgid, no fork/exec, no
 * scheduler or affinity changes. A QEMU that breaks out of its device models then still cannot
 * start a shell or regain privileges.
 */
export const SANDBOX_OPTION = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/**
 * QEMU reads a comma inside a `key=value,...` option as the start of the next key
 * unless it is doubled, so every value spliced into such an option goes through this.
 */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

const e = escapeOptionValue;

export function kernelCommandLine(q: QemuConfig, aaKbsParams = ''): string {
  return aaKbsParams === '' ? q.kernelCmdline : `${q.kernelCmdline} agent.aa_kbc_params=${aaKbsParams}`;
}

/** The per-VM values of the template command line: what the daemon logs at start and `qemu-args` prints. */
export function templateLaunch(q: QemuConfig, sandbox = false, gpu?: string): VmLaunch {
  return { hostPort: q.hostFwdAgent, ovmfVarsFile: q.ovmfVars.file, sandbox, gpu };
}

export function buildQemuArgs(q: QemuConfig, vm: VmLaunch): string[] {
  const args: string[] = [];
  if (q.enableKvm) args.push('-enable-kvm');
  if (q.machine !== '') args.push('-machine', q.machine);
  if (q.cpu !== '') args.push('-cpu', q.cpu);
  args.push('-smp', `${q.smpCount},maxcpus=${q.smpMaxCpus}`);
  args.push('-m', `${q.memorySize},slots=${q.memorySlots},maxmem=${q.maxMemory}`);

  if (!q.enableSevSnp && !q.enableTdx) {
    const c = q.ovmfCode;
    const v = q.ovmfVars;
    args.push('-drive', `if=${e(c.if)},format=${e(c.format)},unit=${c.unit},file=${e(c.file)},readonly=${c.readonly}`);
    args.push('-drive', `if=${e(v.if)},format=${e(v.format)},unit=${v.unit},file=${e(vm.ovmfVarsFile)}`);
  }

  args.push('-netdev', `user,id=${e(q.netdevId)},hostfwd=tcp::${vm.hostPort}-:${q.guestFwdAgent}`);
  const n = q.virtioNetPci;
  args.push(
    '-device',
    `virtio-net-pci,disable-legacy=${n.disableLegacy},iommu_platform=${n.iommuPlatform},netdev=${e(q.netdevId)},addr=${e(n.addr)},romfile=${e(n.romfile)}`,
  );
  // Where Go puts it: after the network (and the disk), before SEV-SNP and TDX.
  if (vm.gpu) args.push(...gpuArgs(q.gpu, vm.gpu));

  if (q.enableSevSnp) {
    args.push('-machine', `confidential-guest-support=${e(q.sevSnp.id)},memory-backend=${e(q.memId)},igvm-cfg=${e(q.igvmId)}`);
    args.push('-object', `memory-backend-memfd,id=${e(q.memId)},size=${withExplicitUnit(q.memorySize)},share=true,prealloc=false`);
    const hostData = q.enableHostData ? `,host-data=${q.hostData}` : '';
    args.push(
      '-object',
      `sev-snp-guest,id=${e(q.sevSnp.id)},cbitpos=${q.sevSnp.cbitpos},reduced-phys-bits=${q.sevSnp.reducedPhysBits}${hostData}`,
    );
    args.push('-object', `igvm-cfg,id=${e(q.igvmId)},file=${e(q.igvmFile)}`);
  }

  if (q.enableTdx) {
    args.push(
      '-object',
      JSON.stringify({
        'qom-type': 'tdx-guest',
        id: q.tdxId,
        'quote-generation-socket': { type: 'vsock', cid: '2', port: String(q.quoteGenerationPort) },
      }),
    );
    args.push('-machine', `confidential-guest-support=${e(q.tdxId)},memory-backend=${e(q.memId)},hpet=off`);
    args.push('-object', `memory-backend-memfd,id=${e(q.memId)},size=${withExplicitUnit(q.memorySize)},share=true,prealloc=false`);
    args.push('-bios', q.ovmfFile);
    args.push('-nodefaults');
  }

  args.push('-kernel', q.kernelFile);
  args.push('-append', kernelCommandLine(q, vm.aaKbsParams));
  args.push('-initrd', q.rootfsFile);
  if (q.noGraphic) args.push('-nographic');
  args.push('-monitor', q.monitor);

  if (vm.shares) {
    // Read-only: the guest only reads these, and a writable share lets it fill the state
    // directory's disk (remount,rw then write) for every tenant.
    args.push('-fsdev', `local,id=cert_fs,path=${e(vm.shares.certsDir)},security_model=mapped,readonly=on`);
    args.push('-device', 'virtio-9p-pci,fsdev=cert_fs,mount_tag=certs_share');
    args.push('-fsdev', `local,id=env_fs,path=${e(vm.shares.envDir)},security_model=mapped,readonly=on`);
    args.push('-device', 'virtio-9p-pci,fsdev=env_fs,mount_tag=env_share');
  }
  if (vm.qmp) args.push(...qmpChannelArgs(vm.qmp.form, vm.qmp.socketPath));
  if (vm.sandbox) args.push('-sandbox', SANDBOX_OPTION);
  return args;
}

/** The unprivileged identity a VM's QEMU runs as (guest isolation). */
export interface RunAs {
  uid: number;
  gid: number;
  groups: number[];
}

/**
 * The binary and its leading arguments. Under USE_SUDO, `sudo -n -u <user> -- <bin>`: QEMU runs
 * as the dedicated unprivileged user, never as root (a sudoers rule that let the daemon's user run
 * QEMU as root with any arguments would be root for that user: `migrate "exec:…"`, `-plugin`).
 * -n: never wait for a password the daemon cannot type. A numeric id is `#<uid>` to sudo.
 *
 * With guest isolation (a root daemon), util-linux's setpriv switches to the VM's uid, gid and
 * device groups and then execs QEMU in place, so the PID the daemon records is QEMU's. (QEMU's
 * own -run-with user= would need it to start as root and is refused by its sandbox's
 * elevateprivileges=deny; Node cannot set supplementary groups.) no_new_privs: nothing QEMU
 * execs can gain privileges.
 */
export function qemuCommand(q: QemuConfig, runAs?: RunAs, lockedMemory?: bigint): { file: string; prefix: string[] } {
  const cmd = unlimitedQemuCommand(q, runAs);
  if (lockedMemory === undefined) return cmd;
  // A VM with a GPU: VFIO pins its memory, counted against RLIMIT_MEMLOCK, which setpriv and
  // sudo pass on. util-linux's prlimit sets it (soft and hard) and execs the rest in place.
  return { file: 'prlimit', prefix: [`--memlock=${lockedMemory}:${lockedMemory}`, '--', cmd.file, ...cmd.prefix] };
}

function unlimitedQemuCommand(q: QemuConfig, runAs?: RunAs): { file: string; prefix: string[] } {
  if (q.useSudo) {
    const user = /^\d+$/.test(q.sudoUser) ? `#${q.sudoUser}` : q.sudoUser;
    return { file: 'sudo', prefix: ['-n', '-u', user, '--', q.binPath] };
  }
  if (!runAs) return { file: q.binPath, prefix: [] };
  const groups = [...new Set([runAs.gid, ...runAs.groups])].join(',');
  return {
    file: 'setpriv',
    prefix: [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, `--groups=${groups}`, '--inh-caps=-all', '--no-new-privs', '--', q.binPath],
  };
}

/**
 * Whether a command line (as /proc shows it) runs a binary named `name`: first, second behind
 * an interpreter or a wrapper (or an older record's `sudo <bin>`), or behind sudo's, setpriv's
 * or prlimit's options, right after its `--` (until they have exec'd QEMU).
 */
export function commandRunsBinary(cmd: readonly string[], name: string): boolean {
  const base = (a: string | undefined) => (a === undefined ? '' : a.slice(a.lastIndexOf('/') + 1));
  if (base(cmd[0]) === name || base(cmd[1]) === name) return true;
  if (!['sudo', 'setpriv', 'prlimit'].includes(base(cmd[0]))) return false;
  const end = cmd.indexOf('--');
  return end > 0 && commandRunsBinary(cmd.slice(end + 1), name);
}
