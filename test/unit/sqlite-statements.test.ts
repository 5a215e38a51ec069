import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Statements } from '../../src/adapters/sqlite/connection.js';

describe('SQLite statements', () => {
  let db: Database.Database;
  let sql: Statements;

  beforeEach(() => {
    db = new Database(':memory:');
    db.exec('CREATE TABLE numbers (n INTEGER PRIMARY KEY); INSERT INTO numbers VALUES (1), (2), (3), (4)');
    sql = new Statements(db);
  });
  afterEach(() => db.close());

  it('refuses a parameter as the whole LIMIT or OFFSET, which SQLite would re-plan at every call', () => {
    for (const text of ['SELECT n FROM numbers LIMIT ?', 'SELECT n FROM numbers LIMIT @first', 'SELECT n FROM numbers LIMIT 2 OFFSET :skip']) {
      expect(() => sql.get(text)).toThrow(/LIMIT \+\?/);
    }
  });

  it('takes the limit as +parameter, and literal limits', () => {
    expect(sql.get('SELECT n FROM numbers ORDER BY n DESC LIMIT +?').all(2)).toEqual([{ n: 4 }, { n: 3 }]);
    expect(sql.get('SELECT n FROM numbers ORDER BY n LIMIT +@first OFFSET +@skip').all({ first: 1, skip: 2 })).toEqual([{ n: 3 }]);
    expect(sql.get('SELECT n FROM numbers ORDER BY n LIMIT 1').get()).toEqual({ n: 1 });
  });

  it('prepares each text once', () => {
    expect(sql.get('SELECT n FROM numbers WHERE n = ?')).toBe(sql.get('SELECT n FROM numbers WHERE n = ?'));
  });
});
