/** A place among the connections of an instance that wait, on the server, for an event lock. */
export interface EventLockTurn {
  /** Gives the place up, to the transaction parked longest that may have it. Once; again does nothing. */
  release(): void;
}

interface Parked {
  workspaceId: string;
  handOver(turn: EventLockTurn): void;
}

/**
 * How many of an instance's connections may wait at once for the workspaces' event locks (store.ts): so many for
 * one workspace, so many in all. Every write of a workspace takes its lock, each on a pooled connection of its own,
 * so a transaction that kept it (an instance frozen in the middle of a write) held up the workspace's writes on
 * every connection they had: 30 accepts of one workspace took all 10 of an instance's, with its other workspaces and
 * its readiness; an instance frozen with several workspaces' locks, each workspace's up to its own bound. Past the
 * bounds a write that cannot have the lock at once rolls back, giving its connection back, and parks here until a
 * turn is handed to it, first come first served.
 */
export class EventLockWaits {
  private readonly waiting = new Map<string, number>();
  private waitingInAll = 0;
  private readonly parked: Parked[] = [];

  constructor(
    readonly perWorkspace: number,
    readonly inAll: number,
  ) {}

  /** A turn now, if fewer than the bounds wait for the workspace's lock and for all; otherwise null. */
  take(workspaceId: string): EventLockTurn | null {
    if (!this.free(workspaceId)) return null;
    return this.turn(workspaceId);
  }

  /** A turn as soon as one is free, in the order asked for; null if none is within `ms`. */
  next(workspaceId: string, ms: number): Promise<EventLockTurn | null> {
    const now = this.take(workspaceId);
    if (now !== null) return Promise.resolve(now);
    return new Promise((resolve) => {
      const parked: Parked = {
        workspaceId,
        handOver: (turn) => {
          clearTimeout(timer);
          resolve(turn);
        },
      };
      const timer = setTimeout(() => {
        this.parked.splice(this.parked.indexOf(parked), 1);
        resolve(null);
      }, ms);
      this.parked.push(parked);
    });
  }

  /** The turns out (handed over included) and the writes parked, for all workspaces. */
  counts(): { waiting: number; parked: number } {
    return { waiting: this.waitingInAll, parked: this.parked.length };
  }

  private free(workspaceId: string): boolean {
    return this.waitingInAll < this.inAll && (this.waiting.get(workspaceId) ?? 0) < this.perWorkspace;
  }

  private turn(workspaceId: string): EventLockTurn {
    this.waiting.set(workspaceId, (this.waiting.get(workspaceId) ?? 0) + 1);
    this.waitingInAll += 1;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const left = (this.waiting.get(workspaceId) as number) - 1;
        if (left === 0) this.waiting.delete(workspaceId);
        else this.waiting.set(workspaceId, left);
        this.waitingInAll -= 1;
        const next = this.parked.findIndex((parked) => this.free(parked.workspaceId));
        if (next === -1) return;
        const [parked] = this.parked.splice(next, 1);
        parked.handOver(this.turn(parked.workspaceId));
      },
    };
  }
}
