import type Database from 'better-sqlite3';

export type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** A group's outcomes, and how long its COMMIT took (the WAL's write and fsync): what a slow disk shows in first. */
export interface GroupOutcome {
  outcomes: Outcome[];
  commitMs: number;
}

/**
 * Group commit. A group of writes runs in one transaction and the group's outcomes are handed back only after
 * the COMMIT, which with `synchronous = FULL` returns once the WAL is on disk. One fsync then serves every
 * write of the group instead of one fsync per write. A write that throws fails alone: the group is rolled
 * back and run again with each write in its own savepoint, so the failing one is undone without the others.
 * Savepoints are kept for that second run because each copies every page its write touches (about a quarter
 * of the cost of a write), and writes almost never fail. Writes are plain statements over the database and
 * their arguments, so running one again gives the same result. Some errors (SQLITE_FULL, SQLITE_IOERR) make
 * SQLite roll back the whole transaction, savepoints included: then every write of the group has failed,
 * with that error.
 */
export class GroupTransaction {
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private readonly rollback: Database.Statement;
  private readonly savepoint: Database.Statement;
  private readonly release: Database.Statement;
  private readonly rollbackTo: Database.Statement;
  /**
   * How long the last group's COMMIT took, whether it succeeded or failed; undefined when that group failed before
   * its COMMIT. A commit that ends in an I/O error after a slow fsync is what a failing disk looks like first.
   */
  lastCommitMs: number | undefined;

  /** `beforeCommit` may refuse the group by throwing: nothing of it is committed, and every write fails with that error. */
  constructor(
    private readonly db: Database.Database,
    private readonly beforeCommit: () => void = () => undefined,
  ) {
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    this.savepoint = db.prepare('SAVEPOINT item');
    this.release = db.prepare('RELEASE item');
    this.rollbackTo = db.prepare('ROLLBACK TO item');
  }

  /** Runs every write (synchronous statements only); throws, with nothing committed, if the transaction itself fails. */
  run(works: readonly (() => unknown)[]): GroupOutcome {
    this.lastCommitMs = undefined;
    this.begin.run();
    try {
      let outcomes: Outcome[];
      try {
        outcomes = works.map((work): Outcome => ({ ok: true, value: work() }));
      } catch {
        if (this.db.inTransaction) this.rollback.run();
        this.begin.run();
        outcomes = works.map((work) => this.runItem(work));
      }
      this.beforeCommit();
      const committing = performance.now();
      try {
        this.commit.run();
      } finally {
        this.lastCommitMs = performance.now() - committing;
      }
      return { outcomes, commitMs: this.lastCommitMs };
    } catch (error) {
      if (this.db.inTransaction) this.rollback.run();
      throw error;
    }
  }

  private runItem(work: () => unknown): Outcome {
    this.savepoint.run();
    try {
      const value = work();
      this.release.run();
      return { ok: true, value };
    } catch (error) {
      if (!this.db.inTransaction) throw error;
      this.rollbackTo.run();
      this.release.run();
      return { ok: false, error };
    }
  }
}
