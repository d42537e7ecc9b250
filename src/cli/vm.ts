/**
 * `cocos-manager vm ...`: a client of a running daemon, for operators. Human output by default,
 * --json for scripts. Secrets can be given as @FILE so they stay out of `ps`.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadPackageDefinition } from '../api/grpc/protos.js';
import type { ProtoGrpcType as ManagerProto } from '../api/grpc/generated/manager.js';
import type { ProtoGrpcType as AdminProto } from '../api/grpc/generated/manager-admin.js';
import { inspectPolicy } from '../attestation/inspect.js';
import { parseGoDuration } from '../util/duration.js';
import { StartupError } from '../util/startup-error.js';

export const VM_HELP = `Usage: cocos-manager vm <command> [options]

Commands:
  create [flags]          create a VM (flags below), print its id and forwarded port
  rm ID                   remove a VM
  info ID                 state, pid, port, TTL, exit, SEV-SNP/TDX/plain (and why), kernel
                          command line and GPU of a VM
  policy ID [-o FILE]     the VM's attestation policy: written to FILE, or shown decoded
  ls                      all VMs of the daemon
  events [--count N]      the current VMs, then every change of state as it happens
                          (until Ctrl-C, or N events)

Connection:
  ls and info use the admin socket (ManagerAdmin is not on TCP unless the daemon is told to),
  unless --addr is given; the other commands use --addr.
  --admin-socket PATH     the daemon's admin socket (default $MANAGER_ADMIN_SOCKET or
                          /run/cocos-manager/admin.sock)
  --addr HOST:PORT        the daemon (default 127.0.0.1:$MANAGER_GRPC_PORT or 7001)
  --ca FILE               TLS: CA bundle that issued the daemon's certificate
  --cert FILE --key FILE  mutual TLS: this client's certificate and key
  --server-name NAME      TLS: name to expect in the daemon's certificate
  --timeout DURATION      deadline of each call (Go syntax, default 60s)
  --json                  machine-readable output

create flags (a value @FILE is read from FILE):
  --log-level --server-url --ca-url --ttl --certs-token --client-cert FILE --client-key FILE
  --server-ca-cert FILE --aws-access-key-id --aws-secret-access-key --aws-endpoint-url
  --aws-region --kbs-params
`;

const OPTIONS = {
  addr: { type: 'string' },
  'admin-socket': { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'server-name': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  count: { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
  'log-level': { type: 'string' },
  'server-url': { type: 'string' },
  'ca-url': { type: 'string' },
  ttl: { type: 'string' },
  'certs-token': { type: 'string' },
  'client-cert': { type: 'string' },
  'client-key': { type: 'string' },
  'server-ca-cert': { type: 'string' },
  'aws-access-key-id': { type: 'string' },
  'aws-secret-access-key': { type: 'string' },
  'aws-endpoint-url': { type: 'string' },
  'aws-region': { type: 'string' },
  'kbs-params': { type: 'string' },
} as const;

function readFileArg(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new StartupError(`--${flag}: cannot read ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

const text = (flag: string, v: string | undefined) => (v === undefined ? '' : v.startsWith('@') ? readFileArg(flag, v.slice(1)).toString('utf8').trimEnd() : v);
const bytes = (flag: string, v: string | undefined) => (v === undefined ? Buffer.alloc(0) : readFileArg(flag, v.startsWith('@') ? v.slice(1) : v));

type Values = ReturnType<typeof parse>['values'];
function parse(args: string[]) {
  return parseArgs({ args, allowPositionals: true, options: OPTIONS });
}

export const DEFAULT_ADMIN_SOCKET = '/run/cocos-manager/admin.sock';

/** The admin socket's clients (ManagerAdmin and ManagerService, no TLS: the file mode guards it). */
function socketClients(v: Values) {
  const socket = v['admin-socket'] ?? (process.env.MANAGER_ADMIN_SOCKET || DEFAULT_ADMIN_SOCKET);
  const creds = grpc.credentials.createInsecure();
  const pkg = grpc.loadPackageDefinition(loadPackageDefinition()) as unknown as ManagerProto & AdminProto;
  const target = `unix:${socket}`;
  return { api: new pkg.manager.ManagerService(target, creds), admin: new pkg.manager.ManagerAdmin(target, creds), addr: target };
}

