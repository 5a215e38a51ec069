import Database from 'better-sqlite3';

/** A connection with the settings every connection of the embedded store shares; `readonly` for one that only reads. */
export function openConnection(filename: string, { readonly = false } = {}): Database.Database {
  const db = new Database(filename, { readonly });
  // A read-only connection cannot change the journal mode: it finds WAL on, set by the store's first connection.
  if (!readonly) db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  return db;
}

/**
 * A parameter as the whole of a LIMIT or OFFSET lets SQLite plan with its value, so the statement is compiled
 * again every time it is bound, which doubles the cost of a short query. `LIMIT +?` keeps one plan.
 */
const BARE_LIMIT_PARAMETER = /\b(?:LIMIT|OFFSET)\s+[?@:$]/i;

/** Prepared statements by SQL text, prepared once per connection. */
export class Statements {
  private readonly cache = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  get(text: string): Database.Statement {
    let statement = this.cache.get(text);
    if (!statement) {
      if (BARE_LIMIT_PARAMETER.test(text)) throw new Error(`Write LIMIT +? rather than LIMIT ? (it is re-planned at every call): ${text}`);
      statement = this.db.prepare(text);
      this.cache.set(text, statement);
    }
    return statement;
  }
}
