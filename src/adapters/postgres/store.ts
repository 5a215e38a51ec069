import pg from 'pg';
import { eventCursorGone } from '../../domain/cursor.js';
import { GatewayError, storeBusy } from '../../domain/errors.js';
import { EXPORT_TABLES, type BatchErasedTable, type ClaimedJob, type EventPruneBatch, type EventPruneCursor, type ExportPage, type ExportRows, type ExportTable, type GatewayStore, type JobFailure, type JobOutcome, type ListOptions, type NewerSchema, type OlderSchema, type ReleaseOptions, type RowCount, type SchemaVersions, type WorkspaceDeletion } from '../../domain/ports.js';
import type {
  ApiKeyRecord,
  Campaign,
  DuplicationJob,
  IdempotencyRecord,
  JobError,
  JobFilter,
  JobStatus,
  NewSecurityEvent,
  SecurityEvent,
  SecurityEventFilter,
  Workspace,
} from '../../domain/types.js';
import {
  anyJobToPromoteSql,
  apiKeyToRow,
  campaignToRow,
  claimedJobs,
  COUNT_JOBS_SQL,
  distinctTypes,
  eventPruneBatch,
  eraseWorkspaceRowsSql,
  eventToRow,
  EVENT_WINDOW_SQL,
  eventWindowSeeks,
  exportCursor,
  exportPage,
  countRowsSql,
  exportPageSql,
  importRows,
  insertStatement,
  KNOWN_EVENT_TYPES_SQL,
  listJobsSql,
  newJobToRow,
  oldestDueJobSql,
  promoteDueJobsSql,
  rowSeq,
  rowToApiKey,
  rowToCampaign,
  rowToEvent,
  rowToIdempotency,
  rowToJob,
  rowToWorkspace,
  type Row,
  type SqlValues,
} from '../rows.js';
import { incompleteSchema, migratedUnder, schemaRefusal, SchemaVersionRefusal } from '../schema-version.js';
import { missingSchemaObjects, POSTGRES_MIGRATIONS, schemaCheckRefused } from './migrations.js';
import { EventLockWaits, type EventLockTurn } from './event-lock-waits.js';
import { asLockWaitOutage, asOutage, LOCK_NOT_AVAILABLE, LockWaitCancelled, startupFailure } from './outage.js';
import { clientConfig, CONNECTION_TIMEOUT_MS, createPool, DEFAULT_POOL_SIZE, LOCK_TIMEOUT_MS, queriesOf, requireRoleSettings, startSession, transaction, type PostgresOptions, type Queryable } from './pool.js';
import { Snapshots } from './snapshots.js';

/** Any constant works; it only has to be the same for every instance of the gateway. */
export const MIGRATION_LOCK = 0x6367_7701;
/** How long a start waits for another to finish migrating: an upgrade of a large store takes minutes at most (README, "Upgrading"). */
const MIGRATION_LOCK_WAIT_MS = 5 * 60_000;
/**
 * How long a migration's statement waits for a lock on a table before its transaction is rolled back and tried again:
 * while it waits, every later statement on the table queues behind it, and the other instances' are cancelled at
 * their lock_timeout (4 s, LOCK_TIMEOUT_MS).
 */
const MIGRATION_TABLE_LOCK_TIMEOUT_MS = 2_000;
/** How long the other sessions' statements have the tables between a migration's tries. */
const MIGRATION_RETRY_PAUSE_MS = 1_000;
/** How often a migration held up by the same sessions says so again. */
const MIGRATION_BLOCKED_NOTICE_MS = 30_000;
const DATABASE = 'the PostgreSQL database in DATABASE_URL';
/** SQLSTATE insufficient_privilege. */
const INSUFFICIENT_PRIVILEGE = '42501';

export interface PostgresStoreOptions extends PostgresOptions {
  /**
   * Told, once, that a start waits for the migration lock another session holds, and who holds it; and that a
   * migration waits for a lock on the store's tables, once per set of sessions holding it up and at most every 30 s.
   */
  onMigrationWait?: (message: string) => void;
  /**
   * How often the migration lock is asked for, when the wait is told, when it (with the waits for the tables' locks)
   * is given up, and how long a migration's statement waits for a table's lock (ms); tests shorten them.
   */
  migrationLock?: { retryMs?: number; noticeMs?: number; waitMs?: number; tableLockTimeoutMs?: number };
  /**
   * Whose clock the job queue keeps time by: the database server's (the default), or the time each call is given,
   * for a gateway that was given a clock of its own (tests drive leases and retries with one).
   */
  jobTime?: 'database' | 'caller';
}

/**
 * The time of a job-queue statement, `$n` being the caller's time or null. Lease ends, run times and the times they
 * are compared with are written and read by every instance: taken from each one's own clock, an instance running
 * ahead took over jobs another still ran (each upstream duplication sent twice), so they come from the database's
 * clock, as durations from it. statement_timestamp() is one time for the whole statement, in a transaction too.
 */
const jobTime = (placeholder: string): string => `COALESCE(${placeholder}::timestamptz, statement_timestamp())`;
/** A duration in milliseconds, `$n`, as an interval to add to a jobTime. */
const millis = (placeholder: string): string => `(${placeholder}::double precision * interval '1 millisecond')`;

/** The version of a schema that has the gateway's tables: one seek on the primary key of schema_migrations. */
const SCHEMA_VERSION_SQL = 'SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations';

/** The schema's version (0 for a store without the gateway's tables), read without making anything. */
async function schemaVersion(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query(`SELECT to_regclass('schema_migrations') IS NOT NULL AS made`);
  if (!rows[0].made) return 0;
  return Number((await client.query(SCHEMA_VERSION_SQL)).rows[0].version);
}

/**
 * The tables every version of a gateway store has (those of its first migration). Rails, golang-migrate, Ecto and
 * dbmate keep a `schema_migrations` too, and an application may have `workspaces` or `jobs`: only a schema with all
 * of them together is taken for a gateway store.
 */
const STORE_TABLES = ['schema_migrations', 'workspaces', 'api_keys', 'tags', 'campaigns', 'jobs', 'security_events', 'idempotency_keys', 'rate_limits'];

/** The tables the gateway reads and writes as it runs, each granted to its role (README, "PostgreSQL roles"). */
const RUNTIME_TABLES = [...STORE_TABLES.filter((table) => table !== 'schema_migrations'), 'job_queue_turns', 'job_queue_clock'];

/**
 * Where a search_path the connection chose itself comes from (pg_settings.source): its startup packet (`options` in
 * DATABASE_URL, PGOPTIONS), or a SET in its session (the store's `schema` option). A restore loses neither.
 */
const CHOSEN_BY_CONNECTION: ReadonlySet<string> = new Set(['client', 'session']);

/**
 * Refuses to make a new store when the search_path finds no gateway tables but another schema of the database holds
 * them: a dump restored without `pg_restore --create` loses the database's `SET search_path`, and the gateway then
 * made an empty store (a demo workspace, a new admin key) beside the restored one. Only a search_path that settings
 * a restore may have lost gave (the database's, the role's in it, the default) is refused: one the connection
 * names itself is a store placed on purpose, a second one beside the first (staging, tests). Any role may read the
 * catalog and pg_settings.
 */
async function refuseStoreElsewhere(client: pg.ClientBase): Promise<void> {
  const { rows: setting } = await client.query(`SELECT source FROM pg_settings WHERE name = 'search_path'`);
  if (CHOSEN_BY_CONNECTION.has(setting[0]?.source)) return;
  const { rows } = await client.query(
    `SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast%'
     GROUP BY n.nspname HAVING count(DISTINCT c.relname) = cardinality($1::text[])
     ORDER BY n.nspname`,
    [STORE_TABLES],
  );
  if (rows.length === 0) return;
  // Another instance starting on the same empty database may have committed its store on this search_path since
  // the first look found none (schemaVersion): that store is this one's, not one a restore left elsewhere.
  if ((await schemaVersion(client)) > 0) return;
  const schemas = rows.map((row: { schema: string }) => row.schema);
  const [{ search_path: searchPath, database }] = (
    await client.query(`SELECT current_setting('search_path') AS search_path, quote_ident(current_database()) AS database`)
  ).rows;
  const named = schemas.length === 1 ? `schema ${schemas[0]} holds` : `schemas ${schemas.join(', ')} hold`;
  throw new SchemaVersionRefusal(
    `${DATABASE} holds no gateway tables on its search_path (${searchPath}), but ${named} a gateway store: ` +
      'a restore without pg_restore --create loses the database\'s settings. Nothing was made. ' +
      `Set the search_path to the store's schema (ALTER DATABASE ${database} SET search_path = ${schemas[0]}, or ALTER ROLE … IN DATABASE, ` +
      `or options=-c%20search_path%3D${schemas[0]} in DATABASE_URL), then start again (see "Restoring" in the README). ` +
      'A second store, in a schema of its own, is made by naming its schema in DATABASE_URL (options=-c%20search_path%3D…)',
  );
}

