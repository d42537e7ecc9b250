/**
 * One VM's QMP channel, daemon side. The daemon listens on a Unix socket in the VM's 0700
 * directory and QEMU connects to it (chardev client with reconnect): after a daemon restart,
 * QEMU finds the new listener by itself. Each connection is greeted, negotiated
 * (qmp_capabilities) and then carries our commands (with ids) and QEMU's events.
 *
 * The peer is QEMU, which the guest cannot reach, but it is still treated as untrusted input:
 * messages are bounded in size, a second connection is refused, unknown replies are ignored.
 */
import fs from 'node:fs';
import net from 'node:net';

/** No message QEMU sends us comes near this (query-status, events); a longer line ends the connection. */
const MAX_MESSAGE_BYTES = 1 << 20;
/** Commands waiting for an answer, at most (we send a handful). */
const MAX_PENDING = 64;

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** The QMP commands the manager sends (qapi/*.json), and nothing else. */
type QmpCommand = 'qmp_capabilities' | 'query-status' | 'quit' | 'system_powerdown';

/** query-status's answer, as far as the manager reads it. */
export interface QmpStatus {
  status?: string;
  running?: boolean;
}

export class QmpError extends Error {
  constructor(
    message: string,
    readonly errorClass?: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type Listener<T> = (value: T) => void;

export class QmpChannel {
  private server: net.Server | undefined;
  private sock: net.Socket | undefined;
  /** True once qmp_capabilities has been accepted on the current connection. */
  private negotiated = false;
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventListeners = new Set<Listener<QmpEvent>>();
  private readonly readyListeners = new Set<Listener<void>>();
  private readonly closeListeners = new Set<Listener<void>>();
  private closed = false;
  /** The version QEMU announced in its last greeting. */
  greeting: { qemu?: { major: number; minor: number; micro: number }; package?: string } | undefined;

  /**
   * `owner`: the VM's own user, which QEMU runs as and connects with (guest isolation);
   * `group`: QEMU runs as another user (sudo) whose group may connect (the socket is 0660 then).
   */
  constructor(
    readonly socketPath: string,
    private readonly access: { owner?: { uid: number; gid: number }; group?: number } = {},
  ) {}

  /** Listens (replacing a stale socket file left by an earlier run). */
  async listen(): Promise<void> {
    // sun_path is 108 bytes: a longer path cannot be bound (or connected to by QEMU).
    if (Buffer.byteLength(this.socketPath) > 107) {
      throw new Error(`the QMP socket path ${this.socketPath} is longer than a Unix socket allows (107 bytes): use a shorter MANAGER_STATE_DIR`);
    }
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* none */
    }
    const server = net.createServer((sock) => this.accept(sock));
    server.maxConnections = 2;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', () => undefined);
    // The socket is the daemon's alone (a root QEMU passes), or also its QEMU user's group's
    // (QEMU under sudo as that user): group first, then the group's bits.
    fs.chmodSync(this.socketPath, 0o600);
    if (this.access.owner) fs.chownSync(this.socketPath, this.access.owner.uid, this.access.owner.gid);
    if (this.access.group !== undefined) {
      fs.chownSync(this.socketPath, -1, this.access.group);
      fs.chmodSync(this.socketPath, 0o660);
    }
    this.server = server;
  }

  get isConnected(): boolean {
    return this.negotiated && this.sock !== undefined;
  }

  onEvent(fn: Listener<QmpEvent>): void {
    this.eventListeners.add(fn);
  }

  /** Called after each successful negotiation (first connection and every reconnection). */
  onReady(fn: Listener<void>): void {
    this.readyListeners.add(fn);
  }

  /** Called each time a negotiated connection ends. */
  onDisconnect(fn: Listener<void>): void {
    this.closeListeners.add(fn);
  }

  /** Resolves once a connection is negotiated; rejects on close(). */
  whenConnected(): Promise<void> {
    if (this.isConnected) return Promise.resolve();
    if (this.closed) return Promise.reject(new QmpError('QMP channel closed'));
    return new Promise((resolve, reject) => {
      const ready = () => {
        this.readyListeners.delete(ready);
        this.closeListeners.delete(gone);
        resolve();
      };
      const gone = () => {
        if (!this.closed) return;
        this.readyListeners.delete(ready);
        this.closeListeners.delete(gone);
        reject(new QmpError('QMP channel closed'));
      };
      this.readyListeners.add(ready);
      this.closeListeners.add(gone);
    });
  }

  /** Resolves once the current connection has ended (all QEMU sent is read), or after ms. */
  whenDisconnected(ms: number): Promise<void> {
    const sock = this.sock;
    if (!sock || sock.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        sock!.off('close', done);
        resolve();
      }
      sock.once('close', done);
    });
  }

  /**
   * QEMU's run state (qapi/run-state.json StatusInfo): `running`, `paused`, `shutdown`,
   * `io-error`, `guest-panicked`, ... The commands the manager sends are these methods, typed
   * once here, rather than command names spelled where they are used.
   */
  queryStatus(timeoutMs?: number): Promise<QmpStatus> {
    return this.execute<QmpStatus>('query-status', undefined, timeoutMs);
  }

  /** QEMU exits (without the guest's say). */
  quit(timeoutMs?: number): Promise<unknown> {
    return this.execute('quit', undefined, timeoutMs);
  }

  /** The guest's ACPI power button. */
  systemPowerdown(timeoutMs?: number): Promise<unknown> {
    return this.execute('system_powerdown', undefined, timeoutMs);
  }

  /** Runs one command; rejects on a QMP error, on timeout or if the connection drops. */
  private execute<T = unknown>(command: QmpCommand, args?: Record<string, unknown>, timeoutMs = 5_000): Promise<T> {
    if (!this.isConnected) return Promise.reject(new QmpError(`QMP is not connected (${command})`));
    return this.send<T>(command, args, timeoutMs);
  }

  private send<T>(command: QmpCommand, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
    const sock = this.sock;
    if (!sock) return Promise.reject(new QmpError(`QMP is not connected (${command})`));
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new QmpError('too many QMP commands in flight'));
    const id = `c${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      sock.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  private accept(sock: net.Socket): void {
    if (this.sock || this.closed) {
      sock.destroy();
      return;
    }
    this.sock = sock;
    this.negotiated = false;
    let buf = '';
    let greeted = false;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          sock.destroy();
          return;
        }
        if (msg === null || typeof msg !== 'object') continue;
        const m = msg as Record<string, unknown>;
        if (!greeted) {
          if (!('QMP' in m)) {
            sock.destroy();
            return;
          }
          greeted = true;
          const qmp = m.QMP as { version?: { qemu?: { major: number; minor: number; micro: number }; package?: string } };
          this.greeting = { qemu: qmp?.version?.qemu, package: qmp?.version?.package };
          this.send('qmp_capabilities', undefined, 5_000).then(
            () => {
              if (this.sock !== sock) return;
              this.negotiated = true;
              for (const fn of [...this.readyListeners]) fn();
            },
            () => sock.destroy(),
          );
          continue;
        }
        this.dispatch(m);
      }
      if (buf.length > MAX_MESSAGE_BYTES) sock.destroy();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (this.sock !== sock) return;
      const wasNegotiated = this.negotiated;
      this.sock = undefined;
      this.negotiated = false;
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new QmpError('QMP connection closed'));
        this.pending.delete(id);
      }
      if (wasNegotiated || this.closed) for (const fn of [...this.closeListeners]) fn();
    });
  }

  private dispatch(m: Record<string, unknown>): void {
    if (typeof m.event === 'string') {
      const data = m.data !== null && typeof m.data === 'object' ? (m.data as Record<string, unknown>) : {};
      for (const fn of [...this.eventListeners]) fn({ event: m.event, data });
      return;
    }
    if (typeof m.id !== 'string') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if ('return' in m) p.resolve(m.return);
    else {
      const err = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      p.reject(new QmpError(String(err.desc ?? 'QMP error'), typeof err.class === 'string' ? err.class : undefined));
    }
  }

  /** Stops listening, drops the connection, removes the socket file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server?.close();
    this.sock?.destroy();
    for (const fn of [...this.closeListeners]) fn();
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* gone with its directory */
    }
  }
}
