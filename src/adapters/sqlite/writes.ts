import type Database from 'better-sqlite3';
import { holdsIdempotencyKey } from '../../domain/idempotency.js';
import type { BatchErasedTable, ClaimedJob, EventPruneBatch, EventPruneCursor, ExportRows, ExportTable, JobFailure, JobOutcome, ReleaseOptions, WorkspaceDeletion } from '../../domain/ports.js';
import type { ApiKeyRecord, Campaign, DuplicationJob, IdempotencyRecord, JobError, NewSecurityEvent, Workspace } from '../../domain/types.js';
import {
  apiKeyToRow,
  campaignToRow,
  claimedJobs,
  eventPruneBatch,
  eraseWorkspaceRowsSql,
  eventToRow,
  importRows,
  insertStatement,
  jobTurn,
  newJobToRow,
  promoteDueJobsSql,
  rowToIdempotency,
  type ReadColumn,
  type Row,
  type SqlValues,
} from '../rows.js';
import { Statements } from './connection.js';
import type { CounterRow } from './rate-limiter.js';

/** The RUNNING jobs a claim takes over, oldest lease first: their worker died, hung or lost the store. */
const EXPIRED_LEASES_SQL = "SELECT id, lease_owner FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < @now ORDER BY lease_expires_at LIMIT +@limit";

/**
 * Jobs whose lease expired (their worker died) first, then due pending jobs by turn (rows.ts, jobTurn). Each branch
 * stops after `limit` rows of its index: sorting every due job on each claim made draining a long queue quadratic.
 * A compound SELECT without ORDER BY gives its branches' rows in order, so its LIMIT keeps the expired ones first.
 * Pending jobs put there not due yet (waiting for a retry) are not in the turn index until PROMOTE_DUE_JOBS_SQL
 * finds them due; `run_at <= @now` stays, so that no job is taken early whatever its flag.
 */
export const CLAIM_JOBS_SQL = `UPDATE jobs SET status = 'RUNNING', lease_owner = @owner, lease_expires_at = @lease,
    attempts = attempts + 1, updated_at = @now
  WHERE id IN (
    SELECT id FROM (${EXPIRED_LEASES_SQL})
    UNION ALL
    SELECT id FROM (SELECT id FROM jobs INDEXED BY jobs_turn WHERE status = 'PENDING' AND waiting = false AND run_at <= @now
      ORDER BY queue_turn, run_at, id LIMIT +@limit)
    LIMIT +@limit
  )
  RETURNING *`;

/** Run by each claim first, in the same write: see promoteDueJobsSql. */
export const PROMOTE_DUE_JOBS_SQL = promoteDueJobsSql('@now');

const ms = (value: Date | null): number | null => (value === null ? null : value.getTime());
// Times are kept as epoch milliseconds, booleans as 0 and 1.
const SQLITE: SqlValues = { date: (value) => value.getTime(), bool: (value) => (value ? 1 : 0) };

/**
 * Every write of the embedded store, as synchronous statements on the writer's connection. Arguments and
 * results cross a thread boundary (writer.ts), so they are plain data: domain objects, dates, numbers.
 */
export class SqliteWrites {
  private readonly sql: Statements;
  private readonly insertTexts = new Map<string, string>();
  private readonly unheldMaxPages: number;

  constructor(private readonly db: Database.Database) {
    this.sql = new Statements(db);
    this.unheldMaxPages = Number(db.pragma('max_page_count', { simple: true }));
  }

  /**
   * Each table's rows come from one mapper in rows.ts, so they always have the same columns in the same order:
   * the INSERT text is built once per table instead of on every write.
   */
  private insert(table: string, row: Row, read?: ReadColumn): void {
    let text = this.insertTexts.get(table);
    if (text === undefined) {
      text = insertStatement(table, row, () => '?', read ? [read] : []).text;
      this.insertTexts.set(table, text);
    }
    this.sql.get(text).run(...Object.values(row), ...(read ? [read.param] : []));
  }

  /**
   * Whether the storage takes a write at all: 8 new bytes in row 0 of storage_probe, committed. A statement that
   * changes nothing writes nothing (SQLite skips a page whose bytes stay the same), so the bytes are random. A
   * read-only remount or a failing disk refuses it; on a full disk it may still find room, see probe().
   */
  ping(): void {
    this.sql.get('INSERT INTO storage_probe (id, filler) VALUES (0, randomblob(8)) ON CONFLICT (id) DO UPDATE SET filler = excluded.filler').run();
  }