/** What pg_stat_activity tells of a session, as far as this role may see it (another role's session shows its pid, user and application_name only). */
const SESSION_COLUMNS = `a.usename, a.application_name, a.client_addr, a.state,
  round(extract(epoch FROM clock_timestamp() - a.xact_start))::int AS transaction_seconds`;

/** A session that holds a lock the gateway waits for, with SESSION_COLUMNS, and the statement that ends it. */
function sessionHolding(row: Row): string {
  const known = [
    row.usename && `user ${row.usename}`,
    row.application_name && `application_name '${row.application_name}'`,
    row.client_addr && `from ${row.client_addr}`,
    row.state && `${row.state}`,
    row.transaction_seconds !== null && row.transaction_seconds !== undefined && `its transaction open for ${row.transaction_seconds} s`,
  ].filter(Boolean);
  return `the session of pid ${row.pid}${known.length > 0 ? ` (${known.join(', ')})` : ''}`;
}

/**
 * The migration lock and the session holding it. A single bigint key is classid (its high half), objid (its low half)
 * and objsubid 1.
 */
async function migrationLockHolder(client: pg.ClientBase): Promise<string> {
  const lock = `the migration lock (PostgreSQL advisory lock ${MIGRATION_LOCK})`;
  const { rows } = await client.query(
    `SELECT l.pid, ${SESSION_COLUMNS} FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1 LIMIT 1`,
    [MIGRATION_LOCK],
  );
  const holder = rows[0];
  if (!holder) return lock;
  return `${lock}, held by ${sessionHolding(holder)}: another instance updating the schema, or a session that kept the lock (SELECT pg_terminate_backend(${holder.pid}) ends it)`;
}

/**
 * The sessions that held up a migration's statement for `timeoutMs` (its lock_timeout), each with the store's tables it
 * holds a lock on, found once the statement has been rolled back: those holding a lock on a table of the store's schema
 * whose transaction has been open at least that long (one that began later would have queued behind the statement).
 * A session of another role, whose transaction this role may not see, is named whatever its transaction's age.
 */
async function tableLockHolders(client: pg.ClientBase, timeoutMs: number): Promise<Row[]> {
  const { rows } = await client.query(
    `SELECT l.pid, string_agg(DISTINCT c.relname, ', ') AS tables, ${SESSION_COLUMNS}
     FROM pg_locks l JOIN pg_class c ON c.oid = l.relation LEFT JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() AND c.relkind IN ('r', 'p')
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
       AND (a.xact_start IS NULL OR a.xact_start <= clock_timestamp() - $1::double precision * interval '1 millisecond')
     GROUP BY l.pid, a.usename, a.application_name, a.client_addr, a.state, a.xact_start ORDER BY a.xact_start NULLS LAST, l.pid LIMIT 5`,
    [timeoutMs],
  );
  return rows as Row[];
}

/** The sessions tableLockHolders found, in words, with the statement that ends each. */
function describeTableLockHolders(holders: Row[]): string {
  if (holders.length === 0) return 'a lock on the store\'s tables that another transaction held';
  const sessions = holders.map((holder) => `${sessionHolding(holder)} on ${holder.tables} (SELECT pg_terminate_backend(${holder.pid}) ends it)`);
  return `a lock on the store's tables held by ${sessions.join('; ')}`;
}

/**
 * Why a role that may not change the schema cannot start on a store this version must make or upgrade, and which
 * role can: the one that owns the tables (or, for a store without them, the schema they go in).
 */
async function migrationRefused(client: pg.ClientBase, error: Error, from: number, to: number): Promise<Error> {
  const { rows } = await client
    .query(
      `SELECT current_user AS role, current_schema() AS schema,
         (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass('schema_migrations')) AS tables_owner,
         (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = current_schema()) AS schema_owner`,
    )
    .catch(() => ({ rows: [] as Row[] }));
  const { role, schema, tables_owner: tablesOwner, schema_owner: schemaOwner } = (rows[0] ?? {}) as Record<string, string | null>;
  const owner = tablesOwner ?? schemaOwner;
  const change = from === 0 ? `holds no gateway tables${schema ? ` in schema ${schema}` : ''} yet` : `is at schema version ${from} and this version needs ${to}`;
  return new SchemaVersionRefusal(
    `${DATABASE} ${change}, which the role ${role ?? 'in DATABASE_URL'} may not ${from === 0 ? 'make' : 'upgrade'} (${error.message}, ${INSUFFICIENT_PRIVILEGE}). ` +
      `Start this version's gateway once with a DATABASE_URL naming ${owner ? `the role that owns ${from === 0 ? 'the schema' : 'the tables'}, ${owner}` : 'a role that may create tables there'}: ` +
      `it ${from === 0 ? 'makes' : 'upgrades'} the schema and may stop once it is ready; then start every instance with ${role ?? 'this role'} (see "PostgreSQL roles" in the README)`,
    { cause: error },
  );
}
/** With the workspace's hash, the key of the lock that puts its events in order (the two-number key space). */
export const EVENT_ORDER_LOCK = 0x6367_7702;
/** With the schema's hash, the key of the lock that lets one claim at a time make waiting jobs due (promoteDueJobs). */
const PROMOTE_LOCK = 0x6367_7703;
/**
 * How long a claim waits for another to make the waiting jobs due before it leaves that to it: a promotion takes
 * milliseconds, unless its instance froze in the middle of it.
 */
const PROMOTE_LOCK_WAIT_MS = 1_000;

/** Thrown out of a promotion's transaction, to roll it back, when another promotion kept the lock past PROMOTE_LOCK_WAIT_MS. */
class PromotionLeftToAnother extends Error {}

/**
 * How long a write waits for its workspace's event lock, parked in memory and on the server together, before it is
 * answered UNAVAILABLE. Under the statement timeout, so that the server ends a wait with the lock timeout the lock's
 * statement sets (55P03) rather than the statement timeout, which a slow statement meets too.
 */
const EVENT_LOCK_WAIT_MS = 8_000;

/** The event lock of a workspace, in words, for the log and the CLI. */
const eventLockName = (workspaceId: string): string =>
  `the lock that orders the security events of workspace ${workspaceId} (PostgreSQL advisory lock ${EVENT_ORDER_LOCK}, hashtext('${workspaceId}'))`;

/** Thrown out of a write's transaction, to roll it back and give its connection up, when its event lock is held and no turn to wait for it is free. */
class EventLockBusy extends Error {}

/** Takes the workspace's event lock for a write's transaction (PostgresStore.eventTransaction). */
type LockEvents = () => Promise<void>;

/** Where a page starts, as one upper bound on `seq`: a cursor's row, or a sequence number. */
function pageBound(table: 'campaigns' | 'security_events', options: ListOptions, param: (value: unknown) => string): string {
  if (options.beforeId !== undefined) return `seq < ${rowSeq(table, '$1', param(options.beforeId))}`;
  return `seq < ${param(options.beforeSeq ?? Number.MAX_SAFE_INTEGER)}`;
}

/**
 * The workspace of a listing (events, campaigns), as a list of one, in statements ordered by `workspace_id, seq`
 * (newestInWorkspace; and the seeks of an event time window, by `workspace_id, occurred_at`: EVENT_WINDOW_SQL). Given
 * `workspace_id = $1` the planner takes the order of seq alone as the order asked for, which the primary key gives
 * too, and when it expects the workspace to hold many of the rows asked for it walks the primary key from the
 * newest row of the whole table, through every newer row of every other workspace. Ordered by the workspace
 * first, only an index that starts with the workspace gives the order.
 */
const IN_WORKSPACE = 'workspace_id = ANY(ARRAY[$1::text])';

/** The workspace's ($1) newest rows of `table` that meet `conditions`, at most `limit`, through an index that starts with the workspace. */
const newestInWorkspace = (table: 'campaigns' | 'security_events', conditions: string[], limit: string): string =>
  `SELECT * FROM ${table} WHERE ${[IN_WORKSPACE, ...conditions].join(' AND ')} ORDER BY workspace_id DESC, seq DESC LIMIT ${limit}`;

