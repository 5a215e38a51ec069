import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { UpstreamPause } from '../domain/ports.js';

/**
 * Paces upstream calls for the gateway as a whole: every instance takes its slots from the same limiter,
 * so when the limiter lives in a shared store (Redis, PostgreSQL) all instances together stay under the limit.
 */
export class UpstreamPacer implements UpstreamPause {
  private readonly key = 'duplicate';
  /**
   * Set, in the same limiter, while a hold the upstream asked for may last. The window's own key cannot say it:
   * a window merely spent, with more calls refused since, counts past the limit as a hold does. Its points are
   * how many ms it outlasts that hold (it lasts whole seconds), so that it names the hold's end to the ms.
   */
  private readonly pausedKey = 'paused';
  /** Written by `probe`, away from the keys that pace. */
  private readonly probeKey = 'probe';

  /**
   * The longest a hold or mark lasts as this version writes them: a 429's longest time, or the window when longer,
   * in whole seconds. Earlier versions followed a 429 for up to a day, and wrote that hold here, where it outlives
   * their upgrade.
   */
  private readonly longestMs: number;

  /** `longestPauseMs`: the longest time of a 429's that is followed (see `maxWait` in braze-client.ts). */
  constructor(
    private readonly limiter: RateLimiterAbstract,
    longestPauseMs: number,
    private readonly logger?: PacerLogger,
  ) {
    this.longestMs = blockSeconds(Math.max(longestPauseMs, limiter.duration * 1000)) * 1000;
  }

  /**
   * Takes a slot: 0 when granted, otherwise how long until the next one. Rejects when the limiter's store fails.
   * `clearStale`: false for the try after a stale hold was cleared, so a store that keeps one cannot loop it.
   */
  async take(clearStale = true): Promise<number> {
    try {
      await this.limiter.consume(this.key);
      return 0;
    } catch (rejection) {
      // rate-limiter-flexible rejects with a RateLimiterRes when the window is spent, with an Error when its store fails.
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      if (clearStale && (await this.clearedStale(rejection))) return this.take(false);
      return Math.max(1, rejection.msBeforeNext);
    }
  }

  /**
   * Resolves when the limiter's store runs the command `take` sends, on a key of its own (no slot is taken); rejects
   * when it does not, as `take` then does. A read cannot stand in for it: a read-only Redis replica answers reads.
   */
  async probe(): Promise<void> {
    try {
      await this.limiter.consume(this.probeKey);
    } catch (rejection) {
      // The probe's own window spent is an answer too.
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
    }
  }

  /**
   * The upstream said its own window is spent: no instance sends anything before `ms` have passed (0 when the
   * upstream gave no time), nor before the current window ends. Blocking replaces the window, and a block shorter
   * than what is left of it would open a fresh one early, with every slot free again. Resolves to how long
   * sending is held back.
   */
  async pause(ms: number): Promise<number> {
    let current = await this.limiter.get(this.key);
    if (await this.clearedStale(current)) current = null;
    let heldMs: number;
    if (current && current.consumedPoints > this.limiter.points && current.msBeforeNext >= ms) {
      heldMs = current.msBeforeNext;
    } else {
      const windowLeft = current && current.msBeforeNext > 0 ? current.msBeforeNext : 0;
      // With neither a time from the upstream nor a window under way, the window a call would open now is the one to wait out.
      const holdMs = ms > 0 || windowLeft > 0 ? Math.max(ms, windowLeft) : this.limiter.duration * 1000;
      const seconds = blockSeconds(holdMs);
      await this.limiter.block(this.key, seconds);
      heldMs = seconds * 1000;
    }
    const marked = await this.limiter.get(this.pausedKey);
    if (!marked || markedHoldMs(marked) < heldMs) {
      const seconds = blockSeconds(heldMs);
      await this.limiter.set(this.pausedKey, seconds * 1000 - heldMs, seconds);
    }
    return heldMs;
  }

  /**
   * What is left of the hold the upstream asked for, read from the shared limiter, so a pause another instance met
   * counts here too. A window that is only spent is no pause: the gateway's own pace, not the upstream's word.
   */
  async remainingMs(): Promise<number> {
    // The mark first: the hold, read after, can only seem to end earlier than it does next to the mark.
    const marked = await this.limiter.get(this.pausedKey);
    if (!marked) return 0;
    const hold = await this.limiter.get(this.key);
    if (await this.clearedStale(marked, hold)) return 0;
    if (!hold || hold.consumedPoints <= this.limiter.points) return 0;
    // A hold ending after the marked one is a window opened since the pause, and spent by the gateway's own pace.
    return hold.msBeforeNext <= markedHoldMs(marked) ? Math.max(0, hold.msBeforeNext) : 0;
  }

  /**
   * Clears the hold and its mark when either lasts longer than this version writes them: an earlier version's, which
   * would hold every upstream call for up to a day after the upgrade. True when it did. Of the instances that find
   * it at once, the one whose delete removed it says so.
   */
  private async clearedStale(...records: (RateLimiterRes | null)[]): Promise<boolean> {
    const heldMs = Math.max(0, ...records.map((record) => record?.msBeforeNext ?? 0));
    if (heldMs <= this.longestMs) return false;
    const removed = await Promise.all([this.limiter.delete(this.key), this.limiter.delete(this.pausedKey)]);
    if (removed.includes(true)) {
      this.logger?.warn(
        { heldMs, longestMs: this.longestMs },
        'cleared an upstream pause longer than this version holds one, written by an earlier version; upstream calls resume',
      );
    }
    return true;
  }
}

export interface PacerLogger {
  warn(object: object, message: string): void;
}

/** Whole seconds covering `ms`, at least one: the limiter keeps whole seconds, and a block of 0 never ends. */
const blockSeconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/** What was left, when read, of the hold the pause mark was written for. */
const markedHoldMs = (marked: RateLimiterRes): number => marked.msBeforeNext - marked.consumedPoints;
