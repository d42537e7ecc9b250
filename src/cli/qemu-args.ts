import type { Config } from '../config/types.js';
import { buildQemuArgs, qemuCommand, templateLaunch } from '../qemu/args.js';
import { shellCommandLine } from '../util/shell-quote.js';

export const QEMU_ARGS_HELP = `Usage: cocos-manager qemu-args [--shell]

Prints the template QEMU argument vector for the current environment: the one the
daemon logs at start (host port = MANAGER_QEMU_HOST_FWD_AGENT, ids as configured,
OVMF variables file as configured, no 9P shares).

  (default)  one line, a JSON array of the arguments (the binary not included)
  --shell    one POSIX shell command line, binary first (with sudo when
             MANAGER_QEMU_USE_SUDO=true), quoted only where needed
`;

export function templateArgs(config: Config): string[] {
  return buildQemuArgs(config.qemu, templateLaunch(config.qemu));
}

export function templateCommandLine(config: Config): string {
  const cmd = qemuCommand(config.qemu);
  return shellCommandLine([cmd.file, ...cmd.prefix, ...templateArgs(config)]);
}

export function qemuArgsCommand(config: Config, shell: boolean): string {
  return shell ? templateCommandLine(config) : JSON.stringify(templateArgs(config));
}
