import Database from 'better-sqlite3';

/**
 * Versioned schema. Each entry runs once, in order, in its own transaction; the applied version is kept in
 * `PRAGMA user_version`. Times are epoch milliseconds; JSON columns hold arrays and objects.
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
  );

  CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    permissions TEXT NOT NULL,
    allowed_cidrs TEXT,
    previous_hash TEXT UNIQUE,
    previous_hash_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at INTEGER,
    revoked_at INTEGER
  );
  CREATE INDEX api_keys_workspace ON api_keys(workspace_id);

  CREATE TABLE tags (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
  ) WITHOUT ROWID;

  CREATE TABLE campaigns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    description TEXT,
    tag_names TEXT NOT NULL,
    draft INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    duplicated_from TEXT
  );
  CREATE INDEX campaigns_workspace ON campaigns(workspace_id, seq);

  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    status TEXT NOT NULL,
    source_campaign_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    tag_names TEXT,
    channel TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    api_key_name TEXT NOT NULL,
    ip TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    result_campaign_id TEXT,
    error_code TEXT,
    error_message TEXT
  );
  CREATE INDEX jobs_due ON jobs(run_at) WHERE status = 'PENDING';
  CREATE INDEX jobs_leased ON jobs(lease_expires_at) WHERE status = 'RUNNING';
  CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;

  CREATE TABLE security_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    api_key_id TEXT,
    api_key_name TEXT,
    channel TEXT,
    ip TEXT,
    job_id TEXT,
    campaign_id TEXT,
    details TEXT NOT NULL
  );
  CREATE INDEX security_events_workspace ON security_events(workspace_id, seq);
  CREATE INDEX security_events_job ON security_events(workspace_id, job_id, seq) WHERE job_id IS NOT NULL;
  CREATE INDEX security_events_key ON security_events(workspace_id, api_key_id, seq);
  CREATE INDEX security_events_type ON security_events(workspace_id, type, seq);
  CREATE INDEX security_events_time ON security_events(workspace_id, occurred_at);
  CREATE INDEX security_events_age ON security_events(occurred_at);

  CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
  ) WITHOUT ROWID;
  CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);
  `,
  // A counter every change to api_keys moves, whichever connection or process made it: key-cache.ts reads
  // it to know when its keys may be stale.
  `
  CREATE TABLE api_keys_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
  );
  INSERT INTO api_keys_version (id, version) VALUES (1, 0);
  CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys BEGIN UPDATE api_keys_version SET version = version + 1; END;
  CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys BEGIN UPDATE api_keys_version SET version = version + 1; END;
  CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN UPDATE api_keys_version SET version = version + 1; END;
  `,
  // What the store writes to learn whether its storage takes writes again after a disk-full or I/O error
  // (SqliteWrites.probe): one row at a time.
  `
  CREATE TABLE storage_probe (
    id INTEGER PRIMARY KEY,
    filler BLOB NOT NULL
  );
  `,
  // A key's last use, written at most once a minute per key, no longer moves the counter: each such write
  // emptied every cached key. Every other column of api_keys still does, and one added later must be named here.
  `
  DROP TRIGGER api_keys_updated;
  CREATE TRIGGER api_keys_updated AFTER UPDATE OF
    id, workspace_id, name, hash, prefix, permissions, allowed_cidrs, previous_hash, previous_hash_expires_at, created_at, expires_at, revoked_at
    ON api_keys BEGIN UPDATE api_keys_version SET version = version + 1; END;
  `,
  // A key's events of some types, newest first, one seek per type (listEvents): security_events_key finds the key's
  // events but not by type, so a rare type meant reading all of them. That index stays for the key alone, whose
  // newest events it gives in seq order.
  `
  CREATE INDEX security_events_key_type ON security_events(workspace_id, api_key_id, type, seq);
  `,
  // Each workspace takes its turn in the job queue (start-time fair queuing): a job's turn is the clock's, or one past
  // its workspace's last job's if that is later, and claims go by turn (claimJobs in writes.ts). The clock is
  // the highest turn claimed. Jobs queued before this version keep turn 0, so they go first, by due time, as before.
  // A pending job put there not due yet (waiting for a retry or an upstream slot) is `waiting`, kept out of
  // jobs_turn until a claim finds it due, so claims do not step over it; jobs queued before this version are not.
  `
  ALTER TABLE jobs ADD COLUMN queue_turn INTEGER NOT NULL DEFAULT 0;
  CREATE TABLE job_queue_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    turn INTEGER NOT NULL
  );
  INSERT INTO job_queue_clock (id, turn) VALUES (1, 0);
  ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX jobs_turn ON jobs(queue_turn, run_at, id) WHERE status = 'PENDING' AND waiting = false;
  CREATE INDEX jobs_waiting ON jobs(run_at) WHERE status = 'PENDING' AND waiting = true;
  CREATE INDEX jobs_workspace_turn ON jobs(workspace_id, queue_turn);
  `,
  // The id of the request that asked for a job (X-Request-Id), so that the worker's log lines and the upstream call
  // carry it. Jobs accepted before this version have none.
  `
  ALTER TABLE jobs ADD COLUMN request_id TEXT;
  `,
  // A workspace's jobs in the order of id, a page at a time, for its export (exportRows): jobs_workspace_turn finds
  // them, but each page then sorted every job of the workspace. Erasure is served by either index.
  `
  CREATE INDEX jobs_workspace ON jobs(workspace_id, id);
  `,
  // How many of a job's attempts are known to have made nothing upstream (upstream mode): a job failed for good may
  // have made a copy when it had more attempts than that (upstreamMayHaveActed). What earlier versions did, count
  // attempts and write nothing here, reads as attempts that may have: their jobs need no update.
  `
  ALTER TABLE jobs ADD COLUMN upstream_unacted_attempts INTEGER NOT NULL DEFAULT 0;
  `,
  // Upstream pacing's counters (its window and a pause the upstream asked for), so that a restart keeps them: as
  // rate-limiter-flexible keeps counters in a table (key, points, expire at in epoch ms, NULL for never), like the
  // PostgreSQL store's rate_limits. Written on the writer thread (SqliteWrites.upsertCounter).
  `
  CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    points INTEGER NOT NULL,
    expire INTEGER
  ) WITHOUT ROWID;
  `,
];

/** What a database holds, by name: each table with each of its columns, each index and trigger. */
function schemaObjects(db: Database.Database): string[] {
  const objects = db.prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").all() as { type: string; name: string }[];
  const columns = db.prepare('SELECT name FROM pragma_table_info(?)').pluck();
  return objects.flatMap(({ type, name }) =>
    type === 'table' ? [`table ${name}`, ...(columns.all(name) as string[]).map((column) => `column ${name}.${column}`)] : [`${type} ${name}`],
  );
}

/**
 * What `migrations` make that `db`, migrated to their last version, lacks. Only a database changed by hand,
 * or made by an early build whose first migration was later extended, lacks anything; its queries would
 * fail one by one while the gateway reported itself ready.
 */
export function missingSchemaObjects(db: Database.Database, migrations: readonly string[]): string[] {
  const reference = new Database(':memory:');
  try {
    for (const migration of migrations) reference.exec(migration);
    const present = new Set(schemaObjects(db));
    return schemaObjects(reference).filter((object) => !present.has(object));
  } finally {
    reference.close();
  }
}
