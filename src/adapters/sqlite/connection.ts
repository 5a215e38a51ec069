import Database from 'better-sqlite3';

/**
 * What the -wal file is cut back to once a checkpoint has copied it in and a write starts it over: about the 1,000
 * pages (4 MiB) at which SQLite checkpoints on its own, the size the WAL keeps to under steady writes. A burst (a
 * large group commit, a retention pass, writes while a long read held the checkpoint back) grows the file past that,
 * and SQLite otherwise keeps it at its largest for the life of the connection.
 */
export const WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024;

/** How long a connection waits for another's lock on the store before it fails with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

/** A connection with the settings every connection of the embedded store shares; `readonly` for one that only reads. */
export function openConnection(filename: string, { readonly = false } = {}): Database.Database {
  const db = new Database(filename, { readonly });
  // A read-only connection cannot change the journal mode: it finds WAL on, set by the store's first connection.
  if (!readonly) {
    db.pragma('journal_mode = WAL');
    // Per connection, and applied by the one that writes: the writer thread's, and the owner's that migrates.
    db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    // Deleted rows (pruned events with their addresses, idempotency keys, request ids) are overwritten with zeros
    // rather than left readable in free space. FAST would zero them only in pages still in use, not in the whole
    // pages a pruner's batch frees; ON cost the pruner and accepted requests nothing measurable.
    db.pragma('secure_delete = ON');
  }
  db.pragma('foreign_keys = ON');
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
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
