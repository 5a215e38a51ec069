import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GroupTransaction } from '../../src/adapters/sqlite/group-commit.js';

describe('a group commit', () => {
  let db: Database.Database;

  beforeEach(() => {
    db = new Database(':memory:');
    db.pragma('foreign_keys = ON');
    // A deferred foreign key is checked at COMMIT: the one way to make the COMMIT itself fail here.
    db.exec(`CREATE TABLE parent (id INTEGER PRIMARY KEY);
      CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);`);
  });

  afterEach(() => db.close());

  it('times its COMMIT when it succeeds, and when the COMMIT fails, so that a failing disk shows in the commit time', () => {
    const group = new GroupTransaction(db);
    const committed = group.run([() => db.prepare('INSERT INTO parent (id) VALUES (1)').run().changes]);
    expect(committed.outcomes).toEqual([{ ok: true, value: 1 }]);
    expect(committed.commitMs).toBeGreaterThanOrEqual(0);
    expect(group.lastCommitMs).toBe(committed.commitMs);

    expect(() => group.run([() => db.prepare('INSERT INTO child (id, parent_id) VALUES (1, 99)').run()])).toThrow(/FOREIGN KEY/);
    expect(group.lastCommitMs).toBeGreaterThanOrEqual(0);
    expect(db.inTransaction).toBe(false);
    expect(db.prepare('SELECT count(*) FROM child').pluck().get()).toBe(0);
  });

  it('has no commit time for a group refused before its COMMIT', () => {
    const group = new GroupTransaction(db, () => {
      throw new Error('the database file was replaced');
    });
    expect(() => group.run([() => db.prepare('INSERT INTO parent (id) VALUES (2)').run()])).toThrow('replaced');
    expect(group.lastCommitMs).toBeUndefined();
    expect(db.prepare('SELECT count(*) FROM parent').pluck().get()).toBe(0);
  });
});