  /**
   * Whether the storage takes writes again after one failed for a storage reason: 64 KiB of new pages, more
   * than a request writes, taken from free pages or by growing the file, and appended to the WAL at commit.
   * The probe's previous row is freed only after, so its pages cannot be the ones reused; its latest row stays.
   */
  probe(): void {
    this.sql.get('INSERT INTO storage_probe (filler) VALUES (zeroblob(65536))').run();
    this.sql.get('DELETE FROM storage_probe WHERE id < last_insert_rowid()').run();
  }

  /**
   * Holds the database at its current size (`held`), or lets it grow again, on this connection: a write that
   * needs a new page then fails with SQLITE_FULL, as on a full disk. For tests of a full disk.
   */
  holdSize(held: boolean): void {
    const pages = held ? Number(this.db.pragma('page_count', { simple: true })) : this.unheldMaxPages;
    this.db.pragma(`max_page_count = ${pages}`);
  }

  createWorkspace(workspace: Workspace): boolean {
    // Not a constraint error: another process may have made the name since the caller looked.
    const result = this.sql
      .get('INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING')
      .run(workspace.id, workspace.name, workspace.createdAt.getTime());
    return result.changes === 1;
  }

  /**
   * The workspace's rows, table by table, those without a foreign key first (nothing else removes them), then each
   * table before the one it refers to; nothing while one of its jobs runs under a live lease. A claim is a write
   * of this thread too, so none can take a job between the check and the deletes. Null if another process deleted
   * the workspace since the caller found it.
   */
  deleteWorkspace(workspaceId: string, now: Date): WorkspaceDeletion | null {
    const refused = this.erasable(workspaceId, now);
    if (refused !== true) return refused;
    const rows: Record<string, number> = {};
    for (const table of ['idempotency_keys', 'security_events', 'jobs', 'campaigns', 'tags', 'api_keys']) {
      rows[table] = this.sql.get(`DELETE FROM ${table} WHERE workspace_id = ?`).run(workspaceId).changes;
    }
    rows.workspaces = this.sql.get('DELETE FROM workspaces WHERE id = ?').run(workspaceId).changes;
    return { deleted: true, rows };
  }

  /** As deleteWorkspace, of the rows that must go at once: keys, idempotency keys, and the jobs a claim could take. */
  startWorkspaceErasure(workspaceId: string, now: Date): WorkspaceDeletion | null {
    const refused = this.erasable(workspaceId, now);
    if (refused !== true) return refused;
    return {
      deleted: true,
      rows: {
        api_keys: this.sql.get('DELETE FROM api_keys WHERE workspace_id = ?').run(workspaceId).changes,
        idempotency_keys: this.sql.get('DELETE FROM idempotency_keys WHERE workspace_id = ?').run(workspaceId).changes,
        // Found on the queue's partial indexes (jobs_due, jobs_leased), one status each: the workspace's own index would
        // read every job it ever had. Its running jobs' leases have all expired (erasable).
        jobs: ['PENDING', 'RUNNING'].reduce(
          (deleted, status) => deleted + this.sql.get('DELETE FROM jobs WHERE +workspace_id = ? AND status = ?').run(workspaceId, status).changes,
          0,
        ),
      },
    };
  }

  eraseWorkspaceRows(workspaceId: string, table: BatchErasedTable, limit: number): number {
    return this.sql.get(eraseWorkspaceRowsSql(table, '@workspace', '+@limit')).run({ workspace: workspaceId, limit }).changes;
  }

  /** True when the workspace is there and none of its jobs runs under a lease live at `now`; else what to answer. */
  private erasable(workspaceId: string, now: Date): true | WorkspaceDeletion | null {
    if (!this.sql.get('SELECT 1 FROM workspaces WHERE id = ?').get(workspaceId)) return null;
    // On jobs_leased, for the reason startWorkspaceErasure says.
    const running = this.sql
      .get(`SELECT count(*) AS count, max(lease_expires_at) AS until FROM jobs WHERE +workspace_id = ? AND status = 'RUNNING' AND lease_expires_at > ?`)
      .get(workspaceId, now.getTime()) as Row;
    if (Number(running.count) > 0) return { deleted: false, running: Number(running.count), leaseEndsAt: new Date(Number(running.until)) };
    return true;
  }

