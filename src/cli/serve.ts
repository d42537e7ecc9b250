/**
 * `cocos-manager serve`: wires configuration, logger, manager and gRPC server; handles signals.
 * SIGTERM/SIGINT stop the daemon, never the VMs: the next start re-adopts them.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { bindServer, createGrpcServer, serverCredentials } from '../api/grpc/server.js';
import { loadTlsMaterial } from '../api/tls.js';
import type { Config } from '../config/types.js';
import { loadPcrValues, loadSigningKey } from '../manager/attestation-files.js';
import { AttestationPolicies } from '../manager/attestation-policy.js';
import { IgvmMeasurer } from '../manager/igvm-measurement.js';
import { PortPool } from '../manager/port-pool.js';
import { tcpPortIsFree } from '../manager/port-probe.js';
import { VmManager } from '../manager/vm-manager.js';
import { createLogger } from '../telemetry/logger.js';
import { StartupError } from '../util/startup-error.js';
import { templateCommandLine } from './qemu-args.js';

export const SERVE_HELP = `Usage: cocos-manager serve

Runs the daemon in the foreground: the gRPC ManagerService on
MANAGER_GRPC_HOST:MANAGER_GRPC_PORT. Stops on SIGTERM or SIGINT, leaving VMs running;
they are re-adopted at the next start. Exit status 2: bad configuration (one line on stderr).
`;

async function prepareStateDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(path.join(dir, 'vms'), { recursive: true, mode: 0o700 });
    await fs.chmod(dir, 0o700);
    await fs.access(path.join(dir, 'vms'), fs.constants.W_OK);
  } catch (err) {
    throw new StartupError(`MANAGER_STATE_DIR=${JSON.stringify(dir)} is not a writable directory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export async function serveCommand(config: Config): Promise<void> {
  const tls = loadTlsMaterial('MANAGER_GRPC_', config.grpc);
  const pcrs = loadPcrValues(config.pcrValuesFile);
  const signingKey = loadSigningKey(config.corimSigningKey);
  await prepareStateDir(config.stateDir);
  const instanceId = config.instanceId || randomUUID();
  const log = createLogger(config.logLevel, instanceId);

  log.info({ command: templateCommandLine(config) }, 'QEMU template command line');
  const ports = new PortPool(config.qemu.hostFwdRange, tcpPortIsFree);
  const measurer = new IgvmMeasurer(config.attestationPolicyBinaryPath, config.attestation.measureTimeoutMs);
  const policies = new AttestationPolicies(config, measurer, pcrs, signingKey);
  const manager = new VmManager(config, log, ports, policies);
  const recovered = await manager.recover();
  log.info(recovered, 'state recovered');

  const server = createGrpcServer(manager, log);
  const host = config.grpc.host === '' ? '0.0.0.0' : config.grpc.host;
  const address = `${host.includes(':') ? `[${host}]` : host}:${config.grpc.port}`;
  try {
    await bindServer(server, address, serverCredentials(tls));
  } catch (err) {
    throw new StartupError(`cannot listen on MANAGER_GRPC_HOST:MANAGER_GRPC_PORT (${address}): ${(err as Error).message}`);
  }
  log.info({ address, tls: tls !== undefined, mutual_tls: tls?.clientCa !== undefined }, 'gRPC server listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // CreateVm may legitimately take the whole start timeout; let it finish, then no longer.
    const graceMs = config.startTimeoutMs + 5_000;
    log.info({ signal, grace_ms: graceMs }, 'stopping: no new calls, VMs keep running');
    const force = setTimeout(() => server.forceShutdown(), graceMs);
    force.unref();
    server.tryShutdown(() => undefined);
    void manager.shutdown(graceMs).then(() => {
      server.forceShutdown();
      log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
