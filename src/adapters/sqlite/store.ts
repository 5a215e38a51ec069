import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { GatewayStore, JobOutcome, ListOptions, SeqItem } from '../../domain/ports.js';
import type {
  ApiKeyRecord,
  Campaign,
  DuplicationJob,
  IdempotencyRecord,
  JobError,
  NewSecurityEvent,
  SecurityEvent,
  SecurityEventFilter,
  Workspace,
} from '../../domain/types.js';
import {
  apiKeyToRow,
  campaignToRow,
  eventToRow,
  insertStatement,
  newJobToRow,
  rowToApiKey,
  rowToCampaign,
  rowToEvent,
  rowToIdempotency,
  rowToJob,
  rowToWorkspace,
  type Row,
  type SqlValues,
} from '../rows.js';
import { GroupCommit } from './group-commit.js';
import { KeyCache } from './key-cache.js';
import { FoundCache } from './read-cache.js';
import { SQLITE_MIGRATIONS } from './migrations.js';

const ms = (value: Date | null): number | null => (value === null ? null : value.getTime());
// Times are kept as epoch milliseconds, booleans as 0 and 1.
const SQLITE: SqlValues = { date: (value) => value.getTime(), bool: (value) => (value ? 1 : 0) };

export interface SqliteStoreOptions {
  /** A file path, or ':memory:'. */
  filename: string;
}

/**
 * The embedded store. WAL journal with `synchronous = FULL`: every commit is on disk before the call
 * returns, so a 202 survives a crash of the process or of the machine. Writes are group-committed
 * (group-commit.ts): those of one turn of the event loop share a transaction and its fsync, and each write
 * method resolves only after that commit.
 */
export class SqliteStore implements GatewayStore {
  readonly kind = 'sqlite';
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly commits: GroupCommit;
  private readonly keys: KeyCache<ApiKeyRecord>;
  private readonly campaigns = new FoundCache<Campaign>();
  private readonly tags = new FoundCache<true>();

  constructor(options: SqliteStoreOptions) {
    if (options.filename !== ':memory:') mkdirSync(dirname(options.filename), { recursive: true });
    this.db = new Database(options.filename);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    // Each write of a group runs in a savepoint; its undo pages stay in memory instead of a temporary file.
    this.db.pragma('temp_store = MEMORY');
    this.commits = new GroupCommit(this.db);
    this.keys = new KeyCache(this.db);
  }

  /** Every write goes through the group commit: it resolves once durable, together with the writes of its turn. */
  private write<T>(work: () => T): Promise<T> {
    return this.commits.run(work);
  }

  private sql(text: string): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  private insert(table: string, row: Row): void {
    const { text, values } = insertStatement(table, row, () => '?');
    this.sql(text).run(...values);
  }

  async migrate(): Promise<void> {
    // The version is read inside the IMMEDIATE transaction, so instances starting together migrate once.
    this.db
      .transaction(() => {
        const current = Number(this.db.pragma('user_version', { simple: true }));
        SQLITE_MIGRATIONS.slice(current).forEach((migration, index) => {
          this.db.exec(migration);
          this.db.pragma(`user_version = ${current + index + 1}`);
        });
      })
      .immediate();
  }

  async ping(): Promise<void> {
    this.sql('SELECT 1').get();
  }

  async close(): Promise<void> {
    await this.commits.drain();
    this.statements.clear();
    if (this.db.open) this.db.close();
  }

  async createWorkspace(workspace: Workspace): Promise<void> {
    await this.write(() =>
      this.sql('INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)').run(workspace.id, workspace.name, workspace.createdAt.getTime()),
    );
  }

  async findWorkspace(idOrName: string): Promise<Workspace | null> {
    const row = this.sql('SELECT * FROM workspaces WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1').get(
      idOrName,
      idOrName,
      idOrName,
    ) as Row | undefined;
    return row ? rowToWorkspace(row) : null;
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return (this.sql('SELECT * FROM workspaces ORDER BY created_at, name').all() as Row[]).map(rowToWorkspace);
  }