function clients(v: Values) {
  const addr = v.addr ?? `127.0.0.1:${process.env.MANAGER_GRPC_PORT || 7001}`;
  let creds = grpc.credentials.createInsecure();
  if (v.ca || v.cert) {
    creds = grpc.credentials.createSsl(v.ca ? readFileArg('ca', v.ca) : null, v.key ? readFileArg('key', v.key) : null, v.cert ? readFileArg('cert', v.cert) : null);
  }
  const options = v['server-name'] ? { 'grpc.ssl_target_name_override': v['server-name'] } : {};
  const pkg = grpc.loadPackageDefinition(loadPackageDefinition()) as unknown as ManagerProto & AdminProto;
  return {
    api: new pkg.manager.ManagerService(addr, creds, options),
    admin: new pkg.manager.ManagerAdmin(addr, creds, options),
    addr,
  };
}

export class CallError extends Error {}

/**
 * One line an operator can act on. grpc-js words a refused connection as "No connection
 * established. Last error: ... Resolution note: "; what matters is that no daemon answered there.
 */
export function describeCallError(method: string, err: grpc.ServiceError, target: string): string {
  const where = target.replace(/^(dns|ipv4|ipv6|unix):(\/\/\/)?/, '');
  const option = target.startsWith('unix:') ? '--admin-socket' : '--addr';
  if (err.code === grpc.status.UNAVAILABLE && /No connection established|ECONNREFUSED|ENOENT|connect/i.test(err.details)) {
    return `no daemon at ${where}: is cocos-manager running? (make run, or systemctl start cocos-manager; ${option} sets where to look)`;
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED && /Waiting for LB pick|connect|Deadline exceeded/i.test(err.details)) {
    return `${method}: no answer from ${where} in time (--timeout to wait longer): ${err.details.split('\n')[0]}`;
  }
  return `${method}: ${grpc.status[err.code] ?? err.code}: ${err.details.split('\n')[0]}`;
}

function unaryCall<Res>(client: grpc.Client, method: string, req: unknown, timeoutMs: number): Promise<Res> {
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, Function>)[method]!(req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(new CallError(describeCallError(method, err, client.getChannel().getTarget())));
      else resolve(res);
    });
  });
}

interface VmStatusOut {
  id: string;
  state: string;
  pid: number;
  forwarded_port: string;
  created_at: string;
  ttl_deadline: string;
  has_exit: boolean;
  exit_code: number;
  exit_signal: string;
  kernel_cmd: string;
  exit_cause: string;
  pause_reason: string;
  gpu: string;
  cvm_kind: string;
  cvm_decision: string;
}

interface VmEventOut {
  id: string;
  from: string;
  to: string;
  reason: string;
  at: string;
  vm: VmStatusOut;
}