// pg sends Dates as timestamptz and booleans as they are.
const PG: SqlValues = { date: (value) => value, bool: (value) => value };

/**
 * Whether PostgreSQL can take a parameter: its text cannot hold NUL (U+0000), and a statement given one fails
 * (22021) instead of matching nothing. No row holds such text, so a lookup by a key that does is answered as
 * one for a key that matches no row, as the embedded store answers it, without asking the server.
 */
const storable = (value: unknown): boolean =>
  typeof value === 'string' ? !value.includes('\u0000') : !Array.isArray(value) || value.every(storable);

/**
 * The shared store for several gateway instances. Jobs are claimed with `FOR UPDATE SKIP LOCKED` and a
 * lease, so instances never run the same job at once and a dead instance's jobs are picked up by another
 * once its leases expire.
 */
export class PostgresStore implements GatewayStore {
  readonly kind = 'postgres';
  /** Shared with the PostgreSQL quota, so one instance keeps one pool. */
  readonly pool: pg.Pool;
  /** Queries outside a transaction; the database being down answers UNAVAILABLE. */
  private readonly db: Queryable;
  /** The reads of a GraphQL query, each seeing the same moment (snapshots.ts). */
  private readonly snapshots: Snapshots;
  /** The connections waiting for event locks: a quarter of the pool at most for one workspace's, half for all (eventTransaction). */
  private readonly eventLockWaits: EventLockWaits;

  constructor(private readonly options: PostgresStoreOptions) {
    this.pool = createPool(options);
    this.db = queriesOf(this.pool);
    const poolSize = options.poolSize ?? DEFAULT_POOL_SIZE;
    this.snapshots = new Snapshots(this.pool, poolSize, options.connectionTimeoutMs ?? CONNECTION_TIMEOUT_MS);
    this.eventLockWaits = new EventLockWaits(Math.max(1, Math.floor(poolSize / 4)), Math.max(1, Math.floor(poolSize / 2)));
  }

  connections(): { inUse: number; idle: number; awaited: number } {
    const { totalCount, idleCount, waitingCount } = this.pool;
    return { inUse: totalCount - idleCount, idle: idleCount, awaited: waitingCount + this.snapshots.waitingCount };
  }

  eventLockWrites(): { waiting: number; parked: number } {
    return this.eventLockWaits.counts();
  }

  /** The parameter of a jobTime: null, for the database's clock, unless the store takes the caller's. */
  private jobClock(now: Date): Date | null {
    return this.options.jobTime === 'caller' ? now : null;
  }

  private async rows(text: string, values: unknown[] = [], client: Queryable = this.db): Promise<Row[]> {
    return (await client.query(text, values)).rows as Row[];
  }

  /** The rows a read finds by its keys (every parameter a key or a bound): none when a key cannot be stored. */
  private async lookup(text: string, keys: unknown[], client: Queryable = this.db): Promise<Row[]> {
    return keys.every(storable) ? this.rows(text, keys, client) : [];
  }

  /**
   * Where a read of what a query answers with (jobs, events, campaigns) goes: in a read scope that has begun, its
   * snapshot. Nothing else opens or uses one, the key's look-up included, so that a query that reads none of these
   * holds no connection while it waits for the upstream or Redis (snapshots.ts).
   */
  private get view(): Queryable {
    return this.snapshots.reads(this.db);
  }

  private async insert(client: Queryable, table: string, row: Row): Promise<void> {
    const { text, values } = insertStatement(table, row, (position) => `$${position}`);
    await client.query(text, values);
  }

  private async count(text: string, values: unknown[], client: Queryable = this.db): Promise<number> {
    return (await client.query(text, values)).rowCount ?? 0;
  }

  /**
   * Brings the schema up to date. A schema already at this version is only read (no DDL, no lock), so a role that may
   * only read and write the rows starts (README, "PostgreSQL roles"). Otherwise the migrations run in one transaction
   * that holds the migration lock, so instances that start together apply them once and the lock ends with the
   * transaction: a session lock outlived `client.end()` behind a pooler, which keeps the server's session. On a
   * connection of its own (upgrade). Behind a pooler in transaction mode, the role's own settings are checked first
   * (requireRoleSettings).
   */
  async migrate(older: OlderSchema = 'upgrade'): Promise<SchemaVersions> {
    if (this.options.poolMode === 'transaction') await requireRoleSettings(this.pool);
    const migrations = this.options.migrations ?? POSTGRES_MIGRATIONS;
    const client = new pg.Client(clientConfig(this.options));
    // A broken connection also fails the pending query, which is where it is reported.
    client.on('error', () => undefined);
    await client
      .connect()
      .then(() => startSession(client, this.options, 'migration'))
      .catch((error: unknown) => {
        throw startupFailure(error, 'connect');
      });
    let current = 0;
    let upgrading = false;
    try {
      current = await schemaVersion(client);
      if (current === 0) await refuseStoreElsewhere(client);
      const refusal = schemaRefusal(DATABASE, current, migrations.length, older);
      if (refusal) throw refusal;
      if (current === migrations.length) {
        // Writes nothing: the transaction is for the check's savepoint.
        await client.query('BEGIN');
        const unchecked = await this.checkSchema(client, migrations, current).finally(() => client.query('ROLLBACK'));
        return { from: current, to: current, ...(unchecked ? { unchecked } : {}) };
      }
      upgrading = true;
      return await this.upgrade(client, migrations, older);
    } catch (error) {
      // The database works; it holds a schema this version must not use as it is.
      if (error instanceof SchemaVersionRefusal) throw error;
      if (upgrading && (error as { code?: unknown }).code === INSUFFICIENT_PRIVILEGE) throw await migrationRefused(client, error as Error, current, migrations.length);
      throw startupFailure(error, 'migrate');
    } finally {
      await client.end();
    }
  }

  async newerSchema(): Promise<NewerSchema | null> {
    const [row] = await this.rows(SCHEMA_VERSION_SQL);
    return migratedUnder(DATABASE, Number(row.version), (this.options.migrations ?? POSTGRES_MIGRATIONS).length);
  }

  /**
   * Whether the schema at `current` lacks what its migrations make: checked before any upgrade, so that a database
   * refused is left as it was found. A role that may not make the check still starts: the check guards against rare
   * damage, and refusing would stop a working gateway. Returns why it was not made, if it was not.
   */
  private async checkSchema(client: pg.Client, migrations: readonly string[], current: number): Promise<string | null> {
    if (current === 0) return null;
    const unchecked = await schemaCheckRefused(client);
    const missing = unchecked ? [] : await missingSchemaObjects(client, migrations.slice(0, current));
    if (missing.length > 0) {
      throw incompleteSchema(
        DATABASE,
        current,
        missing,
        'Restore a backup, or add what it lacks as the migrations of that version make it (see "Upgrading" in the README). It was left as it is',
      );
    }
    return unchecked;
  }

