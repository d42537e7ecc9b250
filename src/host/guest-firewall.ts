/**
 * The daemon's nftables table (src/isolation/firewall-rules.ts says what is in it): installed
 * while any of its VMs may run, replaced atomically, watched, and removed with the last VM.
 *
 * Watched because root can remove it behind the daemon's back (`nft flush ruleset`, a firewall
 * reload): every WATCH_MS the table is listed and compared with what was installed, and the
 * host's nameservers are read again (slirp forwards a guest's DNS to them); a difference is
 * logged and the table put back. The QEMUs outlive the daemon (KillMode=process), so the table
 * is left in place when the daemon stops with VMs running; the next start replaces it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { firewallTableName, type GuestFirewallSpec, guestFirewallScript, resolvConfNameservers } from '../isolation/firewall-rules.js';

const WATCH_MS = 2_000;
const NFT_TIMEOUT_MS = 10_000;
const RESOLV_CONF = '/etc/resolv.conf';

export class FirewallError extends Error {
  override name = 'FirewallError';
}

/** Runs nft with `args`, `input` on its stdin; resolves its stdout, rejects with its stderr. */
export function runNft(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', args, { timeout: NFT_TIMEOUT_MS, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const why = code === 'ENOENT' ? 'nft is not installed (Debian: apt-get install nftables)' : (stderr.trim().split('\n')[0] ?? err.message) || err.message;
        reject(new FirewallError(why));
      } else resolve(stdout);
    });
    // nft may exit before it reads its input (a parse error): that is its stderr's to say.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

export function tableNameFor(stateDir: string): string {
  let real = stateDir;
  try {
    real = fs.realpathSync(stateDir);
  } catch {
    /* made later; the spelling given is stable enough */
  }
  return firewallTableName(real, (t) => createHash('sha256').update(t).digest('hex'));
}

export function hostNameservers(): string[] {
  try {
    return resolvConfNameservers(fs.readFileSync(RESOLV_CONF, 'utf8'));
  } catch {
    return [];
  }
}

/** For a one-off use of the table (check, the firewall command): no watch, nothing to log. */
export const QUIET_LOG = { info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;

export class GuestFirewall {
  readonly table: string;
  /**
   * `nft list table` of what was installed last, to notice a change made behind our back;
   * undefined while the table is not (known to be) in place. Listed after the install returns:
   * the caller (a CreateVm, the start before the port opens) waits for one nft, not two.
   */
  private installed: Promise<string | undefined> | undefined;
  /** Whether the table should be in place (VMs may run): the watch puts it back while it is. */
  private wanted = false;
  private nameservers: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  /** Installs and removals one after another: a removal decided on "no VM left" never races a CreateVm. */
  private serial: Promise<unknown> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly base: Omit<GuestFirewallSpec, 'table' | 'nameservers'>,
    private readonly log: Logger,
  ) {
    this.table = tableNameFor(stateDir);
  }

  private inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serial.then(fn, fn);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Installs (or replaces) the table; the watch starts with it. Throws FirewallError. */
  install(): Promise<void> {
    return this.inTurn(() => this.installNow());
  }

  private async installNow(): Promise<void> {
    this.wanted = true;
    this.watch();
    this.nameservers = hostNameservers();
    await runNft(['-f', '-'], guestFirewallScript({ ...this.base, table: this.table, nameservers: this.nameservers }));
    const listed = this.listing();
    this.installed = listed;
    // Not listed: as if not in place, so the next CreateVm or look installs it again.
    void listed.then((text) => {
      if (text === undefined && this.installed === listed) this.installed = undefined;
    });
  }

  /** Installs the table unless it is already in place (before each QEMU starts). */
  ensure(): Promise<void> {
    return this.inTurn(async () => {
      if (this.installed === undefined) await this.installNow();
    });
  }

  /** Removes the table if `unused()` still says so when its turn comes (the last VM is gone). */
  removeIf(unused: () => boolean): Promise<boolean> {
    return this.inTurn(async () => {
      if (!unused()) return false;
      this.stopWatching();
      this.wanted = false;
      this.installed = undefined;
      await runNft(['-f', '-'], `table inet ${this.table}\ndelete table inet ${this.table}\n`);
      return true;
    });
  }

  /** The table as nft lists it, or undefined when there is none. */
  async listing(): Promise<string | undefined> {
    try {
      return await runNft(['list', 'table', 'inet', this.table]);
    } catch {
      return undefined;
    }
  }

  stopWatching(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private watch(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.check(), WATCH_MS);
    this.timer.unref();
  }

  /** One look: the table as installed, for the nameservers of now; put back if not. */
  async check(): Promise<void> {
    if (this.checking || !this.wanted) return;
    this.checking = true;
    try {
      const ns = hostNameservers();
      const now = await this.listing();
      const was = await this.installed;
      if (!this.wanted) return; // removed meanwhile, on purpose
      let why: string | undefined;
      if (was === undefined) why = 'the table could not be put back before';
      else if (now === undefined) why = 'the table was removed';
      else if (now !== was) why = 'the table was changed';
      else if (ns.join(' ') !== this.nameservers.join(' ')) why = `the host's nameservers changed (${ns.join(', ') || 'none'})`;
      if (!why) return;
      if (why.startsWith('the table was')) this.log.warn({ table: this.table }, `${why} behind the manager's back: putting it back (guests' connections to the host are refused again)`);
      else if (why.startsWith('the host')) this.log.info({ table: this.table, nameservers: ns }, `${why}: the guest firewall follows`);
      // Unless it was removed on purpose meanwhile (the last VM went).
      await this.inTurn(async () => {
        if (!this.wanted) return;
        try {
          await this.installNow();
        } catch (err) {
          // Not in place: tried again at the next look, and by the next CreateVm before its QEMU starts.
          this.installed = undefined;
          throw err;
        }
      });
    } catch (err) {
      this.log.error({ table: this.table, err: String(err) }, 'could not put the guest firewall back: guests may reach the host until it is (retried every 2 s; no VM starts without it)');
    } finally {
      this.checking = false;
    }
  }
}
