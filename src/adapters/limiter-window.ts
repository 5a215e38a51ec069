import type { RateLimiterRes } from 'rate-limiter-flexible';

/**
 * The window a limiter counted a call's points in, on the results of the backends' `consume` and `get`: its end
 * (epoch ms on the clock of whatever keeps the window; null for one that never ends), and a way to give points
 * back to it. It gives them back only while it is still the key's current window, and resolves whether it did:
 * points taken in a window that is over are owed by nobody, and given to the next window they would let it hold
 * more than the limit.
 */
export interface LimiterWindow {
  readonly end: number | null;
  giveBack(points: number): Promise<boolean>;
}

/** The window a limiter's result was counted in, when its backend says. */
export const windowOf = (result: RateLimiterRes | null): LimiterWindow | undefined => (result as { window?: LimiterWindow } | null)?.window;

export const inWindow = <T extends RateLimiterRes>(result: T, window: LimiterWindow): T => Object.assign(result, { window });