  /** A page of another store's rows, every column kept (IMPORT_ROWS in rows.ts); an event's seq moves sqlite_sequence past it. */
  importRows<T extends ExportTable>(table: T, records: ExportRows[T][]): void {
    const rows = importRows(table, records, SQLITE);
    if (rows.length === 0) return;
    const statement = this.sql.get(insertStatement(table, rows[0], () => '?').text);
    for (const row of rows) statement.run(...Object.values(row));
  }

  insertApiKey(key: ApiKeyRecord, event: NewSecurityEvent): boolean {
    // Not a foreign key error: another process may have deleted the workspace since the caller found it.
    if (!this.sql.get('SELECT 1 FROM workspaces WHERE id = ?').get(key.workspaceId)) return false;
    this.insert('api_keys', apiKeyToRow(key, SQLITE));
    this.insertEvent(event);
    return true;
  }

  revokeApiKey(id: string, at: Date, event: NewSecurityEvent): boolean {
    const result = this.sql.get('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at.getTime(), id);
    if (result.changes === 0) return false;
    this.insertEvent(event);
    return true;
  }

  rotateApiKey(id: string, replacing: string, hash: string, prefix: string, previousValidUntil: Date | null, event: NewSecurityEvent): boolean {
    const result = this.sql.get(
      `UPDATE api_keys SET previous_hash = hash, previous_hash_expires_at = ?, hash = ?, prefix = ?
         WHERE id = ? AND hash = ? AND revoked_at IS NULL`,
    ).run(ms(previousValidUntil), hash, prefix, id, replacing);
    if (result.changes === 0) return false;
    this.insertEvent(event);
    return true;
  }

  touchApiKey(id: string, at: Date): void {
    this.sql.get('UPDATE api_keys SET last_used_at = ? WHERE id = ?').run(at.getTime(), id);
  }

  upsertTags(workspaceId: string, names: string[]): void {
    const insert = this.sql.get('INSERT OR IGNORE INTO tags (workspace_id, name) VALUES (?, ?)');
    for (const name of names) insert.run(workspaceId, name);
  }

  insertCampaign(campaign: Campaign): void {
    this.insert('campaigns', campaignToRow(campaign, SQLITE));
  }

  enqueueJob(job: DuplicationJob, event: NewSecurityEvent, reservation?: IdempotencyRecord): boolean {
    if (reservation !== undefined && !this.bindReservation(job.id, reservation)) return false;
    this.insert('jobs', newJobToRow(job, SQLITE), jobTurn(job));
    this.insertEvent(event);
    return true;
  }

  /** Binds the key to the job only while it is still this reservation's: the job is written after, or not at all. */
  private bindReservation(jobId: string, reservation: IdempotencyRecord): boolean {
    return (
      this.sql
        .get('UPDATE idempotency_keys SET job_id = ? WHERE workspace_id = ? AND key = ? AND job_id IS NULL AND request_hash = ? AND created_at = ?')
        .run(jobId, reservation.workspaceId, reservation.key, reservation.requestHash, reservation.createdAt.getTime()).changes > 0
    );
  }

  /**
   * Makes due the waiting jobs whose time has come, claims with CLAIM_JOBS_SQL, and moves the queue's clock up to
   * the last turn taken, in one write.
   */
  claimJobs(owner: string, limit: number, now: Date, leaseExpiresAt: Date): ClaimedJob[] {
    this.sql.get(PROMOTE_DUE_JOBS_SQL).run({ now: now.getTime() });
    // RETURNING gives only the new lease owner: the expired leases' owners are read first, in the same write.
    const expired = this.sql.get(EXPIRED_LEASES_SQL).all({ now: now.getTime(), limit }) as Row[];
    const previousOwners = new Map(expired.map((row) => [row.id, row.lease_owner]));
    const rows = this.sql.get(CLAIM_JOBS_SQL).all({ owner, lease: leaseExpiresAt.getTime(), now: now.getTime(), limit }) as Row[];
    const { jobs, lastTurn } = claimedJobs(rows.map((row) => (previousOwners.has(row.id) ? { ...row, taken_over_from: previousOwners.get(row.id) } : row)));
    if (lastTurn !== null) this.sql.get('UPDATE job_queue_clock SET turn = @turn WHERE turn < @turn').run({ turn: lastTurn });
    return jobs;
  }

  finishJob(jobId: string, owner: string, outcome: JobOutcome, now: Date): boolean {
    const result = this.sql.get(
      `UPDATE jobs SET status = ?, finished_at = ?, updated_at = ?, result_campaign_id = ?, error_code = ?,
         error_message = ?, lease_owner = NULL, lease_expires_at = NULL
       WHERE id = ? AND status = 'RUNNING' AND lease_owner = ?`,
    ).run(
      outcome.status,
      now.getTime(),
      now.getTime(),
      outcome.resultCampaignId,
      outcome.error?.code ?? null,
      outcome.error?.message ?? null,
      jobId,
      owner,
    );
    if (result.changes === 0) return false;
    if (outcome.newCampaign) this.insertCampaign(outcome.newCampaign);
    this.insertEvent(outcome.event);
    return true;
  }

  /** As finishJob, for a job no worker holds: PENDING, or RUNNING under a lease expired at `now`. */
  cancelJob(jobId: string, outcome: JobFailure, now: Date): boolean {
    const result = this.sql.get(
      `UPDATE jobs SET status = 'FAILED', finished_at = @now, updated_at = @now, error_code = @code, error_message = @message,
         lease_owner = NULL, lease_expires_at = NULL
       WHERE id = @id AND (status = 'PENDING' OR (status = 'RUNNING' AND lease_expires_at < @now))`,
    ).run({ now: now.getTime(), code: outcome.error.code, message: outcome.error.message, id: jobId });
    if (result.changes === 0) return false;
    this.insertEvent(outcome.event);
    return true;
  }

  retryJob(jobId: string, owner: string, runAt: Date, error: JobError | null, now: Date, unacted = false): boolean {
    return this.sql.get(
      `UPDATE jobs SET status = 'PENDING', run_at = ?, waiting = ?, updated_at = ?, error_code = ?, error_message = ?,
         upstream_unacted_attempts = upstream_unacted_attempts + ?, lease_owner = NULL, lease_expires_at = NULL
       WHERE id = ? AND status = 'RUNNING' AND lease_owner = ?`,
    ).run(runAt.getTime(), SQLITE.bool(runAt > now), now.getTime(), error?.code ?? null, error?.message ?? null, unacted ? 1 : 0, jobId, owner).changes > 0;
  }

  deferJob(jobId: string, owner: string, runAt: Date, now: Date): boolean {
    return this.sql.get(
      `UPDATE jobs SET status = 'PENDING', attempts = MAX(attempts - 1, 0), run_at = ?, waiting = ?, updated_at = ?,
         lease_owner = NULL, lease_expires_at = NULL
       WHERE id = ? AND status = 'RUNNING' AND lease_owner = ?`,
    ).run(runAt.getTime(), SQLITE.bool(runAt > now), now.getTime(), jobId, owner).changes > 0;
  }

  releaseJobs(owner: string, now: Date, { keepAttempts = false }: ReleaseOptions = {}): number {
    return this.sql.get(
      `UPDATE jobs SET status = 'PENDING', attempts = CASE WHEN ? THEN attempts ELSE MAX(attempts - 1, 0) END, run_at = ?, waiting = false,
         updated_at = ?, lease_owner = NULL, lease_expires_at = NULL
       WHERE status = 'RUNNING' AND lease_owner = ?`,
    ).run(SQLITE.bool(keepAttempts), now.getTime(), now.getTime(), owner).changes;
  }

  /**
   * Ends every lease live at `now` a millisecond before it, so that a claim at `now` finds it expired (the claim's
   * `lease_expires_at < @now`). Nothing else changes: the claim that takes the job over counts its attempt.
   */
  endLeases(now: Date): number {
    return this.sql
      .get("UPDATE jobs SET lease_expires_at = @ended WHERE status = 'RUNNING' AND lease_expires_at > @ended")
      .run({ ended: now.getTime() - 1 }).changes;
  }

  reserveIdempotencyKey(record: IdempotencyRecord, staleBefore: Date): IdempotencyRecord | null {
    const row = this.sql.get('SELECT * FROM idempotency_keys WHERE workspace_id = ? AND key = ?').get(record.workspaceId, record.key) as
      | Row
      | undefined;
    if (row) {
      const existing = rowToIdempotency(row);
      if (holdsIdempotencyKey(existing, record.createdAt, staleBefore)) return existing;
    }
    this.sql.get(
      `INSERT INTO idempotency_keys (workspace_id, key, request_hash, job_id, created_at, expires_at)
       VALUES (?, ?, ?, NULL, ?, ?)
       ON CONFLICT (workspace_id, key) DO UPDATE SET request_hash = excluded.request_hash, job_id = NULL,
         created_at = excluded.created_at, expires_at = excluded.expires_at`,
    ).run(record.workspaceId, record.key, record.requestHash, record.createdAt.getTime(), record.expiresAt.getTime());
    return null;
  }

  releaseIdempotencyKey(reservation: IdempotencyRecord): void {
    this.sql
      .get('DELETE FROM idempotency_keys WHERE workspace_id = ? AND key = ? AND job_id IS NULL AND request_hash = ? AND created_at = ?')
      .run(reservation.workspaceId, reservation.key, reservation.requestHash, reservation.createdAt.getTime());
  }

  pruneFinishedJobs(finishedBefore: Date, limit: number): number {
    return this.sql.get(
      `DELETE FROM jobs WHERE id IN (
         SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at LIMIT +?)`,
    ).run(finishedBefore.getTime(), limit).changes;
  }

  /** The job of each event examined is looked up by its primary key (a correlated subquery runs per row). */
  pruneEvents(occurredBefore: Date, limit: number, after: EventPruneCursor | null): EventPruneBatch {
    const examined = this.sql.get(
      `SELECT seq, occurred_at, job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = security_events.job_id) AS gone
       FROM security_events
       WHERE occurred_at < ?${after ? ' AND (occurred_at, seq) > (?, ?)' : ''} ORDER BY occurred_at, seq LIMIT +?`,
    ).all(occurredBefore.getTime(), ...(after ? [after.occurredAt.getTime(), after.seq] : []), limit) as Row[];
    const gone = examined.filter((row) => row.gone).map((row) => row.seq);
    const deleted =
      gone.length === 0 ? 0 : this.sql.get('DELETE FROM security_events WHERE seq IN (SELECT value FROM json_each(?))').run(JSON.stringify(gone)).changes;
    return eventPruneBatch(examined, limit, deleted);
  }

  pruneIdempotencyKeys(expiredBefore: Date, limit: number): number {
    return this.sql.get(
      `DELETE FROM idempotency_keys WHERE (workspace_id, key) IN (
         SELECT workspace_id, key FROM idempotency_keys WHERE expires_at < ? LIMIT +?)`,
    ).run(expiredBefore.getTime(), limit).changes;
  }

  insertEvent(event: NewSecurityEvent): void {
    this.insert('security_events', eventToRow(event, SQLITE));
  }
  /**
   * rate-limiter-flexible's counter at `key` changed by `points` (sqlite/rate-limiter.ts): in its window while that
   * lasts, else in a new one of `msDuration` (none: it never ends); `forceExpire` starts a new one whatever is there
   * (block, set). RateLimiterSQLite's statements, on this machine's clock.
   */
  upsertCounter(key: string, points: number, msDuration: number, forceExpire: boolean): CounterRow {
    const now = Date.now();
    const expire = msDuration > 0 ? now + msDuration : null;
    return this.sql
      .get(
        `INSERT INTO rate_limits (key, points, expire) VALUES (@key, @points, @expire)
         ON CONFLICT (key) DO UPDATE SET
           points = CASE WHEN @force = 0 AND (expire IS NULL OR expire > @now) THEN points + excluded.points ELSE excluded.points END,
           expire = CASE WHEN @force = 0 AND (expire IS NULL OR expire > @now) THEN expire ELSE excluded.expire END
         RETURNING points, expire`,
      )
      .get({ key, points, expire, now, force: forceExpire ? 1 : 0 }) as CounterRow;
  }

  /** Whether there was a counter at `key` to delete. */
  deleteCounter(key: string): boolean {
    return this.sql.get('DELETE FROM rate_limits WHERE key = ?').run(key).changes > 0;
  }
}

/** The name of a write and what it takes and returns. */
export type WriteName = keyof SqliteWrites;
export type WriteArgs<K extends WriteName> = Parameters<SqliteWrites[K]>;
export type WriteResult<K extends WriteName> = ReturnType<SqliteWrites[K]>;
