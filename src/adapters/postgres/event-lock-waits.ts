/** A place among the connections of an instance that wait, on the server, for a workspace's event lock. */
export interface EventLockTurn {
  /** Gives the place up, to the transaction parked longest if there is one. Once; again does nothing. */
  release(): void;
}

interface WorkspaceWaits {
  /** Turns given out and not yet released, handed-over ones included. */
  waiting: number;
  /** The transactions waiting for a turn, first come first served. */
  parked: Array<(turn: EventLockTurn) => void>;
}

/**
 * How many of an instance's connections may wait at once for each workspace's event lock (store.ts). Every write of a
 * workspace takes that lock, each on a pooled connection of its own, so a transaction that kept it (an instance frozen
 * in the middle of a write) held up the workspace's writes on every connection they had: 30 accepts of one workspace
 * took all 10 of an instance's, with its other workspaces and its readiness. Past the bound a write that cannot have
 * the lock at once rolls back, giving its connection back, and parks here until a turn is handed to it.
 */
export class EventLockWaits {
  private readonly workspaces = new Map<string, WorkspaceWaits>();

  constructor(readonly perWorkspace: number) {}

  /** A turn now, if fewer than the bound wait for the workspace's lock; otherwise null. */
  take(workspaceId: string): EventLockTurn | null {
    const waits = this.workspaces.get(workspaceId) ?? { waiting: 0, parked: [] };
    if (waits.waiting >= this.perWorkspace) return null;
    waits.waiting += 1;
    this.workspaces.set(workspaceId, waits);
    return this.turn(workspaceId, waits);
  }

  /** A turn as soon as one is free, in the order asked for; null if none is within `ms`. */
  next(workspaceId: string, ms: number): Promise<EventLockTurn | null> {
    const now = this.take(workspaceId);
    if (now !== null) return Promise.resolve(now);
    const waits = this.workspaces.get(workspaceId) as WorkspaceWaits;
    return new Promise((resolve) => {
      const handOver = (turn: EventLockTurn) => {
        clearTimeout(timer);
        resolve(turn);
      };
      const timer = setTimeout(() => {
        waits.parked.splice(waits.parked.indexOf(handOver), 1);
        resolve(null);
      }, ms);
      waits.parked.push(handOver);
    });
  }

  private turn(workspaceId: string, waits: WorkspaceWaits): EventLockTurn {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const parked = waits.parked.shift();
        if (parked !== undefined) parked(this.turn(workspaceId, waits));
        else if (--waits.waiting === 0) this.workspaces.delete(workspaceId);
      },
    };
  }
}
