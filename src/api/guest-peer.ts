/**
 * The guard between guests and the API: a connection whose peer is a supervised QEMU (a guest
 * speaking through QEMU's user-mode network, which makes the host's loopback reachable at
 * 10.0.2.2) is refused. Attributed once per connection and cached on the socket; refusals are
 * logged with the VM's id, at most one line per VM per window.
 */
import type net from 'node:net';
import type { Logger } from 'pino';

export interface Endpoint {
  address: string;
  port: number;
}

/** Who holds the peer's end (src/vm/socket-owner.ts finds out). */
export type PeerAttribution =
  | { kind: 'guest'; vmId: string; pid: number }
  | { kind: 'guest-user'; uid: number }
  | { kind: 'remote' }
  | { kind: 'host' }
  | { kind: 'unattributed'; reason: string }
  | { kind: 'gone'; reason: string };

export type AttributePeer = (peer: Endpoint, self: Endpoint) => Promise<PeerAttribution>;

export interface PeerVerdict {
  refuse: boolean;
  /** The VM whose guest is calling, when it is one. */
  vmId?: string;
  /** Why, for the log and for the refused caller. */
  reason: string;
}

export interface GuestPeerSettings {
  refuse: boolean;
  refuseUnattributed: boolean;
}

const ALLOWED: PeerVerdict = { refuse: false, reason: 'not a guest' };
/** Nothing can be served on a closed connection; refused, so a closed socket never counts as a host's. */
const CLOSED: PeerVerdict = { refuse: true, reason: 'the connection closed before it was attributed' };

/** What `check` and the start-up log say about the mode in force. */
export function describeGuestPeerMode(s: GuestPeerSettings): string {
  if (!s.refuse) return 'off: calls from guests (through 10.0.2.2) are served (MANAGER_REFUSE_GUEST_CALLS=false)';
  return s.refuseUnattributed
    ? 'strict: calls from supervised QEMUs are refused, and so are local peers that cannot be attributed'
    : 'on: calls from supervised QEMUs are refused (under sudo, every call of the user QEMU runs as); local peers that cannot be attributed are served';
}

export class GuestPeerGate {
  private readonly verdicts = new WeakMap<object, Promise<PeerVerdict>>();
  private readonly logged = new Map<string, { at: number; suppressed: number }>();
  /** Attributions run one at a time, each after a turn of the event loop (see decide()). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly settings: GuestPeerSettings,
    private readonly attribute: AttributePeer,
    private readonly log: Logger,
    private readonly logWindowMs = 10_000,
  ) {}

  /** The verdict of the connection `socket`, computed on first use and kept for its life. */
  verdictFor(socket: net.Socket): Promise<PeerVerdict> {
    let v = this.verdicts.get(socket);
    if (!v) {
      v = this.decide(socket);
      this.verdicts.set(socket, v);
    }
    return v;
  }

  private async decide(socket: net.Socket): Promise<PeerVerdict> {
    if (!this.settings.refuse) return ALLOWED;
    const { remoteAddress, remotePort, localAddress, localPort } = socket;
    // The gate guards TCP listeners only: a connection without addresses was reset by its peer
    // before it was accepted (a guest that sent a whole call and reset at once). Nobody can
    // say whose it was, so it is refused: its queued bytes are never read.
    if (!remoteAddress || remotePort === undefined || !localAddress || localPort === undefined) {
      return { refuse: true, reason: 'the peer reset the connection before it could be attributed' };
    }
    // One at a time, each after a turn of the event loop: a guest that floods the port with
    // connections delays new connections' verdicts, not the calls of connections already open.
    // A connection closed before its turn (the verdict deadline, src/api/connection-guard.ts)
    // is not attributed: a flood's queue drains without a look at /proc for each.
    const run = this.queue.then(
      () => new Promise<void>((r) => setImmediate(r)),
    ).then(() => (socket.destroyed ? undefined : this.attribute({ address: remoteAddress, port: remotePort }, { address: localAddress, port: localPort })));
    this.queue = run.catch(() => undefined);
    let who: PeerAttribution | undefined;
    try {
      who = await run;
    } catch (err) {
      who = { kind: 'unattributed', reason: `attribution failed: ${String(err)}` };
    }
    if (who === undefined) return CLOSED;
    switch (who.kind) {
      case 'guest':
        return { refuse: true, vmId: who.vmId, reason: who.pid > 0 ? `the caller is the guest of VM ${who.vmId} (through QEMU pid ${who.pid})` : `the caller is the guest of VM ${who.vmId} (its socket belongs to that VM's user)` };
      case 'gone':
        // While VMs run, a peer nobody can vouch for is refused (the send-then-reset attack).
        return { refuse: true, reason: `local peer gone before it could be attributed: ${who.reason}` };
      case 'guest-user':
        // Fail closed: the VM cannot be named (its QEMU's descriptors are another user's), but
        // only QEMU runs as this user.
        return { refuse: true, reason: `the caller's socket belongs to uid ${who.uid}, a user only QEMU runs as (MANAGER_VM_UID_RANGE, or MANAGER_QEMU_SUDO_USER under sudo): the guest of some VM` };
      case 'unattributed':
        if (this.settings.refuseUnattributed) return { refuse: true, reason: `local peer not attributable: ${who.reason} (MANAGER_REFUSE_UNATTRIBUTED_LOCAL_PEERS=true)` };
        this.rateLimited(`unattributed`, (suppressed) =>
          this.log.warn({ peer: `${remoteAddress}:${remotePort}`, reason: who.reason, suppressed }, 'a local caller could not be told apart from a guest and was served; set MANAGER_REFUSE_UNATTRIBUTED_LOCAL_PEERS=true to refuse such callers'),
        );
        return ALLOWED;
      default:
        if (this.log.isLevelEnabled('debug')) this.log.debug({ peer: `${remoteAddress}:${remotePort}`, kind: who.kind }, 'caller attributed');
        return ALLOWED;
    }
  }

  /** Logs a refusal, at most once per VM per window (with the number left out since). */
  refused(verdict: PeerVerdict, api: 'grpc' | 'http', what: string): void {
    this.rateLimited(verdict.vmId ?? 'unattributed-refused', (suppressed) =>
      this.log.warn({ cvm_id: verdict.vmId ?? null, api, call: what, reason: verdict.reason, suppressed_since_last: suppressed }, 'call from a guest refused'),
    );
  }

  private rateLimited(key: string, emit: (suppressed: number) => void): void {
    const now = Date.now();
    const entry = this.logged.get(key);
    if (entry && now - entry.at < this.logWindowMs) {
      entry.suppressed++;
      return;
    }
    emit(entry?.suppressed ?? 0);
    this.logged.set(key, { at: now, suppressed: 0 });
    // Forget VMs not seen for a while (removed VMs leave no entry behind).
    if (this.logged.size > 1024) for (const [k, e] of this.logged) if (now - e.at >= this.logWindowMs) this.logged.delete(k);
  }
}
