// Starts the built daemon as a child process and talks to it with a real gRPC client over loopback.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { FakeHost } from './fake-host.mjs';
import { CLI, FIXTURES, ROOT, baseEnv } from './helpers.mjs';

export const FAKE_QEMU = path.join(FIXTURES, 'fake-qemu.mjs');

const pkgDef = protoLoader.loadSync(path.join(ROOT, 'proto', 'manager.proto'), {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
export const managerPkg = grpc.loadPackageDefinition(pkgDef).manager;
const adminDef = protoLoader.loadSync(path.join(ROOT, 'proto', 'manager-admin.proto'), {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
export const adminPkg = grpc.loadPackageDefinition(adminDef).manager;

/**
 * The two ports a daemon bound, read from its log: tests start it on port 0 so no port is ever
 * picked, released and raced for.
 */
const loggedPort = (lines, msg) => lines.find((l) => l.msg === msg)?.port;
function boundPorts(lines) {
  return { port: loggedPort(lines, 'gRPC server listening'), httpPort: loggedPort(lines, 'HTTP endpoint listening') };
}

/**
 * Spawns `cocos-manager serve` on loopback (ports 0 unless env says otherwise) and collects its
 * JSON log lines as they come.
 */
export function spawnServe(env, nodeFlags = [], { uid, gid, groups, cwd, cli = CLI, wrap = [] } = {}) {
  // Each daemon its own admin socket, in a short path (a Unix socket path has at most 107 bytes).
  const adminSocket = env.MANAGER_ADMIN_SOCKET ?? path.join(fs.mkdtempSync('/tmp/cocos-admin-'), 'admin.sock');
  if (uid !== undefined && env.MANAGER_ADMIN_SOCKET === undefined) fs.chownSync(path.dirname(adminSocket), uid, gid);
  // Supplementary groups (a system user's, as systemd's User= gives them): Node's spawn drops
  // them, so setpriv switches user and groups and execs node in place (the PID stays node's).
  const argv = [...nodeFlags, cli, 'serve'];
  const withGroups = uid !== undefined && groups !== undefined;
  // `wrap`: words that exec the daemon in place (a fake host's nsenter), so its PID stays node's.
  const [file, ...args] = [...wrap, ...(withGroups ? ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, `--groups=${groups.join(',')}`, '--'] : []), process.execPath, ...argv];
  const proc = spawn(file, args, {
    env: baseEnv({ MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: '0', MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: '0', MANAGER_ADMIN_SOCKET: adminSocket, MANAGER_VM_UID_RANGE: nextUidRange(), ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Another user (the USE_SUDO test runs the daemon as a system user), another working directory.
    ...(uid === undefined || withGroups ? {} : { uid, gid }),
    ...(cwd === undefined ? {} : { cwd }),
  });
  const logs = { lines: [], stderr: '' };
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += d.toString('utf8');
    const parts = buf.split('\n');
    buf = parts.pop();
    for (const l of parts) {
      try { logs.lines.push(JSON.parse(l)); } catch { logs.lines.push({ raw: l }); }
    }
  });
  proc.stderr.on('data', (d) => { logs.stderr += d.toString('utf8'); });
  return { proc, logs, adminSocket };
}

/** The port the daemon's HTTP endpoint bound, once it has logged it (bounded). */
export async function httpPortOf(logs, timeoutMs = 15_000) {
  await waitFor(() => loggedPort(logs.lines, 'HTTP endpoint listening') !== undefined, timeoutMs, 10);
  const port = loggedPort(logs.lines, 'HTTP endpoint listening');
  if (port === undefined) throw new Error(`no 'HTTP endpoint listening' line within ${timeoutMs} ms; stderr: ${logs.stderr}`);
  return port;
}

/** A loopback listener on a kernel-chosen port, kept open by the caller (close it when done). */
export function listenOnFreePort(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

// Below the kernel's ephemeral range (32768 and up here), where the daemons' own port-0 listeners
// and every client socket land, so no other socket of the run ever sits in a VM range. Test files
// run in parallel processes: each takes blocks of 500 ports of its own, claimed by an exclusive
// mkdir (a block whose claimant is gone is taken over), so no two of them share a range.
const BLOCK = 500;
const BLOCKS = 44; // 10000-31999
const CLAIMS = path.join(os.tmpdir(), 'cocos-test-port-blocks');
let rangeCursor = 0;
let blockEnd = 0;

function claimBlock() {
  fs.mkdirSync(CLAIMS, { recursive: true, mode: 0o755 });
  const start = Math.floor(Math.random() * BLOCKS);
  for (let i = 0; i < BLOCKS; i++) {
    const k = (start + i) % BLOCKS;
    const dir = path.join(CLAIMS, String(k));
    try {
      fs.mkdirSync(dir);
    } catch {
      let owner = NaN;
      try { owner = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8')); } catch { /* being claimed */ }
      if (!Number.isInteger(owner) || isAlive(owner)) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      try { fs.mkdirSync(dir); } catch { continue; }
    }
    fs.writeFileSync(path.join(dir, 'pid'), String(process.pid));
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    return 10000 + k * BLOCK;
  }
  throw new Error(`no free block of test ports in ${CLAIMS}`);
}

/** A host-forward range no other test of this run uses. */
export function nextRange(size = 20) {
  if (rangeCursor + size + 5 > blockEnd) {
    rangeCursor = claimBlock();
    blockEnd = rangeCursor + BLOCK;
  }
  const first = rangeCursor;
  rangeCursor += size + 5;
  return `${first}-${first + size - 1}`;
}

/**
 * A temporary directory the VMs' users can use too: with guest isolation (a root daemon) each
 * QEMU runs as a uid of its own, and the stand-in QEMU reads its mode file and writes its
 * findings in the test's directory. (The state directory inside is the daemon's: 0711.)
 */
export function tmpDir(prefix = 'cocos-test-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o1777);
  return dir;
}

// Each daemon of a run its own VM uids: two daemons sharing uids would share files and firewall verdicts.
let uidCursor = 1_900_000_000 + Math.floor(Math.random() * 9_000) * 1_000;
const rangeOfStateDir = new Map();
/** The MANAGER_VM_UID_RANGE of the daemons of one state directory (a fresh one for a new directory). */
export function uidRangeOf(stateDir) {
  if (stateDir === undefined) return nextUidRange();
  const key = path.resolve(stateDir);
  if (!rangeOfStateDir.has(key)) rangeOfStateDir.set(key, nextUidRange());
  return rangeOfStateDir.get(key);
}

/** A MANAGER_VM_UID_RANGE no other daemon of this run uses. */
export function nextUidRange(size = 100) {
  const first = uidCursor;
  uidCursor += size;
  return `${first}-${first + size - 1}`;
}

/** The guest firewall table a daemon on `stateDir` installs (as src/host/guest-firewall.ts names it). */
export function firewallTable(stateDir) {
  let real = stateDir;
  try { real = fs.realpathSync(stateDir); } catch { /* as given */ }
  return `cocos_manager_${createHash('sha256').update(real).digest('hex').slice(0, 12)}`;
}

/** Whether that table is in place now. */
export function firewallTablePresent(stateDir) {
  return spawnSync('nft', ['list', 'table', 'inet', firewallTable(stateDir)], { stdio: 'ignore' }).status === 0;
}

/** Removes the table a daemon left (its VMs killed by the test): the host keeps no test's rules. */
export function removeFirewallTable(stateDir) {
  spawnSync('nft', ['delete', 'table', 'inet', firewallTable(stateDir)], { stdio: 'ignore' });
}

/** The environment of a daemon that runs the stand-in QEMU with a plain-OVMF configuration. */
export function fakeQemuEnv(stateDir, extra = {}) {
  return {
    MANAGER_STATE_DIR: stateDir,
    MANAGER_QEMU_BIN_PATH: FAKE_QEMU,
    MANAGER_QEMU_ENABLE_KVM: 'false',
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_ENABLE_TDX: 'false',
    // Plain VMs on any host: false alone is ignored where the host supports the technology.
    MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: 'true',
    MANAGER_QEMU_HOST_FWD_RANGE: nextRange(),
    MANAGER_QEMU_START_TIMEOUT: '5s',
    MANAGER_QEMU_STOP_TIMEOUT: '2s',
    MANAGER_LOG_LEVEL: 'debug',
    COCOS_JAEGER_TRACE_RATIO: '0',
    ...extra,
  };
}

/** A daemon running the real QEMU under software emulation (TCG), a small VM, plain OVMF. */
export function tcgEnv(stateDir, extra = {}) {
  return {
    MANAGER_STATE_DIR: stateDir,
    MANAGER_QEMU_ENABLE_KVM: 'false',
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_ENABLE_TDX: 'false',
    MANAGER_ALLOW_NON_CONFIDENTIAL_VMS: 'true',
    MANAGER_QEMU_CPU: 'max',
    MANAGER_QEMU_SMP_COUNT: '1',
    MANAGER_QEMU_MEMORY_SIZE: '512M',
    MANAGER_QEMU_MAX_MEMORY: '4G',
    MANAGER_QEMU_HOST_FWD_RANGE: nextRange(),
    MANAGER_QEMU_START_TIMEOUT: '30s',
    MANAGER_QEMU_STOP_TIMEOUT: '5s',
    COCOS_JAEGER_TRACE_RATIO: '0',
    ...extra,
  };
}

export class Daemon {
  constructor(proc, port, logs) {
    this.proc = proc;
    this.port = port;
    this.logs = logs;
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /**
   * Starts `cocos-manager serve` on loopback and waits (bounded) until it serves and has
   * recovered the VMs an earlier run left (unless `recovered: false`). Unless given,
   * both ports are 0: the daemon binds free ones and logs them, and the test reads them there.
   * `host`: a fake host (FakeHost.create's spec) made for this daemon and gone with it (stop();
   * a restart makes a new one, of the same spec unless given another); `wrap`: the prefix of a
   * fake host the test keeps itself.
   */
  static async start(env, { timeoutMs = 20_000, port = 0, httpPort = 0, nodeFlags = [], uid, gid, groups, cwd, cli, wrap, host, recovered = true } = {}) {
    const fake = host === undefined ? undefined : FakeHost.create(host);
    try {
      const d = await Daemon.#startOn(env, { timeoutMs, port, httpPort, nodeFlags, uid, gid, groups, cwd, cli, wrap: fake?.prefix ?? wrap, recovered });
      d.fakeHost = fake;
      d.startOptions = { ...d.startOptions, wrap, host };
      return d;
    } catch (err) {
      fake?.dispose();
      throw err;
    }
  }

  static async #startOn(env, { timeoutMs, port, httpPort, nodeFlags, uid, gid, groups, cwd, cli, wrap, recovered }) {
    // One range per state directory, so any later daemon on it (a restart) finds its VMs' uids in it.
    env = { MANAGER_VM_UID_RANGE: uidRangeOf(env.MANAGER_STATE_DIR), ...env };
    const { proc, logs, adminSocket } = spawnServe({ MANAGER_GRPC_PORT: String(port), MANAGER_HTTP_PORT: String(httpPort), ...env }, nodeFlags, { uid, gid, groups, cwd, cli, wrap });
    const d = new Daemon(proc, port, logs);
    d.adminSocket = adminSocket;
    d.env = env;
    // As the daemon resolves it (against its working directory): what its QEMUs' command lines name.
    d.stateDir = env.MANAGER_STATE_DIR && path.resolve(cwd ?? '.', env.MANAGER_STATE_DIR);
    d.startOptions = { timeoutMs, nodeFlags, uid, gid, groups, cwd, wrap };
    const deadline = Date.now() + timeoutMs;
    try {
      await d.waitForLog((l) => l.msg === 'gRPC server listening', timeoutMs);
      Object.assign(d, boundPorts(logs.lines));
      await d.waitUntilServing(Math.max(1_000, deadline - Date.now()));
      // The daemon serves before it has re-adopted what an earlier run left; most tests look
      // at the VMs afterwards (recovered: false to start looking at once).
      if (recovered) await d.waitForLog((l) => l.msg === 'state recovered', Math.max(1_000, deadline - Date.now()));
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
    return d;
  }

  /**
   * Spawns `cocos-manager serve` and resolves once both ports are bound (logged), without asking
   * /health in plain HTTP: for an HTTP endpoint under TLS. `grpcLine` and `httpLine` are those logs.
   */
  static async listening(env, { timeoutMs = 20_000, cwd } = {}) {
    const { proc, logs } = spawnServe(env, [], { cwd });
    const d = new Daemon(proc, 0, logs);
    d.stateDir = env.MANAGER_STATE_DIR && path.resolve(cwd ?? '.', env.MANAGER_STATE_DIR);
    try {
      d.grpcLine = await d.waitForLog((l) => l.msg === 'gRPC server listening', timeoutMs);
      // Logged before the gRPC line.
      d.httpLine = await d.waitForLog((l) => l.msg === 'HTTP endpoint listening', 1_000);
      Object.assign(d, { port: d.grpcLine.port, httpPort: d.httpLine.port });
    } catch (err) {
      await d.stop('SIGKILL');
      throw err;
    }
    return d;
  }

  /** Ready means what a load balancer sees: /health answers 200 (the gRPC server is bound by then). */
  async waitUntilServing(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`daemon exited (${this.proc.exitCode ?? this.proc.signalCode}); stderr: ${this.logs.stderr}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${this.httpPort}/health`, { signal: AbortSignal.timeout(1_000) });
        if (res.status === 200) return;
      } catch {
        /* not listening yet */
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`daemon not serving within ${timeoutMs} ms; stderr: ${this.logs.stderr}; last: ${JSON.stringify(this.logs.lines.slice(-3))}`);
  }

  async waitForLog(pred, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.exited?.then(() => { exited = true; });
    while (Date.now() < deadline) {
      const hit = this.logs.lines.find(pred);
      if (hit) return hit;
      if (exited) throw new Error(`daemon exited; stderr: ${this.logs.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`log line not seen within ${timeoutMs} ms; stderr: ${this.logs.stderr}; last: ${JSON.stringify(this.logs.lines.slice(-5))}`);
  }

  client(creds = grpc.credentials.createInsecure(), options = {}) {
    return new managerPkg.ManagerService(`127.0.0.1:${this.port}`, creds, options);
  }

  /** CreateVm once per request, one after the other, on a client of its own; the answers in order. */
  async createVms(...requests) {
    const client = this.client();
    try {
      const out = [];
      for (const req of requests) out.push(await call(client, 'CreateVm', req));
      return out;
    } finally {
      client.close();
    }
  }

  /** A ManagerAdmin client (ListVms, GetVm, WatchVms) on the daemon's admin socket. */
  adminClient(options = {}) {
    return new adminPkg.ManagerAdmin(`unix:${this.adminSocket}`, grpc.credentials.createInsecure(), options);
  }

  /**
   * Stops the daemon and resolves with its exit ({ code, signal }). One that ignores `signal` for
   * `timeoutMs` is killed, and one that outlives even that for 5 s is an error. VMs outlive the
   * daemon by design; unless `keepVms`, the QEMUs it left (any process naming its state
   * directory) are killed too, so a test never leaks processes.
   */
  async stop(signal = 'SIGTERM', { timeoutMs = 15_000, keepVms = false } = {}) {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill(signal);
      if (!(await exitWithin(this.exited, timeoutMs))) {
        this.proc.kill('SIGKILL');
        if (!(await exitWithin(this.exited, 5_000))) throw new Error(`daemon pid ${this.proc.pid} still runs ${timeoutMs + 5_000} ms after ${signal}, 5 s after SIGKILL`);
      }
    }
    if (!keepVms && this.stateDir) {
      killProcessesMentioning(path.resolve(this.stateDir));
      removeFirewallTable(this.stateDir);
    }
    // VMs kept for a restart stay in the namespace (it lives while they do); its files can go.
    this.fakeHost?.dispose();
    this.fakeHost = undefined;
    return this.exited;
  }

  /**
   * A crash (SIGKILL) or a restart (`signal: 'SIGTERM'`) of the daemon alone: it is stopped
   * (bounded, see stop()) with its VMs left running, `whileDown(exit)` runs while no daemon does,
   * and a new one starts with the same environment, state directory, admin socket, user and
   * working directory; `env` and the start options given here override those, `samePorts` keeps
   * both ports. A daemon that had exited already is just started again. Resolves with the new
   * daemon once it serves and has logged 'state recovered': a daemon may serve before it has
   * re-adopted every VM, so neither order of the two is assumed. If `whileDown` or the start
   * fails, the VMs are killed (no daemon is left to do it at the test's end).
   */
  async restart({ signal = 'SIGKILL', whileDown, env = {}, samePorts = false, ...startOptions } = {}) {
    const exit = await this.stop(signal, { keepVms: true });
    const ports = samePorts ? { port: this.port, httpPort: this.httpPort } : {};
    const opts = { ...this.startOptions, ...ports, ...startOptions };
    let next;
    try {
      await whileDown?.(exit);
      next = await Daemon.start({ ...this.env, MANAGER_ADMIN_SOCKET: this.adminSocket, ...env }, opts);
      await next.waitForLog((l) => l.msg === 'state recovered', opts.timeoutMs);
      return next;
    } catch (err) {
      await (next ?? this).stop('SIGKILL');
      throw err;
    }
  }

  allLogText() {
    return this.logs.lines.map((l) => JSON.stringify(l)).join('\n') + this.logs.stderr;
  }
}

/** Whether `exited` settled within `ms` (its value then), else undefined; the timer never outlives it. */
async function exitWithin(exited, ms) {
  let t;
  const timeout = new Promise((resolve) => { t = setTimeout(resolve, ms); });
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    clearTimeout(t);
  }
}

/** Promisified unary call with a deadline. */
export function call(client, method, req, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    client[method](req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Reads what the stand-in agent reports on a forwarded port. */
export function readAgent(port, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    const t = setTimeout(() => { sock.destroy(); reject(new Error('agent read timed out')); }, timeoutMs);
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => { clearTimeout(t); resolve(JSON.parse(data)); });
    sock.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** Running (not a zombie: one whose parent died waits for init to reap it, which some sandboxes never do). */
export function isAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export async function waitFor(pred, timeoutMs = 5_000, stepMs = 25) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return false;
}

export function portIsFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '0.0.0.0', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** SIGKILLs every process whose command line mentions `needle` (test clean-up only). */
export function killProcessesMentioning(needle) {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle)) process.kill(Number(e), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
