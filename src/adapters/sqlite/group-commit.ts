import type Database from 'better-sqlite3';

export type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Group commit. A group of writes runs in one transaction, each in its own savepoint (one that throws is
 * rolled back alone and fails alone), and the group's outcomes are handed back only after the COMMIT, which
 * with `synchronous = FULL` returns once the WAL is on disk. One fsync then serves every write of the group
 * instead of one fsync per write.
 */
export class GroupTransaction {
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

  /** Runs every write (synchronous statements only); throws, with nothing committed, if the transaction itself fails. */
  run(works: readonly (() => unknown)[]): Outcome[] {
    const outcomes: Outcome[] = [];
    this.begin.run();
    try {
      for (const work of works) outcomes.push(this.runItem(work));
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
