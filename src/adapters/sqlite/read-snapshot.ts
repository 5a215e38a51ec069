import type Database from 'better-sqlite3';

/**
 * The reads of one turn of the event loop share one read transaction. Outside a transaction each statement
 * opens and closes its own, taking and dropping the WAL read lock with two system calls, which cost as much
 * as a short query itself. The transaction ends when the turn does, and before the answers of the writer
 * thread are handed out, so a write is visible to every read made after it resolved.
 */
export class ReadSnapshot {
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private readonly rollback: Database.Statement;
  private open = false;
  private begun = 0;

  constructor(private readonly db: Database.Database) {
    this.begin = db.prepare('BEGIN');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
  }

  /** Before a read: joins the turn's transaction, or starts it. Reads given the same number see the same data. */
  enter(): number {
    if (!this.open) {
      this.begin.run();
      this.open = true;
      this.begun += 1;
      setImmediate(this.end);
    }
    return this.begun;
  }

  readonly end = (): void => {
    if (!this.open) return;
    this.open = false;
    if (!this.db.open || !this.db.inTransaction) return;
    try {
      this.commit.run();
    } catch {
      // A read transaction has nothing to keep, and this runs outside any request (at the end of a turn), where a
      // throw would end the process: what made it fail (a damaged file) fails the next read again, and is reported there.
      if (this.db.inTransaction) this.rollback.run();
    }
  };
}