/** Prints WatchVms events as they come; resolves when the stream ends or after `count` events. */
function streamEvents(admin: grpc.Client, json: boolean, count: number | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = (admin as unknown as { WatchVms(req: object): grpc.ClientReadableStream<VmEventOut> }).WatchVms({});
    let seen = 0;
    stream.on('data', (e: VmEventOut) => {
      const exit = e.vm.exit_cause ? ` (${e.vm.exit_cause})` : e.vm.pause_reason ? ` (${e.vm.pause_reason})` : '';
      process.stdout.write(json ? `${JSON.stringify(e)}\n` : `${e.at}  ${e.id}  ${e.from} -> ${e.to}${exit}  ${e.reason}\n`);
      if (count !== undefined && ++seen >= count) {
        stream.cancel();
        resolve('');
      }
    });
    stream.on('end', () => resolve(''));
    stream.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.CANCELLED && count !== undefined && seen >= count) resolve('');
      else reject(new StartupError(`vm events: ${err.details || err.message}`));
    });
  });
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export async function vmCommand(args: string[]): Promise<string> {
  const { values: v, positionals } = parse(args);
  const [command, id] = positionals;
  if (v.help || command === undefined) return VM_HELP;
  let timeoutMs = 60_000;
  if (v.timeout !== undefined) {
    try {
      timeoutMs = parseGoDuration(v.timeout);
    } catch {
      throw new StartupError(`--timeout ${JSON.stringify(v.timeout)}: expected a Go duration like 30s`);
    }
  }
  const needId = () => {
    if (!id) throw new StartupError(`usage: cocos-manager vm ${command} ID`);
    return id;
  };
  // Operators' reads go to the admin socket unless a TCP address is named (admin over mutual TLS).
  const viaSocket = (command === 'ls' || command === 'info' || command === 'events') && (v['admin-socket'] !== undefined || v.addr === undefined);
  const c = viaSocket ? socketClients(v) : clients(v);
  try {
    switch (command) {
      case 'create': {
        const res = await unaryCall<{ cvm_id: string; forwarded_port: string }>(c.api, 'CreateVm', {
          agent_log_level: text('log-level', v['log-level']),
          agent_cvm_server_url: text('server-url', v['server-url']),
          agent_cvm_ca_url: text('ca-url', v['ca-url']),
          ttl: text('ttl', v.ttl),
          agent_certs_token: text('certs-token', v['certs-token']),
          agent_cvm_client_cert: bytes('client-cert', v['client-cert']),
          agent_cvm_client_key: bytes('client-key', v['client-key']),
          agent_cvm_server_ca_cert: bytes('server-ca-cert', v['server-ca-cert']),
          aws_access_key_id: text('aws-access-key-id', v['aws-access-key-id']),
          aws_secret_access_key: text('aws-secret-access-key', v['aws-secret-access-key']),
          aws_endpoint_url: text('aws-endpoint-url', v['aws-endpoint-url']),
          aws_region: text('aws-region', v['aws-region']),
          aa_kbs_params: text('kbs-params', v['kbs-params']),
        }, timeoutMs);
        return v.json ? JSON.stringify(res) : `created ${res.cvm_id}: agent forwarded to host port ${res.forwarded_port}`;
      }
      case 'rm':
        await unaryCall(c.api, 'RemoveVm', { cvm_id: needId() }, timeoutMs);
        return v.json ? JSON.stringify({ removed: id }) : `removed ${id}`;
      case 'info': {
        const s = await unaryCall<VmStatusOut>(c.admin, 'GetVm', { id: needId() }, timeoutMs);
        const i = await unaryCall<Record<string, unknown>>(c.api, 'CVMInfo', { id }, timeoutMs);
        if (v.json) return JSON.stringify({ ...s, ovmf_version: i.ovmf_version, cpu_num: i.cpu_num, cpu_type: i.cpu_type, eos_version: i.eos_version });
        return table([
          ['id', s.id], ['state', s.pause_reason ? `${s.state} (${s.pause_reason})` : s.state], ['pid', String(s.pid)], ['forwarded port', s.forwarded_port], ['created', s.created_at],
          ['ttl deadline', s.ttl_deadline || '(none)'],
          ['exit', s.has_exit ? `${s.exit_cause || 'unknown'} (${s.exit_signal || `code ${s.exit_code}`})` : '(none)'],
          ['confidential computing', s.cvm_decision ? `${s.cvm_kind} (${s.cvm_decision})` : s.cvm_kind],
          ['kernel command line', s.kernel_cmd], ['gpu', s.gpu || '(none)'], ['cpu', `${i.cpu_num} x ${i.cpu_type}`], ['ovmf', String(i.ovmf_version)], ['eos', String(i.eos_version) || '(unset)'],
        ]);
      }
      case 'policy': {
        const res = await unaryCall<{ info: Buffer }>(c.api, 'AttestationPolicy', { id: needId() }, timeoutMs);
        if (v.output) {
          fs.writeFileSync(v.output, res.info);
          return v.json ? JSON.stringify({ written: v.output, bytes: res.info.length }) : `wrote ${res.info.length} bytes to ${v.output}`;
        }
        return JSON.stringify(inspectPolicy(res.info), null, 2);
      }
      case 'ls': {
        const res = await unaryCall<{ vms: VmStatusOut[] }>(c.admin, 'ListVms', {}, timeoutMs);
        if (v.json) return JSON.stringify(res.vms);
        if (res.vms.length === 0) return 'no VMs';
        return table([
          ['ID', 'STATE', 'PID', 'PORT', 'CREATED', 'TTL DEADLINE', 'EXIT'],
          ...res.vms.map((s) => [s.id, s.pause_reason ? `${s.state} (${s.pause_reason})` : s.state, String(s.pid), s.forwarded_port, s.created_at, s.ttl_deadline || '-', s.exit_cause || '-']),
        ]);
      }
      case 'events': {
        let count: number | undefined;
        if (v.count !== undefined) {
          count = Number(v.count);
          if (!Number.isInteger(count) || count < 1) throw new StartupError(`--count ${JSON.stringify(v.count)}: expected a positive integer`);
        }
        return await streamEvents(c.admin, v.json === true, count);
      }
      default:
        throw new StartupError(`unknown vm command "${command}"; run 'cocos-manager vm --help'`);
    }
  } finally {
    c.api.close();
    c.admin.close();
  }
}
