import type pg from 'pg';

/**
 * Versioned schema. Each entry runs once, in order, in its own transaction, while the migrating process
 * holds an advisory lock, so instances that start together apply it exactly once. Applied versions are
 * kept in `schema_migrations`. Times are timestamptz (millisecond precision is kept); sequence numbers
 * are bigserial so cursors stay stable; JSON columns are jsonb.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE workspaces (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
  );

  CREATE TABLE api_keys (
    id text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces(id),
    name text NOT NULL,
    hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    permissions jsonb NOT NULL,
    allowed_cidrs jsonb,
    previous_hash text UNIQUE,
    previous_hash_expires_at timestamptz,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz,
    expires_at timestamptz,
    revoked_at timestamptz
  );
  CREATE INDEX api_keys_workspace ON api_keys(workspace_id);

  CREATE TABLE tags (
    workspace_id text NOT NULL REFERENCES workspaces(id),
    name text NOT NULL,
    PRIMARY KEY (workspace_id, name)
  );

  CREATE TABLE campaigns (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    workspace_id text NOT NULL REFERENCES workspaces(id),
    name text NOT NULL,
    description text,
    tag_names jsonb NOT NULL,
    draft boolean NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    duplicated_from text
  );
  CREATE INDEX campaigns_workspace ON campaigns(workspace_id, seq);

  CREATE TABLE jobs (
    id text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces(id),
    status text NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED')),
    source_campaign_id text NOT NULL,
    name text NOT NULL,
    description text,
    tag_names jsonb,
    channel text NOT NULL,
    api_key_id text NOT NULL,
    api_key_name text NOT NULL,
    ip text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL,
    lease_owner text,
    lease_expires_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    result_campaign_id text,
    error_code text,
    error_message text
  );
  CREATE INDEX jobs_due ON jobs(run_at) WHERE status = 'PENDING';
  CREATE INDEX jobs_leased ON jobs(lease_expires_at) WHERE status = 'RUNNING';
  CREATE INDEX jobs_owner ON jobs(lease_owner) WHERE status = 'RUNNING';
  CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;

  CREATE TABLE security_events (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    workspace_id text NOT NULL,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    api_key_id text,
    api_key_name text,
    channel text,
    ip text,
    job_id text,
    campaign_id text,
    details jsonb NOT NULL
  );
  CREATE INDEX security_events_workspace ON security_events(workspace_id, seq);
  CREATE INDEX security_events_job ON security_events(workspace_id, job_id, seq) WHERE job_id IS NOT NULL;
  CREATE INDEX security_events_key ON security_events(workspace_id, api_key_id, seq);
  CREATE INDEX security_events_type ON security_events(workspace_id, type, seq);
  CREATE INDEX security_events_time ON security_events(workspace_id, occurred_at);
  CREATE INDEX security_events_age ON security_events(occurred_at);

  CREATE TABLE idempotency_keys (
    workspace_id text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    job_id text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, key)
  );
  CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);

  -- The shared quota when there is no Redis; the layout rate-limiter-flexible's RateLimiterPostgres expects.
  CREATE TABLE rate_limits (
    key varchar(255) PRIMARY KEY,
    points integer NOT NULL DEFAULT 0,
    expire bigint
  );
  `,
  // A key's events of some types, newest first, one seek per type (listEvents): security_events_key finds the key's
  // events but not by type, so a rare type meant reading all of them. That index stays for the key alone, whose
  // newest events it gives in seq order. The statistics tell the planner how often the most common (workspace,
  // type) pairs occur (at most 100 at the default statistics target; a pair not among them counts as rare): by
  // the table as a whole, a type that another workspace writes often looked common in every workspace, and a
  // listing of it walked the workspace's events, or the whole table's, rather than seek it. ANALYZE gathers them
  // now rather than whenever autovacuum next gets to a large table.
  `
  CREATE INDEX security_events_key_type ON security_events(workspace_id, api_key_id, type, seq);
  CREATE STATISTICS security_events_workspace_type (mcv) ON workspace_id, type FROM security_events;
  ANALYZE security_events;
  `,
  // Each workspace takes its turn in the job queue (start-time fair queuing): a job's turn is the clock's, or one past
  // its workspace's last job's if that is later, and claims go by turn (claimJobs in store.ts). The clock is
  // the highest turn claimed. Jobs queued before this version keep turn 0, so they go first, by due time, as before.
  // A pending job put there not due yet (waiting for a retry or an upstream slot) is `waiting`, kept out of
  // jobs_turn until a claim finds it due, so claims do not step over it; jobs queued before this version are not.
  `
  ALTER TABLE jobs ADD COLUMN queue_turn bigint NOT NULL DEFAULT 0;
  CREATE TABLE job_queue_clock (
    id integer PRIMARY KEY CHECK (id = 1),
    turn bigint NOT NULL
  );
  INSERT INTO job_queue_clock (id, turn) VALUES (1, 0);
  ALTER TABLE jobs ADD COLUMN waiting boolean NOT NULL DEFAULT false;
  CREATE INDEX jobs_turn ON jobs(queue_turn, run_at, id) WHERE status = 'PENDING' AND waiting = false;
  CREATE INDEX jobs_waiting ON jobs(run_at) WHERE status = 'PENDING' AND waiting = true;
  CREATE INDEX jobs_workspace_turn ON jobs(workspace_id, queue_turn);
  `,
  // Each workspace's last turn given to a job, kept in a row of its own that each enqueue moves in a statement of its
  // own, before its transaction (enqueueJob in store.ts): read from the jobs, as version 3 did, it was the same for
  // enqueues whose transactions ran at once, each blind to the others' jobs. It starts from the turns the jobs
  // hold; nothing reads jobs_workspace_turn any more.
  `
  CREATE TABLE job_queue_turns (
    workspace_id text PRIMARY KEY,
    turn bigint NOT NULL
  );
  INSERT INTO job_queue_turns (workspace_id, turn) SELECT workspace_id, MAX(queue_turn) FROM jobs GROUP BY workspace_id;
  DROP INDEX jobs_workspace_turn;
  `,
  // The id of the request that asked for a job (X-Request-Id), so that the worker's log lines and the upstream call
  // carry it. Jobs accepted before this version have none. Nullable without a default: the table is not rewritten.
  `
  ALTER TABLE jobs ADD COLUMN request_id text;
  `,
  // A workspace's jobs, for its erasure (deleteWorkspace), which since version 4 dropped jobs_workspace_turn read every
  // job of every workspace, and its export, a page at a time in the order of id (exportRows). Not CONCURRENTLY, which
  // cannot run in the migration's transaction: writes to jobs wait while it is built. IF NOT EXISTS keeps one an
  // operator built CONCURRENTLY before the upgrade, as the README's "Upgrading" says for a large table.
  `
  CREATE INDEX IF NOT EXISTS jobs_workspace ON jobs(workspace_id, id);
  `,
  // How many of a job's attempts are known to have made nothing upstream (upstream mode): a job failed for good may
  // have made a copy when it had more attempts than that (upstreamMayHaveActed). What earlier versions do, count
  // attempts and write nothing here, reads as attempts that may have: their jobs need no update, and their instances
  // in a rolling update none either. A constant default does not rewrite the table.
  `
  ALTER TABLE jobs ADD COLUMN upstream_unacted_attempts integer NOT NULL DEFAULT 0;
  `,
];

/**
 * What the schema whose oid `namespace` gives holds, by name, in the form SQLite's check uses
 * (src/adapters/sqlite/migrations.ts): each table with each of its columns, each index and statistics object, in order.
 */
