import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The reads of one operation that must answer for one moment of the store: a GraphQL query's fields (a job's
 * status beside its events, each event's job) are read by resolvers of their own, each a statement, and a
 * worker's commit could land between two of them. A store that can (PostgreSQL) reads a scope that has begun in
 * one snapshot, taken at its first read and given up at end(); SQLite's reads of one turn share a transaction
 * already (read-snapshot.ts). A scope that has not begun, or has ended, reads as if there were none.
 */
export class ReadScope {
  private begun = false;
  private ended = false;
  private readonly endings: (() => Promise<void>)[] = [];

  /** From here on, reads share one view: the operation reads only (a mutation reads its own writes). */
  begin(): void {
    this.begun = true;
  }

  get open(): boolean {
    return this.begun && !this.ended;
  }

  /** What a store holds for the scope's view (its connection), given up when the scope ends. */
  onEnd(ending: () => Promise<void>): void {
    this.endings.push(ending);
  }

  /** Reads after this are each their own; what the view held is given up. Called again, it does nothing. */
  async end(): Promise<void> {
    this.ended = true;
    await Promise.all(this.endings.splice(0).map((ending) => ending()));
  }
}

const scopes = new AsyncLocalStorage<ReadScope>();

/** Runs `work` in a scope of its own, which ends when `work` does, however it does. */
export async function withReadScope<T>(work: () => Promise<T>): Promise<T> {
  const scope = new ReadScope();
  try {
    return await scopes.run(scope, work);
  } finally {
    await scope.end();
  }
}

/** The scope a read is made in, when that scope shares one view now. */
export function openReadScope(): ReadScope | undefined {
  const scope = scopes.getStore();
  return scope?.open ? scope : undefined;
}

/** The scope the caller runs in, begun or not. */
export const currentReadScope = (): ReadScope | undefined => scopes.getStore();
