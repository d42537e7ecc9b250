#!/usr/bin/env node
/**
 * Entry point of `cocos-manager`. Turns every expected failure into one line on stderr and
 * an exit status (2 for bad configuration or usage), never a stack trace.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig as loadFrom } from './config/load.js';
import { cvmHostFacts } from './host/cvm-host.js';
// Each command's module is loaded only when that command runs: `serve` starts faster, and
// `qemu-args` does not load the gRPC stack.
import { QEMU_ARGS_HELP, qemuArgsCommand } from './cli/qemu-args.js';
import { StartupError } from './util/startup-error.js';

const MAIN_HELP = `Usage: cocos-manager [command] [--help]

Launches and supervises confidential VMs (AMD SEV-SNP, Intel TDX) for Cocos.
Configuration comes from the environment (see README.md, "Configuration").

Commands:
  serve        run the daemon (the default when no command is given)
  qemu-args    print the template QEMU command line for the current environment
  check        preflight this host for the current configuration
  firewall     the guest firewall: firewall install | remove | status
  vm           talk to a running daemon: vm create | rm | info | policy | ls
  policy       decode an attestation policy (policy inspect FILE [--key PUB.pem])

Run 'cocos-manager <command> --help' for a command's options.
`;

/** The configuration of this environment on this host (SEV-SNP and TDX decided from what it supports). */
const loadConfig = (env: NodeJS.ProcessEnv) => loadFrom(env, cvmHostFacts());

function fail(message: string, status: number): never {
  process.stderr.write(`cocos-manager: ${message}\n`);
  process.exit(status);
}

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  const command = first === undefined || first.startsWith('-') ? 'serve' : first;
  const args = command === first ? rest : argv;
  if (command === 'help' || (command === 'serve' && first !== 'serve' && (args.includes('--help') || args.includes('-h')))) {
    process.stdout.write(MAIN_HELP);
    return;
  }
  switch (command) {
    case 'qemu-args': {
      const { values } = parseArgs({ args, options: { shell: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
      if (values.help) return void process.stdout.write(QEMU_ARGS_HELP);
      const config = loadConfig(process.env);
      const line = await qemuArgsCommand(config, values.shell === true, (w) => process.stderr.write(`cocos-manager: warning: ${w}\n`));
      process.stdout.write(`${line}\n`);
      return;
    }
    case 'serve': {
      const { values } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } } });
      const { SERVE_HELP, serveCommand } = await import('./cli/serve.js');
      if (values.help) return void process.stdout.write(SERVE_HELP);
      await serveCommand(loadConfig(process.env));
      return;
    }
    case 'check': {
      const { values } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } } });
      const { CHECK_HELP, checkCommand } = await import('./cli/check.js');
      if (values.help) return void process.stdout.write(CHECK_HELP);
      const { text, ok } = await checkCommand(loadConfig(process.env));
      process.stdout.write(text);
      if (!ok) process.exitCode = 1;
      return;
    }
    case 'firewall': {
      const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
      const { FIREWALL_HELP, firewallCommand } = await import('./cli/firewall.js');
      if (values.help || positionals.length !== 1) {
        if (values.help) return void process.stdout.write(FIREWALL_HELP);
        fail('usage: cocos-manager firewall install | remove | status', 2);
      }
      const { text, ok } = await firewallCommand(loadConfig(process.env), positionals[0]!);
      process.stdout.write(`${text}\n`);
      if (!ok) process.exitCode = 1;
      return;
    }
    case 'vm': {
      const { CallError, VM_HELP, vmCommand } = await import('./cli/vm.js');
      if (args.includes('--help') || args.includes('-h') || args.length === 0) return void process.stdout.write(VM_HELP);
      try {
        const out = await vmCommand(args);
        if (out !== '') process.stdout.write(`${out}\n`); // `vm events` has printed as it went
      } catch (err) {
        if (err instanceof CallError) fail(err.message, 1);
        throw err;
      }
      return;
    }
    case 'policy': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        options: { key: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      });
      const { POLICY_HELP, policyInspectCommand } = await import('./cli/policy.js');
      if (values.help) return void process.stdout.write(POLICY_HELP);
      if (positionals[0] !== 'inspect' || positionals.length !== 2) fail(`usage: cocos-manager policy inspect FILE [--key PUB.pem]`, 2);
      try {
        process.stdout.write(`${policyInspectCommand(positionals[1]!, values.key)}\n`);
      } catch (err) {
        if (err instanceof StartupError) fail(err.message, 2);
        fail((err as Error).message, 1);
      }
      return;
    }
    default:
      fail(`unknown command "${command}"; run 'cocos-manager --help'`, 2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof StartupError) fail(err.message, 2);
  if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) fail(err.message, 2);
  fail(`unexpected error: ${err instanceof Error ? err.message : String(err)}`, 1);
});