const schemaObjectsSql = (namespace: string): string => `
  SELECT object FROM (SELECT CASE c.relkind WHEN 'i' THEN 'index ' ELSE 'table ' END || c.relname AS object FROM pg_class c
    WHERE c.relnamespace = ${namespace} AND c.relkind IN ('r', 'p', 'i')
  UNION ALL SELECT 'column ' || c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = ${namespace} AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT 'statistics ' || stxname FROM pg_statistic_ext WHERE stxnamespace = ${namespace}) objects ORDER BY object`;

const objectNames = async (client: pg.ClientBase, namespace: string): Promise<string[]> =>
  (await client.query(schemaObjectsSql(namespace))).rows.map((row: { object: string }) => row.object);

/**
 * Why missingSchemaObjects cannot run for the client's role, and the statement that lets it: the role lacks
 * TEMPORARY on the database, which every role has by default but hardened setups revoke. Null when it can run.
 */
export async function schemaCheckRefused(client: pg.ClientBase): Promise<string | null> {
  const { rows } = await client.query(
    `SELECT has_database_privilege(current_database(), 'TEMPORARY') AS allowed, quote_ident(current_database()) AS database, quote_ident(current_user) AS role`,
  );
  const { allowed, database, role } = rows[0] as { allowed: boolean; database: string; role: string };
  if (allowed) return null;
  return (
    `the schema was not checked for parts its version lacks: the role ${role} may not create temporary tables in database ${database}, ` +
    `where the check makes the schema afresh to compare; GRANT TEMPORARY ON DATABASE ${database} TO ${role} enables the check`
  );
}

/**
 * What `migrations` make that the schema the client's tables are in (its search_path) lacks. The reference is
 * the same migrations applied to the session's temporary schema under a savepoint of the caller's transaction, rolled
 * back, so it needs no privilege beyond the temporary tables every role has by default (schemaCheckRefused says when
 * it lacks them).
 * Only a database changed by hand, or made by a development build whose migration was later changed in place,
 * lacks anything; its queries would fail one by one while the gateway reported itself ready.
 */
export async function missingSchemaObjects(client: pg.ClientBase, migrations: readonly string[]): Promise<string[]> {
  let reference: string[];
  await client.query('SAVEPOINT schema_check');
  try {
    await client.query('SET LOCAL search_path = pg_temp');
    for (const migration of migrations) await client.query(migration);
    reference = await objectNames(client, 'pg_my_temp_schema()');
  } finally {
    // Takes back the search_path too.
    await client.query('ROLLBACK TO SAVEPOINT schema_check');
  }
  const present = new Set(await objectNames(client, '(SELECT oid FROM pg_namespace WHERE nspname = current_schema())'));
  return reference.filter((object) => !present.has(object));
}
