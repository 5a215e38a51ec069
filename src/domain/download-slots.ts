import { GatewayError } from './errors.js';

export interface DownloadLimits {
  /** Downloads one workspace may have open at once on this instance. */
  perWorkspace: number;
  /** Downloads this instance serves at once, all workspaces together. */
  perInstance: number;
}

/** What a refused download is told to wait: most downloads finish within seconds. */
export const DOWNLOAD_RETRY_AFTER_SECONDS = 5;

/**
 * Counts the downloads in progress on this instance. A download holds a batch of events and stream buffers for
 * as long as its client keeps the connection open, so their number is bounded, per workspace (one workspace
 * cannot take every slot) and in all. Counted in process: what is bounded is this process's memory.
 */
export class DownloadSlots {
  private readonly open = new Map<string, number>();
  private total = 0;

  constructor(private readonly limits: DownloadLimits) {}

  /**
   * Takes a slot for the workspace, or refuses with RATE_LIMITED. The answer gives the slot back; calling it
   * again does nothing.
   */
  acquire(workspaceId: string): () => void {
    const held = this.open.get(workspaceId) ?? 0;
    if (held >= this.limits.perWorkspace) {
      throw new GatewayError('RATE_LIMITED', `This workspace already has ${held} security event downloads in progress; try again when one has finished`, {
        retryAfterSeconds: DOWNLOAD_RETRY_AFTER_SECONDS,
      });
    }
    if (this.total >= this.limits.perInstance) {
      throw new GatewayError('RATE_LIMITED', 'Too many security event downloads are in progress; try again shortly', {
        retryAfterSeconds: DOWNLOAD_RETRY_AFTER_SECONDS,
      });
    }
    this.open.set(workspaceId, held + 1);
    this.total += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.open.get(workspaceId) ?? 1) - 1;
      if (left === 0) this.open.delete(workspaceId);
      else this.open.set(workspaceId, left);
    };
  }

  /** Downloads in progress on this instance, all workspaces together. */
  get inProgress(): number {
    return this.total;
  }
}
