import { GatewayError } from './errors.js';
import { systemClock, type Clock } from './ports.js';

export interface DownloadLimits {
  /** Downloads one workspace may have open at once on this instance. */
  perWorkspace: number;
  /** Downloads this instance serves at once, all workspaces together. */
  perInstance: number;
}

/** What a refused download is told to wait: most downloads finish within seconds. */
const DOWNLOAD_RETRY_AFTER_SECONDS = 5;

/**
 * How long a download's client must have taken nothing before a new download by the same key may take its slot: a
 * client whose connection was lost retries with the same key, while the old download keeps the slot until the
 * minimum rate ends it, which can be many minutes.
 */
export const DOWNLOAD_REPLACEABLE_AFTER_MS = 10_000;

/** How the slots see a download's client and end its download. */
export interface DownloadClient {
  /** Bytes the download's connection has accepted so far. */
  taken(): number;
  /** Ends the download as one cut short. */
  cut(): void;
}

/** A download slot held. */
export interface DownloadSlot {
  /** Gives the slot back; calling it again, or after the slot went to a newer download, does nothing. */
  release(): void;
  /** Once the download is sent: lets a new download by the same key take the slot when this one's client stalls. */
  watch(client: DownloadClient): void;
}

interface Holder {
  keyId: string;
  released: boolean;
  client?: DownloadClient;
  /** What the client had taken when last looked at, and when that was first seen. */
  taken: number;
  takenSince: number;
}

/**
 * Counts the downloads in progress on this instance. A download holds a batch of events and stream buffers for
 * as long as its client keeps the connection open, so their number is bounded, per workspace (one workspace
 * cannot take every slot) and in all. Counted in process: what is bounded is this process's memory.
 */
export class DownloadSlots {
  private readonly open = new Map<string, Set<Holder>>();
  private total = 0;

  constructor(
    private readonly limits: DownloadLimits,
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * Takes a slot for the workspace, or refuses with RATE_LIMITED. When the workspace's slots are all held and one
   * is held by a download of the same key whose client has taken nothing for DOWNLOAD_REPLACEABLE_AFTER_MS, that
   * download is cut and this one takes its slot; another key's download is never cut.
   */
  acquire(workspaceId: string, keyId: string): DownloadSlot {
    const holders = this.open.get(workspaceId) ?? new Set<Holder>();
    const holder: Holder = { keyId, released: false, taken: 0, takenSince: 0 };
    if (holders.size >= this.limits.perWorkspace) {
      const stalled = this.stalledHolder(holders, keyId);
      if (!stalled) {
        throw new GatewayError('RATE_LIMITED', `This workspace already has ${holders.size} security event downloads in progress; try again when one has finished`, {
          retryAfterSeconds: DOWNLOAD_RETRY_AFTER_SECONDS,
        });
      }
      // The slot changes hands at once: the cut download's own release, when its stream closes, does nothing.
      stalled.released = true;
      holders.delete(stalled);
      holders.add(holder);
      stalled.client!.cut();
      return this.slot(workspaceId, holders, holder);
    }
    if (this.total >= this.limits.perInstance) {
      throw new GatewayError('RATE_LIMITED', 'Too many security event downloads are in progress; try again shortly', {
        retryAfterSeconds: DOWNLOAD_RETRY_AFTER_SECONDS,
      });
    }
    holders.add(holder);
    this.open.set(workspaceId, holders);
    this.total += 1;
    return this.slot(workspaceId, holders, holder);
  }

  /** Downloads in progress on this instance, all workspaces together. */
  get inProgress(): number {
    return this.total;
  }

  /**
   * The key's download whose client has taken nothing for long enough, if any. What each client has taken is looked
   * at only here: a change seen now counts as taken now, so a download is never judged idle for longer than it was.
   */
  private stalledHolder(holders: Set<Holder>, keyId: string): Holder | undefined {
    const now = this.clock.now().getTime();
    for (const holder of holders) {
      if (holder.keyId !== keyId || !holder.client) continue;
      const taken = holder.client.taken();
      if (taken !== holder.taken) {
        holder.taken = taken;
        holder.takenSince = now;
      } else if (now - holder.takenSince >= DOWNLOAD_REPLACEABLE_AFTER_MS) {
        return holder;
      }
    }
    return undefined;
  }

  private slot(workspaceId: string, holders: Set<Holder>, holder: Holder): DownloadSlot {
    return {
      release: () => {
        if (holder.released) return;
        holder.released = true;
        this.total -= 1;
        holders.delete(holder);
        if (holders.size === 0) this.open.delete(workspaceId);
      },
      watch: (client) => {
        holder.client = client;
        holder.taken = client.taken();
        holder.takenSince = this.clock.now().getTime();
      },
    };
  }
}