  /**
   * Applies the pending migrations in one transaction holding the migration lock, without a statement timeout. A
   * statement that waits for a table's lock past a short lock_timeout rolls the transaction back and it is tried again
   * after a pause, saying who holds the lock: waiting on, it made every later statement on the table (the other
   * instances' claims, enqueues and polls) queue behind it until they were cancelled, for as long as any transaction on
   * the table stayed open (a pg_dump, an export). Given up with the migration lock's wait.
   */
  private async upgrade(client: pg.Client, migrations: readonly string[], older: OlderSchema): Promise<SchemaVersions> {
    const { waitMs = MIGRATION_LOCK_WAIT_MS, tableLockTimeoutMs = MIGRATION_TABLE_LOCK_TIMEOUT_MS } = this.options.migrationLock ?? {};
    const started = Date.now();
    let told: { pids: string; at: number } | undefined;
    for (;;) {
      await client.query('BEGIN');
      try {
        await client.query(`SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', $1, true)`, [String(tableLockTimeoutMs)]);
        await this.takeMigrationLock(client, started);
        await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
        // Another instance may have migrated while this one waited for the lock.
        const current = await schemaVersion(client);
        const refusal = schemaRefusal(DATABASE, current, migrations.length, older);
        if (refusal) throw refusal;
        const unchecked = await this.checkSchema(client, migrations, current);
        for (const [index, migration] of migrations.entries()) {
          const version = index + 1;
          if (version <= current) continue;
          await client.query(migration);
          await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [version]);
        }
        await client.query('COMMIT');
        return { from: current, to: migrations.length, ...(unchecked ? { unchecked } : {}) };
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        if ((error as { code?: unknown }).code !== LOCK_NOT_AVAILABLE) throw error;
      }
      // Rolled back: the statements that queued behind the migration's run, and those that held it up still hold their locks.
      const holders = await tableLockHolders(client, tableLockTimeoutMs);
      const waited = Date.now() - started;
      if (waited >= waitMs) throw new Error(`gave up after ${Math.round(waited / 1000)} s waiting for ${describeTableLockHolders(holders)}`);
      const pids = holders.map((holder) => holder.pid).join(' ');
      if (told?.pids !== pids || Date.now() - told.at >= MIGRATION_BLOCKED_NOTICE_MS) {
        told = { pids, at: Date.now() };
        this.options.onMigrationWait?.(
          `upgrading the schema to version ${migrations.length} waits for ${describeTableLockHolders(holders)}; ` +
            `it is rolled back after ${tableLockTimeoutMs / 1000} s of waiting, so that other statements on those tables run, and tried again ` +
            `every ${MIGRATION_RETRY_PAUSE_MS / 1000} s; giving up after ${Math.round(waitMs / 1000)} s`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, MIGRATION_RETRY_PAUSE_MS));
    }
  }

  /**
   * The migration lock, for the client's transaction. Asked for again and again rather than waited on, so that a
   * start held up says so, once, naming who holds the lock, and gives up `waitMs` after `started` rather than wait unseen.
   */
  private async takeMigrationLock(client: pg.Client, started: number): Promise<void> {
    const { retryMs = 100, noticeMs = 2_000, waitMs = MIGRATION_LOCK_WAIT_MS } = this.options.migrationLock ?? {};
    let told = false;
    for (;;) {
      const { rows } = await client.query('SELECT pg_try_advisory_xact_lock($1) AS taken', [MIGRATION_LOCK]);
      if (rows[0].taken) return;
      const waited = Date.now() - started;
      if (waited >= waitMs) {
        throw new Error(`gave up after ${Math.round(waited / 1000)} s waiting for ${await migrationLockHolder(client)}`);
      }
      if (!told && waited >= noticeMs) {
        told = true;
        this.options.onMigrationWait?.(
          `waiting for ${await migrationLockHolder(client)}; giving up after ${Math.round(waitMs / 1000)} s`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }

  /**
   * Also what answers yet cannot serve: a database that takes no writes (a standby a failover has not promoted yet, or
   * one set read-only) and a role without the grants the README gives it, either of which would take requests it can
   * only fail, or jobs it could never run. An outage is UNAVAILABLE around the driver's own error: /readyz describes
   * that error, and the log has it as a warning, not as a bug.
   */
  async ping(): Promise<void> {
    const [row] = await this.rows(
      `SELECT current_setting('transaction_read_only') = 'on' AS read_only, current_user AS role,
         ARRAY(SELECT p || ' on ' || t FROM unnest($1::text[]) AS t CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p
               WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(t, p)
               UNION ALL
               SELECT 'USAGE on sequence ' || s FROM unnest(ARRAY['campaigns', 'security_events']) AS t, pg_get_serial_sequence(t, 'seq') AS s
               WHERE NOT has_sequence_privilege(s, 'USAGE')) AS missing`,
      [RUNTIME_TABLES],
    );
    if (row.read_only) {
      throw new GatewayError('UNAVAILABLE', `${DATABASE} takes no writes (transaction_read_only is on: a standby, or a database set read-only)`);
    }
    const missing = row.missing as string[];
    if (missing.length > 0) {
      throw new GatewayError('UNAVAILABLE', `the role ${String(row.role)} lacks ${missing.join(', ')}: grant them as the README's "PostgreSQL roles" does`);
    }
  }

  async databaseTime(): Promise<Date> {
    // clock_timestamp() is the time as the server answers; now() would be when its transaction began.
    const [row] = await this.rows('SELECT clock_timestamp() AS now');
    return row.now as Date;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async createWorkspace(workspace: Workspace): Promise<boolean> {
    // Not a unique violation: another process may have made the name since the caller looked.
    const result = await this.db.query('INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING', [
      workspace.id,
      workspace.name,
      workspace.createdAt,
    ]);
    return result.rowCount === 1;
  }

  async findWorkspace(idOrName: string): Promise<Workspace | null> {
    const [row] = await this.lookup('SELECT * FROM workspaces WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1', [idOrName]);
    return row ? rowToWorkspace(row) : null;
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return (await this.rows('SELECT * FROM workspaces ORDER BY created_at, name')).map(rowToWorkspace);
  }

  async hasWorkspaces(): Promise<boolean> {
    return (await this.rows('SELECT 1 FROM workspaces LIMIT 1')).length > 0;
  }

  /**
   * The workspace's row is locked first: an insert that refers to it (a key, a job, a campaign, a tag) waits for the
   * erasure and then fails, the workspace gone. Its pending and running jobs are locked next, so that no claim takes
   * one (claims skip locked rows) between the check and the deletes, and the lock that orders its events is held, so
   * that an event being written commits before the events are deleted. Rows without a foreign key go first (nothing
   * else removes them), then each table before the one it refers to. The limiter counters are those named after the
   * workspace (its quota, its upstream reads) or one of its keys (refusal events, downloads): RateLimiterPostgres's
   * keys are `<limiter>:<key>`. No row to lock: another process deleted the workspace since the caller found it (null).
   */
  async deleteWorkspace(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null> {
    return this.eventTransaction(workspaceId, async (client, lockEvents) => {
      const refused = await this.erasable(client, workspaceId, now);
      if (refused !== true) return refused;
      await lockEvents();
      const rows: Record<string, number> = {};
      for (const table of ['idempotency_keys', 'security_events', 'jobs', 'campaigns', 'tags']) {
        rows[table] = await this.count(`DELETE FROM ${table} WHERE workspace_id = $1`, [workspaceId], client);
      }
      Object.assign(rows, await this.deleteKeys(client, workspaceId));
      rows.job_queue_turns = await this.count('DELETE FROM job_queue_turns WHERE workspace_id = $1', [workspaceId], client);
      rows.workspaces = await this.count('DELETE FROM workspaces WHERE id = $1', [workspaceId], client);
      return { deleted: true, rows };
    });
  }

  /**
   * Locks as deleteWorkspace, then deletes the rows that must go at once: keys (with their counters: once they are
   * gone nothing names them), idempotency keys, and the jobs a claim could take. The locks end with this short
   * transaction: the batches after it hold none for long, so vacuum is not held back.
   */
  async startWorkspaceErasure(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null> {
    return transaction(this.pool, async (client) => {
      const refused = await this.erasable(client, workspaceId, now);
      if (refused !== true) return refused;
      return {
        deleted: true,
        rows: {
          ...(await this.deleteKeys(client, workspaceId)),
          idempotency_keys: await this.count('DELETE FROM idempotency_keys WHERE workspace_id = $1', [workspaceId], client),
          jobs: await this.count(`DELETE FROM jobs WHERE workspace_id = $1 AND status IN ('PENDING', 'RUNNING')`, [workspaceId], client),
        },
      };
    });
  }

  async eraseWorkspaceRows(workspaceId: string, table: BatchErasedTable, limit: number): Promise<number> {
    return this.count(eraseWorkspaceRowsSql(table, '$1', '$2'), [workspaceId, limit]);
  }

  /**
   * Locks the workspace's row and its pending and running jobs; true when none of them runs under a lease live at
   * `now`, else what the erasure answers.
   */
  private async erasable(client: pg.PoolClient, workspaceId: string, now: Date): Promise<true | WorkspaceDeletion | null> {
    if ((await client.query('SELECT FROM workspaces WHERE id = $1 FOR UPDATE', [workspaceId])).rowCount === 0) return null;
    const [running] = await this.rows(
      `SELECT count(*) AS count, max(lease_expires_at) AS until FROM (
         SELECT status, lease_expires_at FROM jobs WHERE workspace_id = $1 AND status IN ('PENDING', 'RUNNING') FOR UPDATE
       ) queued WHERE status = 'RUNNING' AND lease_expires_at > ${jobTime('$2')}`,
      [workspaceId, this.jobClock(now)],
      client,
    );
    if (Number(running.count) > 0) return { deleted: false, running: Number(running.count), leaseEndsAt: new Date(running.until as Date) };
    return true;
  }

  /** The workspace's keys, and the limiter counters named after the workspace or one of its keys. */
  private async deleteKeys(client: pg.PoolClient, workspaceId: string): Promise<Record<string, number>> {
    const keys = (await this.rows('DELETE FROM api_keys WHERE workspace_id = $1 RETURNING id', [workspaceId], client)).map((row) => row.id);
    const rateLimits = await this.count(
      `DELETE FROM rate_limits WHERE strpos(key, $1) > 0 OR EXISTS (SELECT FROM unnest($2::text[]) AS k (id) WHERE strpos(key, k.id) > 0)`,
      [workspaceId, keys],
      client,
    );
    return { api_keys: keys.length, rate_limits: rateLimits };
  }

  async insertApiKey(key: ApiKeyRecord, event: NewSecurityEvent): Promise<boolean> {
    return this.eventTransaction(event.workspaceId, async (client, lockEvents) => {
      // Not a foreign key violation: another process may have deleted the workspace since the caller found it. The
      // share lock holds off a deletion until this commits.
      const workspace = await client.query('SELECT 1 FROM workspaces WHERE id = $1 FOR KEY SHARE', [key.workspaceId]);
      if (workspace.rowCount === 0) return false;
      await this.insert(client, 'api_keys', apiKeyToRow(key, PG));
      await this.insertEventWith(client, lockEvents, event);
      return true;
    });
  }

  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | null> {
    const [row] = await this.lookup(
      'SELECT * FROM api_keys WHERE hash = $1 UNION ALL SELECT * FROM api_keys WHERE previous_hash = $1 LIMIT 1',
      [hash],
    );
    return row ? rowToApiKey(row) : null;
  }

  async findApiKey(id: string): Promise<ApiKeyRecord | null> {
    const [row] = await this.lookup('SELECT * FROM api_keys WHERE id = $1', [id]);
    return row ? rowToApiKey(row) : null;
  }

  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    const rows =
      workspaceId === undefined
        ? await this.rows('SELECT * FROM api_keys ORDER BY created_at, id')
        : await this.lookup('SELECT * FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id', [workspaceId]);
    return rows.map(rowToApiKey);
  }

  async revokeApiKey(id: string, at: Date, event: NewSecurityEvent): Promise<boolean> {
    if (!storable(id)) return false;
    return this.eventTransaction(event.workspaceId, async (client, lockEvents) => {
      const changed = await this.count('UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [at, id], client);
      if (changed === 0) return false;
      await this.insertEventWith(client, lockEvents, event);
      return true;
    });
  }

  async rotateApiKey(id: string, replacing: string, hash: string, prefix: string, previousValidUntil: Date | null, event: NewSecurityEvent): Promise<boolean> {
    if (!storable(id)) return false;
    return this.eventTransaction(event.workspaceId, async (client, lockEvents) => {
      const changed = await this.count(
        `UPDATE api_keys SET previous_hash = hash, previous_hash_expires_at = $1, hash = $2, prefix = $3
         WHERE id = $4 AND hash = $5 AND revoked_at IS NULL`,
        [previousValidUntil, hash, prefix, id, replacing],
        client,
      );
      if (changed === 0) return false;
      await this.insertEventWith(client, lockEvents, event);
      return true;
    });
  }

  async touchApiKey(key: ApiKeyRecord, at: Date): Promise<void> {
    if (!storable(key.id)) return;
    await this.db.query('UPDATE api_keys SET last_used_at = $1 WHERE id = $2', [at, key.id]);
  }

  async upsertTags(workspaceId: string, names: string[]): Promise<void> {
    await this.db.query('INSERT INTO tags (workspace_id, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING', [
      workspaceId,
      names,
    ]);
  }

  async missingTags(workspaceId: string, names: string[]): Promise<string[]> {
    // A name that cannot be stored is no tag: never found, so missing.
    const rows = await this.lookup('SELECT name FROM tags WHERE workspace_id = $1 AND name = ANY($2::text[])', [workspaceId, names.filter(storable)]);
    const found = new Set(rows.map((row) => String(row.name)));
    return names.filter((name) => !found.has(name));
  }

  async insertCampaign(campaign: Campaign): Promise<void> {
    await this.insertCampaignWith(this.db, campaign);
  }

  private async insertCampaignWith(client: Queryable, campaign: Campaign): Promise<void> {
    await this.insert(client, 'campaigns', campaignToRow(campaign, PG));
  }

  async getCampaign(workspaceId: string, id: string): Promise<Campaign | null> {
    const [row] = await this.lookup('SELECT * FROM campaigns WHERE id = $1 AND workspace_id = $2', [id, workspaceId], this.view);
    return row ? rowToCampaign(row) : null;
  }

  async listCampaigns(workspaceId: string, options: ListOptions): Promise<Campaign[]> {
    const values: unknown[] = [workspaceId];
    const param = (value: unknown): string => `$${values.push(value)}`;
    const rows = await this.lookup(newestInWorkspace('campaigns', [pageBound('campaigns', options, param)], param(options.first)), values, this.view);
    return rows.map(rowToCampaign);
  }

  /**
   * The job's turn by the rule of jobTurn (rows.ts), from the workspace's last turn, which a statement of its own
   * moves before the enqueue's transaction. Read in that transaction from the jobs, it was the same for enqueues
   * running at once, each blind to the jobs of the others until they commit: a job of another workspace then
   * waited behind a whole wave of them, not behind one. Concurrent enqueues of the workspace wait for each other on
   * its row only for this statement. A turn whose enqueue then fails is never used, which leaves the workspace's
   * next job one turn later than it could be: a gap costs it that turn and nothing else.
   */
  private async nextTurn(workspaceId: string): Promise<number> {
    const [row] = await this.rows(
      `INSERT INTO job_queue_turns AS last (workspace_id, turn) SELECT $1, turn FROM job_queue_clock
       ON CONFLICT (workspace_id) DO UPDATE SET turn = GREATEST(last.turn + 1, excluded.turn)
       RETURNING turn`,
      [workspaceId],
    );
    return Number(row.turn);
  }

  async enqueueJob(job: DuplicationJob, event: NewSecurityEvent, reservation?: IdempotencyRecord): Promise<boolean> {
    const turn = await this.nextTurn(job.workspaceId);
    return this.eventTransaction(event.workspaceId, async (client, lockEvents) => {
      // Binds the key first, only while it is still this reservation's: the job is written after, or not at all.
      if (reservation !== undefined) {
        const bound = await client.query(
          'UPDATE idempotency_keys SET job_id = $1 WHERE workspace_id = $2 AND key = $3 AND job_id IS NULL AND request_hash = $4 AND created_at = $5',
          [job.id, reservation.workspaceId, reservation.key, reservation.requestHash, reservation.createdAt],
        );
        if (bound.rowCount === 0) return false;
      }
      // Every time of the job is the database's, so that its run time is one every instance reads alike, and its
      // times are in order whichever instances accepted and ran it.
      const { run_at: _runAt, created_at: _createdAt, updated_at: _updatedAt, ...row } = newJobToRow(job, PG);
      const times = [['run_at', job.runAt], ['created_at', job.createdAt], ['updated_at', job.updatedAt]] as const;
      const read = times.map(([column, at]) => ({ column, sql: jobTime, param: this.jobClock(at) }));
      const { text, values } = insertStatement('jobs', { ...row, queue_turn: turn }, (position) => `$${position}`, read);
      await client.query(text, values);
      await this.insertEventWith(client, lockEvents, event);
      return true;
    });
  }

  async getJob(workspaceId: string, id: string): Promise<DuplicationJob | null> {
    const [row] = await this.lookup('SELECT * FROM jobs WHERE id = $1 AND workspace_id = $2', [id, workspaceId], this.view);
    return row ? rowToJob(row) : null;
  }

  async getJobs(workspaceId: string, ids: readonly string[]): Promise<DuplicationJob[]> {
    // An id that cannot be stored is no job's, as in getJob.
    const rows = await this.lookup('SELECT * FROM jobs WHERE workspace_id = $1 AND id = ANY($2::text[])', [workspaceId, ids.filter(storable)], this.view);
    return rows.map(rowToJob);
  }

  async findJob(id: string): Promise<DuplicationJob | null> {
    const [row] = await this.lookup('SELECT * FROM jobs WHERE id = $1', [id]);
    return row ? rowToJob(row) : null;
  }

  async listJobs(filter: JobFilter, first: number, beforeId: string | null): Promise<DuplicationJob[]> {
    const values: unknown[] = [];
    const text = listJobsSql(filter, first, beforeId, {
      param: (value) => `$${values.push(value)}`,
      toDate: (value) => value,
      inWorkspace: (placeholder) => `workspace_id = ANY(ARRAY[${placeholder}::text])`,
    });
    return (await this.lookup(text, values)).map(rowToJob);
  }

  /** As finishJob, for a job no worker holds: PENDING, or RUNNING under a lease expired by the queue's clock. */
  async cancelJob(jobId: string, outcome: JobFailure, now: Date): Promise<boolean> {
    if (!storable(jobId)) return false;
    return this.eventTransaction(outcome.event.workspaceId, async (client, lockEvents) => {
      const changed = await this.count(
        `UPDATE jobs SET status = 'FAILED', finished_at = ${jobTime('$1')}, updated_at = ${jobTime('$1')}, error_code = $2, error_message = $3,
           lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $4 AND (status = 'PENDING' OR (status = 'RUNNING' AND lease_expires_at < ${jobTime('$1')}))`,
        [this.jobClock(now), outcome.error.code, outcome.error.message, jobId],
        client,
      );
      if (changed === 0) return false;
      await this.insertEventWith(client, lockEvents, outcome.event);
      return true;
    });
  }

  /**
   * Jobs whose lease expired (their worker died) first, then due pending jobs by turn (nextTurn), and the
   * clock moved up to the last turn taken, in one statement. Rows another instance is claiming right now are
   * skipped, not waited for. FOR UPDATE cannot sit under a UNION, hence one locking CTE per kind of runnable job;
   * their UNION ALL gives the expired ones first. Concurrent claims wait for each other only on the clock's row,
   * and only those that move it, after their jobs are taken. The waiting jobs whose time has come are made due
   * first (promoteDueJobs): a data-modifying CTE's changes are invisible to the rest of its statement.
   * `run_at <= $3` stays, so that no job is taken early whatever its flag. An expired lease's owner is read as its
   * row is locked, so that the worker can say whose run it took over.
   */
  async claimJobs(owner: string, limit: number, now: Date, leaseExpiresAt: Date): Promise<ClaimedJob[]> {
    const clock = this.jobClock(now);
    await this.promoteDueJobs(clock);
    const rows = await this.rows(
      `WITH expired AS (
         SELECT id, lease_owner FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < ${jobTime('$3')}
         ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED
       ), pending AS (
         SELECT id FROM jobs WHERE status = 'PENDING' AND waiting = false AND run_at <= ${jobTime('$3')}
         ORDER BY queue_turn, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
       ), picked AS (
         SELECT id, lease_owner AS taken_over_from FROM expired UNION ALL SELECT id, NULL FROM pending LIMIT $4
       ), claimed AS (
         UPDATE jobs SET status = 'RUNNING', lease_owner = $1, lease_expires_at = ${jobTime('$3')} + ${millis('$2')}, attempts = attempts + 1,
           updated_at = ${jobTime('$3')}
         FROM picked WHERE jobs.id = picked.id
         RETURNING jobs.*, picked.taken_over_from
       ), clock AS (
         UPDATE job_queue_clock SET turn = last.turn FROM (SELECT MAX(queue_turn) AS turn FROM claimed) last WHERE job_queue_clock.turn < last.turn
       )
       SELECT * FROM claimed`,
      [owner, leaseExpiresAt.getTime() - now.getTime(), clock, limit],
    );
    return claimedJobs(rows).jobs;
  }

  /**
   * Makes due the waiting jobs whose time has come, one claim at a time, and only when there are some. Two
   * promotions at once are not harmless: the one that waited for the other re-checks every row the other made
   * due, and an UPDATE locks each row it re-checks until its transaction ends, due or not. Claims skip locked
   * rows, so for as long as it went on (waiting on any one row) they took none of the due jobs it had re-checked.
   * After the lock, the statement's snapshot is taken: it sees the jobs made due while it waited, and leaves them alone.
   * A claim that waits longer than PROMOTE_LOCK_WAIT_MS leaves the promotion to the one holding the lock, and
   * claims the jobs due already: waiting on, every instance's claims stalled behind one frozen in the middle of its
   * promotion, and failed at the statement timeout, over and over until that instance's transaction ended. That
   * wait is the lock_timeout of the lock's own statement, whatever the role's; the UPDATE then waits for a job's
   * row as long as the gateway's lock timeout (LOCK_TIMEOUT_MS) lets it.
   */
  private async promoteDueJobs(clock: Date | null): Promise<void> {
    if ((await this.rows(anyJobToPromoteSql(jobTime('$1')), [clock])).length === 0) return;
    await transaction(this.pool, async (client) => {
      await client
        .query(`SELECT pg_advisory_xact_lock($1, hashtext(current_schema())) FROM (SELECT set_config('lock_timeout', $2, true)) AS bounded`, [
          PROMOTE_LOCK,
          String(PROMOTE_LOCK_WAIT_MS),
        ])
        .catch((error: unknown) => {
          throw (error as { code?: unknown }).code === LOCK_NOT_AVAILABLE ? new PromotionLeftToAnother() : error;
        });
      await client.query(`SELECT set_config('lock_timeout', $1, true)`, [String(LOCK_TIMEOUT_MS)]);
      await this.count(promoteDueJobsSql(jobTime('$1')), [clock], client);
    }).catch((error: unknown) => {
      if (!(error instanceof PromotionLeftToAnother)) throw error;
    });
  }

  async finishJob(jobId: string, owner: string, outcome: JobOutcome, now: Date): Promise<boolean> {
    return this.eventTransaction(outcome.event.workspaceId, async (client, lockEvents) => {
      const changed = await this.count(
        `UPDATE jobs SET status = $1, finished_at = ${jobTime('$2')}, updated_at = ${jobTime('$2')}, result_campaign_id = $3, error_code = $4,
           error_message = $5, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = $6 AND status = 'RUNNING' AND lease_owner = $7`,
        [outcome.status, this.jobClock(now), outcome.resultCampaignId, outcome.error?.code ?? null, outcome.error?.message ?? null, jobId, owner],
        client,
      );
      if (changed === 0) return false;
      if (outcome.newCampaign) await this.insertCampaignWith(client, outcome.newCampaign);
      await this.insertEventWith(client, lockEvents, outcome.event);
      return true;
    });
  }

  async retryJob(jobId: string, owner: string, runAt: Date, error: JobError | null, now: Date, unacted = false): Promise<boolean> {
    const changed = await this.count(
      `UPDATE jobs SET status = 'PENDING', run_at = ${jobTime('$2')} + ${millis('$1')}, waiting = $1::double precision > 0, updated_at = ${jobTime('$2')},
         error_code = $3, error_message = $4, upstream_unacted_attempts = upstream_unacted_attempts + $7, lease_owner = NULL, lease_expires_at = NULL
       WHERE id = $5 AND status = 'RUNNING' AND lease_owner = $6`,
      [runAt.getTime() - now.getTime(), this.jobClock(now), error?.code ?? null, error?.message ?? null, jobId, owner, unacted ? 1 : 0],
    );
    return changed > 0;
  }

  async deferJob(jobId: string, owner: string, runAt: Date, now: Date): Promise<boolean> {
    const changed = await this.count(
      `UPDATE jobs SET status = 'PENDING', attempts = GREATEST(attempts - 1, 0), run_at = ${jobTime('$2')} + ${millis('$1')}, waiting = $1::double precision > 0,
         updated_at = ${jobTime('$2')}, lease_owner = NULL, lease_expires_at = NULL
       WHERE id = $3 AND status = 'RUNNING' AND lease_owner = $4`,
      [runAt.getTime() - now.getTime(), this.jobClock(now), jobId, owner],
    );
    return changed > 0;
  }

  async releaseJobs(owner: string, now: Date, { keepAttempts = false }: ReleaseOptions = {}): Promise<number> {
    return this.count(
      `UPDATE jobs SET status = 'PENDING', attempts = CASE WHEN $3::boolean THEN attempts ELSE GREATEST(attempts - 1, 0) END, run_at = ${jobTime('$1')},
         waiting = false, updated_at = ${jobTime('$1')}, lease_owner = NULL, lease_expires_at = NULL
       WHERE status = 'RUNNING' AND lease_owner = $2`,
      [this.jobClock(now), owner, keepAttempts],
    );
  }

  async countJobs(status: JobStatus): Promise<number> {
    const [row] = await this.rows(COUNT_JOBS_SQL[status]);
    return Number(row.count);
  }

  async oldestDueJobWaitMs(now: Date): Promise<number | null> {
    const [row] = await this.rows(oldestDueJobSql(jobTime('$1')), [this.jobClock(now)]);
    return row.run_at === null ? null : (row.now as Date).getTime() - (row.run_at as Date).getTime();
  }

  async reserveIdempotencyKey(record: IdempotencyRecord, staleBefore: Date): Promise<IdempotencyRecord | null> {
    // The holder can disappear between the two statements (released, pruned): then try again.
    for (;;) {
      const reserved = await this.count(
        `INSERT INTO idempotency_keys AS held (workspace_id, key, request_hash, job_id, created_at, expires_at)
         VALUES ($1, $2, $3, NULL, $4, $5)
         ON CONFLICT (workspace_id, key) DO UPDATE SET request_hash = excluded.request_hash, job_id = NULL,
           created_at = excluded.created_at, expires_at = excluded.expires_at
         WHERE held.expires_at <= excluded.created_at OR (held.job_id IS NULL AND held.created_at < $6)`,
        [record.workspaceId, record.key, record.requestHash, record.createdAt, record.expiresAt, staleBefore],
      );
      if (reserved > 0) return null;
      const [row] = await this.rows('SELECT * FROM idempotency_keys WHERE workspace_id = $1 AND key = $2', [record.workspaceId, record.key]);
      if (row) return rowToIdempotency(row);
    }
  }

  async findIdempotencyKey(workspaceId: string, key: string): Promise<IdempotencyRecord | null> {
    const [row] = await this.lookup('SELECT * FROM idempotency_keys WHERE workspace_id = $1 AND key = $2', [workspaceId, key]);
    return row ? rowToIdempotency(row) : null;
  }

  async releaseIdempotencyKey(reservation: IdempotencyRecord): Promise<void> {
    const { workspaceId, key, requestHash, createdAt } = reservation;
    if (![workspaceId, key, requestHash].every(storable)) return;
    await this.db.query(
      'DELETE FROM idempotency_keys WHERE workspace_id = $1 AND key = $2 AND job_id IS NULL AND request_hash = $3 AND created_at = $4',
      [workspaceId, key, requestHash, createdAt],
    );
  }

  // Several instances prune at once: rows another one is deleting are skipped rather than waited for. The batch's ids
  // are an array, which the planner looks up in the primary key; as `id IN (subquery)` it joined them to a
  // sequential scan of every job, each batch.
  async pruneFinishedJobs(finishedBefore: Date, limit: number): Promise<number> {
    return this.count(
      `DELETE FROM jobs WHERE id = ANY(ARRAY(
         SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2
         FOR UPDATE SKIP LOCKED))`,
      [finishedBefore, limit],
    );
  }

  async pruneEvents(occurredBefore: Date, limit: number, after: EventPruneCursor | null): Promise<EventPruneBatch> {
    // The cursor is two conditions rather than a row comparison, which the index on occurred_at alone cannot seek.
    // OFFSET 0 keeps the job lookup a primary-key probe per event examined: without it the planner may hash
    // every job id instead, reading the whole jobs table for each batch. Only the events that go are locked
    // (those another instance is deleting are skipped): locking the kept ones would write each of them every pass.
    const examined = await this.rows(
      `WITH batch AS (
         SELECT seq, occurred_at, job_id IS NULL OR NOT EXISTS (SELECT FROM jobs WHERE jobs.id = security_events.job_id OFFSET 0) AS gone
         FROM security_events
         WHERE occurred_at < $1${after ? ' AND occurred_at >= $3 AND (occurred_at > $3 OR seq > $4)' : ''}
         ORDER BY occurred_at, seq LIMIT $2),
       deleted AS (
         DELETE FROM security_events WHERE seq IN (
           SELECT seq FROM security_events WHERE seq IN (SELECT seq FROM batch WHERE gone) FOR UPDATE SKIP LOCKED)
         RETURNING seq)
       SELECT seq, occurred_at, (SELECT count(*) FROM deleted) AS deleted FROM batch ORDER BY occurred_at, seq`,
      [occurredBefore, limit, ...(after ? [after.occurredAt, after.seq] : [])],
    );
    return eventPruneBatch(examined, limit, Number(examined[0]?.deleted ?? 0));
  }

  async pruneIdempotencyKeys(expiredBefore: Date, limit: number): Promise<number> {
    return this.count(
      `DELETE FROM idempotency_keys WHERE (workspace_id, key) IN (
         SELECT workspace_id, key FROM idempotency_keys WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      [expiredBefore, limit],
    );
  }

  async insertEvent(event: NewSecurityEvent): Promise<void> {
    await this.eventTransaction(event.workspaceId, (client, lockEvents) => this.insertEventWith(client, lockEvents, event));
  }

  /**
   * The last write of its transaction. A sequence hands out numbers in the order of the inserts, but
   * transactions commit in any order, so an event could become visible below one a poller has already seen
   * and be missed. Holding the workspace's lock from before the number is taken until the commit makes the
   * events of one workspace commit in the order of their numbers. It serialises only the commits of one
   * workspace, whose quota is 100 a minute.
   */
  private async insertEventWith(client: pg.PoolClient, lockEvents: LockEvents, event: NewSecurityEvent): Promise<void> {
    await lockEvents();
    await this.insert(client, 'security_events', eventToRow(event, PG));
  }

  /**
   * Runs `work` in a transaction that takes the workspace's event lock (`lockEvents`), waiting for it for at most
   * EVENT_LOCK_WAIT_MS in all. At most eventLockWaits' bounds of the instance's connections wait for one workspace's
   * lock, and for all, at once; a write that finds the lock held and no turn free rolls back, giving its connection
   * up, parks until a turn is handed to it and runs again from the start, having changed nothing. Out of time, parked
   * or on the server, it is answered UNAVAILABLE (the store busy) with a LockWaitCancelled naming the lock.
   */
  private async eventTransaction<T>(workspaceId: string, work: (client: pg.PoolClient, lockEvents: LockEvents) => Promise<T>): Promise<T> {
    const deadline = Date.now() + EVENT_LOCK_WAIT_MS;
    const handed: { turn: EventLockTurn | null } = { turn: null };
    try {
      for (;;) {
        try {
          return await transaction(this.pool, (client) =>
            work(client, () => {
              const turn = handed.turn ?? this.eventLockWaits.take(workspaceId);
              handed.turn = null;
              return this.lockEvents(client, workspaceId, turn, deadline);
            }),
          );
        } catch (error) {
          if (!(error instanceof EventLockBusy)) throw error;
        }
        handed.turn = await this.eventLockWaits.next(workspaceId, deadline - Date.now());
        if (handed.turn === null) {
          const { perWorkspace, inAll } = this.eventLockWaits;
          throw storeBusy(
            new LockWaitCancelled(
              eventLockName(workspaceId),
              new EventLockBusy('no turn to wait for it came free in time'),
              `for ${EVENT_LOCK_WAIT_MS / 1000} s, without a connection while as many of this instance's connections as may ` +
                `waited for event locks (${perWorkspace} for one workspace's, ${inAll} in all)`,
            ),
          );
        }
      }
    } finally {
      handed.turn?.release();
    }
  }

  /**
   * The workspace's event lock, for the transaction. With a turn, waited for until `deadline` (its statement's lock
   * timeout, whatever the gateway's or a role's: a role's of a few milliseconds failed accepts of a busy workspace);
   * without one, taken only if it is free, else EventLockBusy. The rest of the transaction, the event's insert and
   * the commit, waits for no lock, and has none set, in the same statement to cost no round trip.
   */
  private async lockEvents(client: pg.PoolClient, workspaceId: string, turn: EventLockTurn | null, deadline: number): Promise<void> {
    if (turn === null) {
      const { rows } = await client.query(
        `SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS taken FROM (SELECT set_config('lock_timeout', '0', true)) AS unbounded`,
        [EVENT_ORDER_LOCK, workspaceId],
      );
      if (!rows[0].taken) throw new EventLockBusy();
      return;
    }
    try {
      await client.query(
        `SELECT pg_advisory_xact_lock($1, hashtext($2)), set_config('lock_timeout', '0', true) FROM (SELECT set_config('lock_timeout', $3, true)) AS bounded`,
        [EVENT_ORDER_LOCK, workspaceId, String(Math.max(1, deadline - Date.now()))],
      );
    } catch (error) {
      throw asLockWaitOutage(error, eventLockName(workspaceId));
    } finally {
      turn.release();
    }
  }

  async listEvents(workspaceId: string, filter: SecurityEventFilter, options: ListOptions): Promise<SecurityEvent[]> {
    const types = distinctTypes(filter);
    if (types?.length === 0) return [];
    const values: unknown[] = [workspaceId];
    const param = (value: unknown): string => `$${values.push(value)}`;
    const where: string[] = [];
    if (filter.jobId !== undefined) where.push(`job_id = ${param(filter.jobId)}`);
    if (filter.apiKeyId !== undefined) where.push(`api_key_id = ${param(filter.apiKeyId)}`);
    const seeks = eventWindowSeeks(filter);
    const bounded = seeks.since !== undefined || seeks.until !== undefined;
    if (!bounded) {
      where.push(pageBound('security_events', options, param));
      if (options.afterSeq !== undefined) where.push(`seq > ${param(options.afterSeq)}`);
    } else {
      // The window's bounds on seq, and the page's cursor, are read first, so that the listing is planned knowing
      // them. As subqueries they are unknown to the planner, which takes a range between a known and an unknown
      // bound for a small one: it may then read every event in it by the primary key, every other workspace's
      // included, to sort the few of this workspace.
      const seek: unknown[] = [workspaceId];
      const at = (value: unknown): string => `$${seek.push(value)}`;
      const [bounds] = await this.lookup(
        `SELECT ${seeks.since ? EVENT_WINDOW_SQL.lastBeforeSince(IN_WORKSPACE, at(seeks.since)) : 0} AS after,
           ${seeks.until ? EVENT_WINDOW_SQL.firstFromUntil(IN_WORKSPACE, at(seeks.until)) : Number.MAX_SAFE_INTEGER} AS before
           ${options.beforeId !== undefined ? `, ${rowSeq('security_events', '$1', at(options.beforeId))} AS cursor` : ''}`,
        seek,
        this.view,
      );
      if (bounds === undefined) return [];
      const cursor = options.beforeId !== undefined ? bounds.cursor : (options.beforeSeq ?? Number.MAX_SAFE_INTEGER);
      if (cursor === null) throw eventCursorGone();
      if (seeks.since !== undefined || options.afterSeq !== undefined) where.push(`seq > ${param(Math.max(Number(bounds.after), options.afterSeq ?? 0))}`);
      where.push(`seq < ${param(Math.min(Number(bounds.before), Number(cursor)))}`);
    }
    // `± interval '0 s'`: the times filter the rows of the seq range, and must not draw the planner to a time index,
    // from which the rows come out of seq order, to be sorted, all of them, for every page. Two expressions, not one:
    // the planner takes bounds on one expression for a range, guesses that it holds 0.5% of the rows, and would then
    // rather sort the whole seq range of the window for each page than read it in order up to the page's end.
    if (filter.since !== undefined) where.push(`occurred_at + interval '0 s' >= ${param(filter.since)}`);
    if (filter.until !== undefined) where.push(`occurred_at - interval '0 s' < ${param(filter.until)}`);
    if (types === undefined && !filter.unknownTypes) where.push(KNOWN_EVENT_TYPES_SQL);
    const limit = param(options.first);
    const newest = (conditions: string[]) => newestInWorkspace('security_events', conditions, limit);
    let text: string;
    if (types === undefined || filter.jobId !== undefined) {
      // A job has a handful of events: its own index finds them all, whatever their types.
      if (types !== undefined) where.push(`type = ANY(${param(types)}::text[])`);
      text = newest(where);
    } else {
      // One seek per type, each reading at most a page in seq order, merged. Given `type = ANY(…)` PostgreSQL reads
      // the workspace's events newest first and filters them by type, every one of them when the types are rare in
      // it. Each type is a constant of its own branch, so that the planner weighs it by how often it occurs in the
      // workspace (the statistics of migration 2).
      const branches = types.map((type) => newest([`type = ${param(type)}`, ...where]));
      text = branches.length === 1 ? branches[0] : `${branches.map((branch) => `(${branch})`).join(' UNION ALL ')} ORDER BY seq DESC LIMIT ${limit}`;
    }
    const rows = await this.lookup(text, values, this.view);
    // A cursor's row that is gone lists nothing (pageBound): told apart from the end of the list only then. A time
    // window read the cursor's row already.
    if (rows.length === 0 && options.beforeId !== undefined && !bounded && (await this.eventSeq(workspaceId, options.beforeId)) === null) {
      throw eventCursorGone();
    }
    return rows.map(rowToEvent);
  }

  async eventSeq(workspaceId: string, id: string): Promise<number | null> {
    const [row] = await this.lookup(`SELECT ${rowSeq('security_events', '$1', '$2')} AS seq`, [workspaceId, id], this.view);
    return (row?.seq ?? null) === null ? null : Number(row.seq);
  }

  /**
   * One INSERT of every row (a page of 1,000 jobs is 24,000 parameters, under pg's 65,535). An event's seq is written
   * as it was, and the sequence moved past the highest, so that events written later number after it.
   */
  async importRows<T extends ExportTable>(table: T, records: ExportRows[T][]): Promise<void> {
    const rows = importRows(table, records, PG);
    if (rows.length === 0) return;
    const columns = Object.keys(rows[0]);
    const values: unknown[] = [];
    const tuples = rows.map((row) => `(${columns.map((column) => `$${values.push(row[column])}`).join(', ')})`);
    await transaction(this.pool, async (client) => {
      await client.query(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, values);
      if (table === 'security_events') await client.query("SELECT setval(pg_get_serial_sequence('security_events', 'seq'), MAX(seq)) FROM security_events");
    });
  }

  /**
   * Every row of the table counted, which outlasts the pool's statement and query timeouts on a large store (205,000
   * events took 115 ms; some 20 million would take over 10 s): on a connection of its own without them, as a migration
   * runs, and SET LOCAL for a pooler in transaction mode, where the role's own statement_timeout applies.
   */
  async countRows(table: ExportTable): Promise<RowCount> {
    const client = new pg.Client(clientConfig(this.options));
    client.on('error', () => undefined);
    try {
      await client.connect();
      await startSession(client, this.options, 'migration');
      await client.query('BEGIN');
      await client.query('SET LOCAL statement_timeout = 0');
      const [row] = await this.rows(countRowsSql(table), [], client);
      await client.query('COMMIT');
      return { ofWorkspaces: Number(row.of_workspaces), orphaned: Number(row.orphaned) };
    } catch (error) {
      // As the pool's queries report it: a lost or unreachable server is UNAVAILABLE.
      throw asOutage(error);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * INSERT on each table, UPDATE on the events' sequence for importRows' setval, and CREATE on the schema for the
   * copy's mark (markCopyStarted): a runtime role granted only
   * USAGE on sequences (README, "PostgreSQL roles") wrote a workspace, its keys and tags, then failed at the first
   * page of events.
   */
  async missingImportPrivileges(): Promise<string[]> {
    const rows = await this.rows(
      `SELECT 'INSERT on ' || t AS missing FROM unnest($1::text[]) AS t WHERE NOT has_table_privilege(t, 'INSERT')
       UNION ALL
       SELECT 'UPDATE on sequence ' || s FROM pg_get_serial_sequence('security_events', 'seq') AS s WHERE NOT has_sequence_privilege(s, 'UPDATE')
       UNION ALL
       SELECT 'CREATE on schema ' || current_schema() WHERE NOT has_schema_privilege(current_schema(), 'CREATE')`,
      [EXPORT_TABLES],
    );
    return rows.map((row) => String(row.missing));
  }

  async copyStarted(): Promise<Date | null> {
    const [row] = await this.rows(`SELECT to_regclass('store_copy') IS NOT NULL AS marked`);
    if (!row.marked) return null;
    const [mark] = await this.rows('SELECT started_at FROM store_copy LIMIT 1');
    return mark ? (mark.started_at as Date) : new Date(0);
  }

  async markCopyStarted(at: Date): Promise<void> {
    await transaction(this.pool, async (client) => {
      await client.query('CREATE TABLE store_copy (started_at timestamptz NOT NULL)');
      await client.query('INSERT INTO store_copy (started_at) VALUES ($1)', [at]);
    });
  }

  async markCopyFinished(): Promise<void> {
    await this.db.query('DROP TABLE store_copy');
  }

  /** A key no row can hold names no row: the page is empty. */
  async exportRows<T extends ExportTable>(workspaceId: string, table: T, after: string | null, limit: number): Promise<ExportPage<T>> {
    const text = exportPageSql(table, (column) => `${column} = ANY(ARRAY[$1::text])`, after === null ? null : '$3', '$2');
    const rows = await this.lookup(text, [workspaceId, limit, ...(after === null ? [] : [exportCursor(table, after)])]);
    return exportPage(table, rows, limit);
  }
}
