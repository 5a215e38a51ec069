import type Database from 'better-sqlite3';

interface Pending {
  work: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Group commit. The writes queued during one turn of the event loop run in one transaction, each in its own
 * savepoint (one that throws is rolled back alone and rejects alone), and all of them resolve only after the
 * COMMIT, which with `synchronous = FULL` returns once the WAL is on disk. One fsync then serves every
 * request that arrived while the previous one ran, instead of one fsync per request.
 */
export class GroupCommit {
  private queue: Pending[] = [];
  private scheduled = false;
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private readonly rollback: Database.Statement;
  private readonly savepoint: Database.Statement;
  private readonly release: Database.Statement;
  private readonly rollbackTo: Database.Statement;

  constructor(private readonly db: Database.Database) {
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    this.savepoint = db.prepare('SAVEPOINT item');
    this.release = db.prepare('RELEASE item');
    this.rollbackTo = db.prepare('ROLLBACK TO item');
  }

  /** Runs `work` (synchronous statements only) in the next group; resolves with its result once committed. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // After the I/O of this turn: every request read in it joins the group.
        setImmediate(() => this.flush());
      }
    });
  }

  /** Resolves once every write queued so far has settled. */
  async drain(): Promise<void> {
    while (this.scheduled) await new Promise((resolve) => setImmediate(resolve));
  }

  private flush(): void {
    this.scheduled = false;
    const group = this.queue;
    this.queue = [];
    let outcomes: Outcome[];
    try {
      outcomes = this.transaction(group);
    } catch (error) {
      for (const item of group) item.reject(error);
      return;
    }
    group.forEach((item, index) => {
      const outcome = outcomes[index];
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.error);
    });
  }

  private transaction(group: Pending[]): Outcome[] {
    const outcomes: Outcome[] = [];
    this.begin.run();
    try {
      for (const item of group) outcomes.push(this.runItem(item.work));
      this.commit.run();
    } catch (error) {
      if (this.db.inTransaction) this.rollback.run();
      throw error;
    }
    return outcomes;
  }

  private runItem(work: () => unknown): Outcome {
    this.savepoint.run();
    try {
      const value = work();
      this.release.run();
      return { ok: true, value };
    } catch (error) {
      this.rollbackTo.run();
      this.release.run();
      return { ok: false, error };
    }
  }
}
