/**
 * An in-memory VmDriver (src/manager/vm-driver.port.ts) for in-process tests of the manager:
 * QEMUs are entries of a fake process table, QMP is a set of listeners the test drives. It
 * behaves like QEMU where the manager depends on it: a process is in the table (with its command
 * line and start time) until it exits; quit and SIGKILL end it; SHUTDOWN comes before the exit;
 * a re-adopted QEMU is found by PID and start time. Every call the manager makes is logged in
 * `driver.calls` (shared with the test's own steps, so the order of a removal can be asserted).
 */
import { DriverError } from '../dist/manager/vm-driver.port.js';

let nextPid = 40_000;

export class FakeProcesses {
  /** pid -> { startTime, cmdline } */
  table = new Map();
  /** Ports something listens on (QEMU's forwards). */
  listening = new Set();

  constructor(calls) {
    this.calls = calls;
  }

  add(cmdline, pid = nextPid++) {
    const startTime = String(1_000_000 + pid);
    this.table.set(pid, { startTime, cmdline });
    return { pid, startTime };
  }

  async startTime(pid) {
    return this.table.get(pid)?.startTime;
  }
  async commandLine(pid) {
    return this.table.get(pid)?.cmdline;
  }
  async commandLines() {
    return new Map([...this.table].map(([pid, p]) => [pid, p.cmdline]));
  }
  kill(pid) {
    this.calls.push(['kill-pid', pid]);
    this.table.delete(pid);
  }
  async portIsListening(port) {
    return this.listening.has(port);
  }
}

export class FakeDriver {
  calls = [];
  processes = new FakeProcesses(this.calls);
  /** Every handle made, by VM id (the last one). */
  handles = new Map();
  /** Set to make a step fail. */
  fail = { flavor: undefined, qmp: undefined, spawn: undefined };
  /** How the next QEMU starts: 'ready' | 'exited' | 'timeout' | a QMP status such as 'paused'. */
  startAs = 'ready';
  /** The next QEMU binds its forward (QEMU's user network). */
  bindsForward = true;
  /** Its guest obeys the ACPI power button. */
  guestObeysPowerdown = false;
  /** QEMU ignores quit and SIGTERM (killed after the stop timeout). */
  ignoresQuit = false;

  async flavor() {
    if (this.fail.flavor) throw this.fail.flavor;
    return { version: { major: 7, minor: 2, micro: 0 }, form: { reconnect: 'seconds', monitor: 'mon' }, text: '7.2.0', sandbox: { supported: true } };
  }

  async spawn(spec) {
    this.calls.push(['spawn', spec.vmId]);
    if (this.fail.qmp) throw new DriverError('qmp', `could not open the VM's QMP socket: ${this.fail.qmp}`);
    if (this.fail.spawn) throw new DriverError('spawn', `cannot run ${JSON.stringify(spec.file)}: ${this.fail.spawn}`);
    const { pid, startTime } = this.processes.add([spec.file, ...spec.argv]);
    const port = hostPortOf(spec.argv);
    if (this.bindsForward && port !== undefined) this.processes.listening.add(port);
    const h = new FakeHandle(this, spec.vmId, pid, startTime, port, this.startAs);
    this.handles.set(spec.vmId, h);
    return h;
  }

  async adopt(spec) {
    this.calls.push(['adopt', spec.vmId]);
    const p = this.processes.table.get(spec.pid);
    const h = new FakeHandle(this, spec.vmId, spec.pid, spec.startTime, undefined, 'ready');
    this.handles.set(spec.vmId, h);
    // Not our child: its exit status cannot be read.
    if (!p || p.startTime !== spec.startTime) h.exit({ code: null, signal: null });
    return h;
  }
}

export class FakeHandle {
  status = 'running';
  qmpConnected = true;
  hasExited = false;
  events = new Set();
  ready = new Set();
  output = ['fake QEMU says hello'];

  constructor(driver, vmId, pid, startTime, port, startAs) {
    this.driver = driver;
    this.vmId = vmId;
    this.pid = pid;
    this.startTime = startTime;
    this.port = port;
    this.startAs = startAs;
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** QEMU sends a QMP event. */
  emit(event, data = {}) {
    for (const fn of [...this.events]) fn({ event, data });
  }

  /** The process ends (QMP goes with it). */
  exit(info) {
    if (this.hasExited) return;
    this.hasExited = true;
    this.qmpConnected = false;
    this.driver.processes.table.delete(this.pid);
    if (this.port !== undefined) this.driver.processes.listening.delete(this.port);
    this.driver.calls.push(['exited', this.vmId]);
    this.resolveExit(info);
  }

  onEvent(fn) {
    this.events.add(fn);
  }
  onQmpReady(fn) {
    this.ready.add(fn);
  }
  async qmpDrained() {}
  async queryStatus() {
    return { status: this.status };
  }
  async waitReady() {
    switch (this.startAs) {
      case 'ready':
        return { outcome: 'ready', status: 'running' };
      case 'exited':
        this.output = ['qemu-system-x86_64: -kernel /nonexistent: could not open'];
        this.exit({ code: 1, signal: null });
        return { outcome: 'exited' };
      case 'timeout':
        return { outcome: 'timeout' };
      default:
        this.status = this.startAs;
        return { outcome: 'ready', status: this.startAs };
    }
  }
  async powerdown() {
    this.driver.calls.push(['powerdown', this.vmId]);
    if (!this.driver.guestObeysPowerdown) return;
    this.emit('POWERDOWN');
    setImmediate(() => {
      this.emit('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
      this.exit({ code: 0, signal: null });
    });
  }
  async waitExit(ms) {
    if (this.hasExited) return true;
    let timer;
    const done = await Promise.race([this.exited.then(() => true), new Promise((r) => (timer = setTimeout(() => r(false), ms)))]);
    clearTimeout(timer);
    return done;
  }
  async stop() {
    this.driver.calls.push(['stop', this.vmId]);
    if (this.driver.ignoresQuit) {
      this.exit({ code: null, signal: 'SIGKILL' });
      return { exit: await this.exited, killed: true, via: 'qmp' };
    }
    this.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    this.exit({ code: 0, signal: null });
    return { exit: await this.exited, killed: false, via: 'qmp' };
  }
  async kill() {
    this.driver.calls.push(['kill', this.vmId]);
    this.exit({ code: null, signal: 'SIGKILL' });
    return this.exited;
  }
  lastOutput() {
    return this.output;
  }
  descendants() {
    return [];
  }
  close() {
    this.driver.calls.push(['close', this.vmId]);
    this.qmpConnected = false;
  }
}

/** The host port of `hostfwd=tcp:…:PORT-…` in QEMU's argv. */
function hostPortOf(argv) {
  for (const a of argv) {
    const m = /hostfwd=tcp:[^:]*:(\d+)-/.exec(a);
    if (m) return Number(m[1]);
  }
  return undefined;
}
