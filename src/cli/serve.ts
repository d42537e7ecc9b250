import type { Config } from '../config/types.js';
import { templateCommandLine } from './qemu-args.js';

export const SERVE_HELP = `Usage: cocos-manager serve

Runs the daemon in the foreground: the gRPC ManagerService on
MANAGER_GRPC_HOST:MANAGER_GRPC_PORT. Stops on SIGTERM or SIGINT, leaving VMs running;
they are re-adopted at the next start.
`;

export async function serveCommand(config: Config): Promise<void> {
  process.stdout.write(`${templateCommandLine(config)}\n`);
}
