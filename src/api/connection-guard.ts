/**
 * Bounded connections on the TCP ports a guest (or anything else on the host) can reach: a cap
 * per peer address and in total, checked as the connection is accepted, before any TLS, HTTP/2
 * or HTTP work; and a deadline for the guest-peer verdict. What is refused is closed at once
 * (a reset: no TIME_WAIT left behind), counted in a metric, and logged once per window with
 * the counts, never once per connection.
 */
import type net from 'node:net';
import type { Logger } from 'pino';
import type { GuestPeerGate, PeerVerdict } from './guest-peer.js';

export type GuardedApi = 'grpc' | 'http';
/** Why a connection was closed by the guard (the metric's label). */
export type RefusalReason = 'per_peer' | 'total' | 'verdict_timeout';

export interface ConnectionLimits {
  /** Connections open at once on one port. */
  maxTotal: number;
  /** Connections open at once on one port from one peer address. */
  maxPerPeer: number;
  /** How long a connection may wait for its guest-peer verdict. */
  verdictTimeoutMs: number;
}

export interface ConnectionObserver {
  connectionRefused(api: GuardedApi, reason: RefusalReason): void;
}

export const FLOOD_LOG_WINDOW_MS = 10_000;

export class ConnectionGuard {
  private readonly perPeer = new Map<string, number>();
  private total = 0;
  private window: { timer: NodeJS.Timeout; counts: Record<RefusalReason, number> } | undefined;

  constructor(
    readonly api: GuardedApi,
    readonly limits: ConnectionLimits,
    private readonly log: Logger,
    private readonly observer: ConnectionObserver,
    private readonly windowMs = FLOOD_LOG_WINDOW_MS,
  ) {}

  /** Connections open now (admitted and not yet closed). */
  get open(): number {
    return this.total;
  }

  /**
   * Counts `socket` in if the caps allow, until it closes; otherwise resets it and says false.
   * Call it first thing on a raw accepted socket.
   */
  admit(socket: net.Socket): boolean {
    // A socket reset before it was accepted has no address left: nothing to count, nothing to serve.
    const peer = socket.remoteAddress;
    if (peer === undefined) {
      socket.destroy();
      return false;
    }
    const mine = this.perPeer.get(peer) ?? 0;
    const reason: RefusalReason | undefined = this.total >= this.limits.maxTotal ? 'total' : mine >= this.limits.maxPerPeer ? 'per_peer' : undefined;
    if (reason !== undefined) {
      this.refuse(socket, reason);
      return false;
    }
    this.total++;
    this.perPeer.set(peer, mine + 1);
    socket.once('close', () => {
      this.total--;
      const n = (this.perPeer.get(peer) ?? 1) - 1;
      if (n === 0) this.perPeer.delete(peer);
      else this.perPeer.set(peer, n);
    });
    return true;
  }

  /**
   * The gate's verdict on `socket`, or undefined if it did not come within the deadline: the
   * socket is then closed (the gate attributes peers one at a time, so a flood would otherwise
   * have connections wait for their turn for ever, each holding a descriptor).
   */
  verdictWithin(gate: GuestPeerGate, socket: net.Socket): Promise<PeerVerdict | undefined> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!socket.destroyed) this.refuse(socket, 'verdict_timeout');
        resolve(undefined);
      }, this.limits.verdictTimeoutMs);
      gate.verdictFor(socket).then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private refuse(socket: net.Socket, reason: RefusalReason): void {
    // A reset, not a FIN: the daemon's side keeps no TIME_WAIT and the client learns at once.
    // (A TLS socket cannot be reset: it is destroyed.) Errors after this are of no interest.
    socket.on('error', () => undefined);
    try {
      if (!socket.destroyed) socket.resetAndDestroy();
    } catch {
      socket.destroy();
    }
    this.observer.connectionRefused(this.api, reason);
    this.note(reason);
  }

  /**
   * The first refusal is logged at once; the refusals of the window it opens are summed up in
   * one line when it ends, and a flood that goes on gives one line per window.
   */
  private note(reason: RefusalReason): void {
    if (this.window) {
      this.window.counts[reason]++;
      return;
    }
    const first = { per_peer: 0, total: 0, verdict_timeout: 0, [reason]: 1 };
    this.emit(first, 'a connection was refused');
    this.openWindow();
  }

  private openWindow(): void {
    const w = {
      counts: { per_peer: 0, total: 0, verdict_timeout: 0 },
      timer: setTimeout(() => {
        this.window = undefined;
        if (w.counts.per_peer + w.counts.total + w.counts.verdict_timeout === 0) return;
        this.emit(w.counts, `connections refused in the last ${this.windowMs / 1000} s`);
        this.openWindow();
      }, this.windowMs).unref(),
    };
    this.window = w;
  }

  private emit(counts: Record<RefusalReason, number>, what: string): void {
    const refused = counts.per_peer + counts.total + counts.verdict_timeout;
    this.log.warn(
      {
        api: this.api,
        refused,
        refused_per_peer_cap: counts.per_peer,
        refused_total_cap: counts.total,
        refused_verdict_timeout: counts.verdict_timeout,
        open: this.total,
        max_connections: this.limits.maxTotal,
        max_connections_per_peer: this.limits.maxPerPeer,
        top_peer: this.topPeer(),
      },
      `${this.api === 'grpc' ? 'gRPC' : 'HTTP'} port: ${what} (MANAGER_MAX_CONNECTIONS_PER_PEER, MANAGER_MAX_CONNECTIONS, MANAGER_CONNECTION_VERDICT_TIMEOUT); a flood is logged once per ${this.windowMs / 1000} s`,
    );
  }

  /** The peer with the most connections open, for the log line (a scan, only when logging). */
  private topPeer(): { address: string; open: number } | null {
    let top: { address: string; open: number } | null = null;
    for (const [address, open] of this.perPeer) if (top === null || open > top.open) top = { address, open };
    return top;
  }

  /** No more summaries (the daemon is stopping). */
  close(): void {
    if (this.window) clearTimeout(this.window.timer);
    this.window = undefined;
  }
}
