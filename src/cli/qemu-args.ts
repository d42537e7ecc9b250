import type { Config } from '../config/types.js';
import { buildQemuArgs, qemuCommand, templateLaunch } from '../qemu/args.js';
import { shellCommandLine } from '../util/shell-quote.js';
import { probeSandbox } from '../vm/qemu-version.js';
import { templateGpu } from '../host/pci-gpus.js';

export const QEMU_ARGS_HELP = `Usage: cocos-manager qemu-args [--shell]

Prints the template QEMU argument vector for the current environment: the one the
daemon logs at start (host port = MANAGER_QEMU_HOST_FWD_AGENT, ids as configured,
OVMF variables file as configured, no 9P shares; with GPUs, the first: the one of
MANAGER_QEMU_GPU_BDF, or the first NVIDIA GPU bound to vfio-pci). Like the daemon, it starts the
binary once (no machine, at most 5 s) to learn whether it takes -sandbox; when it
does not, the vector has no -sandbox and stderr says why.

  (default)  one line, a JSON array of the arguments (the binary not included)
  --shell    one POSIX shell command line, binary first (with sudo when
             MANAGER_QEMU_USE_SUDO=true), quoted only where needed
`;

/** `gpu`: the first GPU VMs get (the Go manager's only one), if any. */
export function templateArgs(config: Config, sandbox: boolean, gpu?: string): string[] {
  return buildQemuArgs(config.qemu, templateLaunch(config.qemu, sandbox, gpu));
}

export function templateCommandLine(config: Config, sandbox: boolean, gpu?: string): string {
  const cmd = qemuCommand(config.qemu);
  return shellCommandLine([cmd.file, ...cmd.prefix, ...templateArgs(config, sandbox, gpu)]);
}

export async function qemuArgsCommand(config: Config, shell: boolean, warn: (line: string) => void): Promise<string> {
  const sandbox = await probeSandbox(config.qemu);
  if (!sandbox.supported) warn(`${config.qemu.binPath} does not take -sandbox, so VMs run without it: ${sandbox.reason}`);
  const gpu = templateGpu(config.qemu.gpu.bdf);
  return shell ? templateCommandLine(config, sandbox.supported, gpu) : JSON.stringify(templateArgs(config, sandbox.supported, gpu));
}