  async insertApiKey(key: ApiKeyRecord, event: NewSecurityEvent): Promise<void> {
    return this.write(() => {
      this.insert('api_keys', apiKeyToRow(key, SQLITE));
      this.keys.clear();
      this.insertEventSync(event);
    });
  }

  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | null> {
    return this.keys.get(hash, () => {
      const row = this.sql('SELECT * FROM api_keys WHERE hash = ? UNION ALL SELECT * FROM api_keys WHERE previous_hash = ? LIMIT 1').get(
        hash,
        hash,
      ) as Row | undefined;
      return row ? rowToApiKey(row) : null;
    });
  }

  async findApiKey(id: string): Promise<ApiKeyRecord | null> {
    const row = this.sql('SELECT * FROM api_keys WHERE id = ?').get(id) as Row | undefined;
    return row ? rowToApiKey(row) : null;
  }

  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    const rows =
      workspaceId === undefined
        ? this.sql('SELECT * FROM api_keys ORDER BY created_at, id').all()
        : this.sql('SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id').all(workspaceId);
    return (rows as Row[]).map(rowToApiKey);
  }

  async revokeApiKey(id: string, at: Date, event: NewSecurityEvent): Promise<boolean> {
    return this.write(() => {
      const result = this.sql('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(
        at.getTime(),
        id,
      );
      if (result.changes === 0) return false;
      this.keys.clear();
      this.insertEventSync(event);
      return true;
    });
  }

  async rotateApiKey(id: string, hash: string, prefix: string, previousValidUntil: Date | null, event: NewSecurityEvent): Promise<boolean> {
    return this.write(() => {
      const result = this.sql(
        `UPDATE api_keys SET previous_hash = CASE WHEN ? IS NULL THEN NULL ELSE hash END, previous_hash_expires_at = ?,
           hash = ?, prefix = ? WHERE id = ? AND revoked_at IS NULL`,
      ).run(ms(previousValidUntil), ms(previousValidUntil), hash, prefix, id);
      if (result.changes === 0) return false;
      this.keys.clear();
      this.insertEventSync(event);
      return true;
    });
  }

  async touchApiKey(id: string, at: Date): Promise<void> {
    await this.write(() => {
      this.sql('UPDATE api_keys SET last_used_at = ? WHERE id = ?').run(at.getTime(), id);
      this.keys.clear();
    });
  }

  async upsertTags(workspaceId: string, names: string[]): Promise<void> {
    const insert = this.sql('INSERT OR IGNORE INTO tags (workspace_id, name) VALUES (?, ?)');
    await this.write(() => names.forEach((name) => insert.run(workspaceId, name)));
  }

  async missingTags(workspaceId: string, names: string[]): Promise<string[]> {
    const exists = this.sql('SELECT 1 FROM tags WHERE workspace_id = ? AND name = ?');
    const found = (name: string) => (exists.get(workspaceId, name) === undefined ? null : true);
    return names.filter((name) => this.tags.get(`${workspaceId}\u0000${name}`, () => found(name)) === null);
  }

  async insertCampaign(campaign: Campaign): Promise<void> {
    await this.write(() => this.insertCampaignSync(campaign));
  }

  private insertCampaignSync(campaign: Campaign): void {
    this.insert('campaigns', campaignToRow(campaign, SQLITE));
  }

  async getCampaign(workspaceId: string, id: string): Promise<Campaign | null> {
    return this.campaigns.get(`${workspaceId}\u0000${id}`, () => {
      const row = this.sql('SELECT * FROM campaigns WHERE id = ? AND workspace_id = ?').get(id, workspaceId) as Row | undefined;
      return row ? rowToCampaign(row) : null;
    });
  }

  async listCampaigns(workspaceId: string, options: ListOptions): Promise<SeqItem<Campaign>[]> {
    const rows = this.sql(
      'SELECT * FROM campaigns WHERE workspace_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?',
    ).all(workspaceId, options.beforeSeq ?? Number.MAX_SAFE_INTEGER, options.first) as Row[];
    return rows.map((row) => ({ seq: Number(row.seq), item: rowToCampaign(row) }));
  }

  async enqueueJob(job: DuplicationJob, event: NewSecurityEvent, idempotencyKey?: string): Promise<void> {
    return this.write(() => {
      this.insert('jobs', newJobToRow(job, SQLITE));
      this.insertEventSync(event);
      if (idempotencyKey !== undefined) {
        this.sql('UPDATE idempotency_keys SET job_id = ? WHERE workspace_id = ? AND key = ?').run(job.id, job.workspaceId, idempotencyKey);
      }
    });
  }

  async getJob(workspaceId: string, id: string): Promise<DuplicationJob | null> {
    const row = this.sql('SELECT * FROM jobs WHERE id = ? AND workspace_id = ?').get(id, workspaceId) as
      | Row
      | undefined;
    return row ? rowToJob(row) : null;
  }

  async claimJobs(owner: string, limit: number, now: Date, leaseExpiresAt: Date): Promise<DuplicationJob[]> {
    // Each branch stops after `limit` rows of its index: sorting every due job on each claim made draining a
    // long queue quadratic.
    const rows = await this.write(() => this.sql(
      `UPDATE jobs SET status = 'RUNNING', lease_owner = @owner, lease_expires_at = @lease,
         attempts = attempts + 1, updated_at = @now
       WHERE id IN (
         SELECT id FROM (
           SELECT * FROM (SELECT id, run_at AS due FROM jobs WHERE status = 'PENDING' AND run_at <= @now ORDER BY run_at LIMIT @limit)
           UNION ALL
           SELECT * FROM (SELECT id, lease_expires_at AS due FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < @now
             ORDER BY lease_expires_at LIMIT @limit)
         ) ORDER BY due LIMIT @limit
       )
       RETURNING *`,
    ).all({ owner, lease: leaseExpiresAt.getTime(), now: now.getTime(), limit }) as Row[]);
    return rows.map(rowToJob);
  }

  async finishJob(jobId: string, owner: string, outcome: JobOutcome, now: Date): Promise<boolean> {
    return this.write(() => {
      const result = this.sql(
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
      if (outcome.newCampaign) this.insertCampaignSync(outcome.newCampaign);
      this.insertEventSync(outcome.event);
      return true;
    });
  }

  async retryJob(jobId: string, owner: string, runAt: Date, error: JobError | null, now: Date): Promise<boolean> {
    const result = await this.write(() => this.sql(
      `UPDATE jobs SET status = 'PENDING', run_at = ?, updated_at = ?, error_code = ?, error_message = ?,
         lease_owner = NULL, lease_expires_at = NULL
       WHERE id = ? AND status = 'RUNNING' AND lease_owner = ?`,
    ).run(runAt.getTime(), now.getTime(), error?.code ?? null, error?.message ?? null, jobId, owner));
    return result.changes > 0;
  }

  async deferJob(jobId: string, owner: string, runAt: Date, now: Date): Promise<boolean> {
    const result = await this.write(() => this.sql(
      `UPDATE jobs SET status = 'PENDING', attempts = MAX(attempts - 1, 0), run_at = ?, updated_at = ?,
         lease_owner = NULL, lease_expires_at = NULL
       WHERE id = ? AND status = 'RUNNING' AND lease_owner = ?`,
    ).run(runAt.getTime(), now.getTime(), jobId, owner));
    return result.changes > 0;
  }

  async releaseJobs(owner: string, now: Date): Promise<number> {
    const result = await this.write(() => this.sql(
      `UPDATE jobs SET status = 'PENDING', attempts = MAX(attempts - 1, 0), run_at = ?, updated_at = ?,
         lease_owner = NULL, lease_expires_at = NULL
       WHERE status = 'RUNNING' AND lease_owner = ?`,
    ).run(now.getTime(), now.getTime(), owner));
    return result.changes;
  }

  async countJobsByStatus(): Promise<Record<string, number>> {
    const rows = this.sql('SELECT status, COUNT(*) AS count FROM jobs GROUP BY status').all() as Row[];
    return Object.fromEntries(rows.map((row) => [String(row.status), Number(row.count)]));
  }

  async reserveIdempotencyKey(record: IdempotencyRecord, staleBefore: Date): Promise<IdempotencyRecord | null> {
    return this.write(() => {
      const row = this.sql('SELECT * FROM idempotency_keys WHERE workspace_id = ? AND key = ?').get(record.workspaceId, record.key) as
        | Row
        | undefined;
      if (row) {
        const existing = rowToIdempotency(row);
        const expired = existing.expiresAt <= record.createdAt;
        const abandoned = existing.jobId === null && existing.createdAt < staleBefore;
        if (!expired && !abandoned) return existing;
      }
      this.sql(
        `INSERT INTO idempotency_keys (workspace_id, key, request_hash, job_id, created_at, expires_at)
         VALUES (?, ?, ?, NULL, ?, ?)
         ON CONFLICT (workspace_id, key) DO UPDATE SET request_hash = excluded.request_hash, job_id = NULL,
           created_at = excluded.created_at, expires_at = excluded.expires_at`,
      ).run(record.workspaceId, record.key, record.requestHash, record.createdAt.getTime(), record.expiresAt.getTime());
      return null;
    });
  }

  async releaseIdempotencyKey(workspaceId: string, key: string): Promise<void> {
    await this.write(() => this.sql('DELETE FROM idempotency_keys WHERE workspace_id = ? AND key = ? AND job_id IS NULL').run(workspaceId, key));
  }

  async pruneFinishedJobs(finishedBefore: Date, limit: number): Promise<number> {
    return this.write(() => this.sql(
      `DELETE FROM jobs WHERE id IN (
         SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at LIMIT ?)`,
    ).run(finishedBefore.getTime(), limit).changes);
  }

  async pruneEvents(occurredBefore: Date, limit: number): Promise<number> {
    return this.write(() => this.sql(
      'DELETE FROM security_events WHERE seq IN (SELECT seq FROM security_events WHERE occurred_at < ? ORDER BY occurred_at LIMIT ?)',
    ).run(occurredBefore.getTime(), limit).changes);
  }

  async pruneIdempotencyKeys(expiredBefore: Date, limit: number): Promise<number> {
    return this.write(() => this.sql(
      `DELETE FROM idempotency_keys WHERE (workspace_id, key) IN (
         SELECT workspace_id, key FROM idempotency_keys WHERE expires_at < ? LIMIT ?)`,
    ).run(expiredBefore.getTime(), limit).changes);
  }

  async insertEvent(event: NewSecurityEvent): Promise<void> {
    await this.write(() => this.insertEventSync(event));
  }

  private insertEventSync(event: NewSecurityEvent): void {
    this.insert('security_events', eventToRow(event, SQLITE));
  }

  async listEvents(workspaceId: string, filter: SecurityEventFilter, options: ListOptions): Promise<SecurityEvent[]> {
    const where = ['workspace_id = @workspaceId', 'seq < @beforeSeq'];
    const params: Record<string, unknown> = {
      workspaceId,
      beforeSeq: options.beforeSeq ?? Number.MAX_SAFE_INTEGER,
      first: options.first,
    };
    if (filter.jobId !== undefined) {
      where.push('job_id = @jobId');
      params.jobId = filter.jobId;
    }
    if (filter.apiKeyId !== undefined) {
      where.push('api_key_id = @apiKeyId');
      params.apiKeyId = filter.apiKeyId;
    }
    if (filter.types !== undefined) {
      const names = filter.types.map((_, index) => `@type${index}`);
      where.push(filter.types.length === 0 ? '0' : `type IN (${names.join(', ')})`);
      filter.types.forEach((type, index) => (params[`type${index}`] = type));
    }
    if (filter.since !== undefined) {
      where.push('occurred_at >= @since');
      params.since = filter.since.getTime();
    }
    if (filter.until !== undefined) {
      where.push('occurred_at < @until');
      params.until = filter.until.getTime();
    }
    const rows = this.sql(
      `SELECT * FROM security_events WHERE ${where.join(' AND ')} ORDER BY seq DESC LIMIT @first`,
    ).all(params) as Row[];
    return rows.map(rowToEvent);
  }
}
