import { closeSync, constants, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { eventCursorGone } from '../../domain/cursor.js';
import { dependencyUnavailable } from '../../domain/errors.js';
import type { BatchErasedTable, ClaimedJob, EventPruneBatch, EventPruneCursor, ExportPage, ExportRows, ExportTable, GatewayStore, JobFailure, JobOutcome, ListOptions, NewerSchema, OlderSchema, ReleaseOptions, RowCount, SchemaVersions, WorkspaceDeletion } from '../../domain/ports.js';
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
import { COUNT_JOBS_SQL, countRowsSql, distinctTypes, EVENT_WINDOW_SQL, eventWindowSeeks, exportCursor, exportPage, exportPageSql, KNOWN_EVENT_TYPES_SQL, listJobsSql, oldestDueJobSql, rowSeq, rowToApiKey, rowToCampaign, rowToEvent, rowToIdempotency, rowToJob, rowToWorkspace, type Row } from '../rows.js';
import { incompleteSchema, migratedUnder, schemaRefusal } from '../schema-version.js';
import { openConnection, Statements } from './connection.js';
import { assertNoStrayWal, assertSameFile, identify, type FileIdentity } from './database-file.js';
import { holdDataDir, lockFile } from './data-dir-lock.js';
import { assertStoreWritable } from './file-modes.js';
import { KeyCache } from './key-cache.js';
import { ReadSnapshot } from './read-snapshot.js';
import { FoundCache } from './read-cache.js';
import { missingSchemaObjects, SQLITE_MIGRATIONS } from './migrations.js';
import { asOutage, FILE_MOVED, isDamage } from './outage.js';
import type { CounterRow, CounterTable } from './rate-limiter.js';
import { SqliteWriter } from './writer.js';
import type { WriteArgs, WriteName, WriteResult } from './writes.js';

export interface SqliteStoreOptions {
  /** The database file; made, with its directory, when missing. */
  filename: string;
  /** Told why the writer thread died when a new one takes over (writer.ts). */
  onWriterRestart?: (error: Error) => void;
  /** The schema's migrations, this version's unless a test stands for another version with its list. */
  migrations?: readonly string[];
  /** Hold the file's directory until closed, refusing any other store that asks the same (data-dir-lock.ts): the gateway's. */
  holdDataDir?: boolean;
  /**
   * Holding DATA_DIR, keep the reservations with no job that a start frees (migrate): `store copy` holds its source
   * only to keep a gateway off it, and leaves it as it was.
   */
  keepReservations?: boolean;
}

/**
 * Where a page starts, as what `seq` must stay below (adding its parameter): SQLite seeks on one bound of an index,
 * and with two it may seek on the loose one and step over every newer row, or pick the wrong index, so a query
 * with another upper bound takes the lower of the two (`min`, which is NULL, matching no row, when the cursor's
 * row is gone).
 */
function pageEnd(table: 'campaigns' | 'security_events', options: ListOptions, params: Record<string, unknown>): string {
  if (options.beforeId !== undefined) {
    params.beforeId = options.beforeId;
    return rowSeq(table, '@workspaceId', '@beforeId');
  }
  params.beforeSeq = options.beforeSeq ?? Number.MAX_SAFE_INTEGER;
  return '@beforeSeq';
}

/**
 * The embedded store. WAL journal with `synchronous = FULL`: every commit is on disk before the call
 * returns, so a 202 survives a crash of the process or of the machine. Reads run on this thread's read-only
 * connection; every write goes to the writer thread (writer-thread.ts), which group-commits the writes that
 * arrive together, and resolves only once its group is on disk. The fsync thus never blocks the event loop,
 * and a write is visible to reads from the moment it resolves. A third connection sets the journal mode and
 * migrates the schema.
 *
 * A failure of the storage (full disk, I/O error, read-only file system, a file deleted or replaced under the
 * store, damage) is UNAVAILABLE for callers (outage.ts) and is remembered for ping().
 */
export class SqliteStore implements GatewayStore, CounterTable {
  readonly kind = 'sqlite';
  /** The reads' connection, read-only: SQLite checkpoints the WAL when the last connection closes, unless that one cannot write. */
  private readonly db: Database.Database;
  /** The connection that puts the file in WAL mode and migrates it, and closes last when the WAL is to be checkpointed. */
  private readonly owner: Database.Database;
  private readonly sql: Statements;
  private readonly snapshot: ReadSnapshot;
  /** Started on the first write: a process that only reads (a CLI listing) never starts the thread. */
  private writerThread: SqliteWriter | undefined;
  private readonly keys: KeyCache;
  private readonly campaigns = new FoundCache<Campaign>();
  private readonly tags = new FoundCache<true>();
  /** The file opened at `filename`: the writer refuses to commit into any other. */
  private readonly opened: FileIdentity;
  /** The last storage failure, until a probe write succeeds (never, for damage to the file). */
  private storageFailure: { error: Error; damage: boolean } | undefined;
  /** The storage check in progress (ping). */
  private checking: Promise<void> | undefined;
  /** Hears of each group's COMMIT time (observeCommits). */
  private commitObserver: ((seconds: number) => void) | undefined;
  /** The directory held for this store's life (`holdDataDir`), let go once every connection has closed. */
  private readonly dataDirLock: { release(): void } | undefined;

  constructor(private readonly options: SqliteStoreOptions) {
    // Key hashes and client addresses: a directory or file the store makes is its user's alone (SQLite gives the
    // -wal and -shm files the file's mode); existing ones are kept as they are.
    const directory = dirname(options.filename);
    mkdirSync(directory, { recursive: true, mode: 0o700 });
    assertStoreWritable(options.filename, options.holdDataDir ? [lockFile(directory)] : []);
    this.dataDirLock = options.holdDataDir ? holdDataDir(directory) : undefined;
    try {
      closeSync(openSync(options.filename, constants.O_RDONLY | constants.O_CREAT, 0o600));
      // Before SQLite opens the file, which would read a stray log into it.
      assertNoStrayWal(options.filename);
      this.owner = openConnection(options.filename);
      this.opened = identify(options.filename);
      this.db = openConnection(options.filename, { readonly: true });
    } catch (error) {
      this.dataDirLock?.release();
      throw error;
    }
    this.sql = new Statements(this.db);
    this.snapshot = new ReadSnapshot(this.db);
    // Read on first use: the table is made by migrate(), after the store is constructed.
    this.keys = new KeyCache(this.snapshot, () => (this.read('SELECT version FROM api_keys_version') as Row).version);
  }

  private get writer(): SqliteWriter {
    if (!this.db.open) throw new Error('The SQLite store is closed: the writer has exited');
    this.writerThread ??= new SqliteWriter(this.options.filename, {
      opened: this.opened,
      beforeAnswers: this.snapshot.end,
      onCommit: (commitMs) => this.commitObserver?.(commitMs / 1000),
      onRestart: this.options.onWriterRestart,
    });
    return this.writerThread;
  }

  observeCommits(observer: (seconds: number) => void): void {
    this.commitObserver = observer;
  }

  writesWaiting(): number {
    return this.writerThread?.waitingCount ?? 0;
  }

  /** What a caller gets for `error`: UNAVAILABLE for a storage failure, which is also remembered for ping(). */
  private failed(error: unknown): unknown {
    const outage = asOutage(error);
    if (outage !== error && !this.storageFailure?.damage) this.storageFailure = { error: error as Error, damage: isDamage(error as Error) };
    return outage;
  }

  /** A write, on the writer thread. */
  private async write<K extends WriteName>(name: K, ...args: WriteArgs<K>): Promise<WriteResult<K>> {
    try {
      return await this.writer.call(name, ...args);
    } catch (error) {
      throw this.failed(error);
    }
  }

  /** A write that changes API keys: the cache forgets them when it is sent and again once it is committed. */
  private async keyWrite<T>(write: () => Promise<T>): Promise<T> {
    this.keys.clear();
    try {
      return await write();
    } finally {
      this.keys.clear();
    }
  }

  /** A read statement, run in the turn's read transaction; a storage failure comes out as UNAVAILABLE. */
  private reading<T>(text: string, run: (statement: Database.Statement) => T): T {
    try {
      this.snapshot.enter();
      return run(this.sql.get(text));
    } catch (error) {
      throw this.failed(error);
    }
  }

  /** The first row a read statement returns. */
  private read(text: string, ...params: unknown[]): Row | undefined {
    return this.reading(text, (statement) => statement.get(...params) as Row | undefined);
  }

  /** Every row a read statement returns. */
  private readAll(text: string, ...params: unknown[]): Row[] {
    return this.reading(text, (statement) => statement.all(...params) as Row[]);
  }

  private get database(): string {
    return `the SQLite database ${this.options.filename}`;
  }

  async migrate(older: OlderSchema = 'upgrade'): Promise<SchemaVersions> {
    const migrations = this.options.migrations ?? SQLITE_MIGRATIONS;
    const database = this.database;
    this.snapshot.end();
    // The version is read inside the IMMEDIATE transaction, so instances starting together migrate once.
    const from = this.owner
      .transaction(() => {
        const current = Number(this.owner.pragma('user_version', { simple: true }));
        const refusal = schemaRefusal(database, current, migrations.length, older);
        if (refusal) throw refusal;
        migrations.slice(current).forEach((migration, index) => {
          this.owner.exec(migration);
          this.owner.pragma(`user_version = ${current + index + 1}`);
        });
        return current;
      })
      .immediate();
    const missing = missingSchemaObjects(this.owner, migrations);
    if (missing.length > 0) {
      throw incompleteSchema(database, migrations.length, missing, 'Restore a backup, or move it aside to start on a new store');
    }
    // Holding DATA_DIR, this is the only process that accepts requests on the file: a key reserved with no job is
    // a request a stopped process never finished, and would answer its retry 409 for IDEMPOTENCY_RESERVATION_MS.
    if (this.dataDirLock && !this.options.keepReservations) this.owner.prepare('DELETE FROM idempotency_keys WHERE job_id IS NULL').run();
    return { from, to: migrations.length };
  }

  async newerSchema(): Promise<NewerSchema | null> {
    let found: number;
    try {
      // On the owner's connection, outside the turn's read snapshot: the file's version as it is now.
      found = Number(this.owner.pragma('user_version', { simple: true }));
    } catch (error) {
      throw this.failed(error);
    }
    return migratedUnder(this.database, found, (this.options.migrations ?? SQLITE_MIGRATIONS).length);
  }

  /**
   * The reads' connection answers, and the storage takes the writer's writes: each check commits one
   * (SqliteWrites.ping), so storage that stopped taking them (remounted read-only, failing) is down at the next
   * check, with no request needed to find out. After a storage failure only a probe write that succeeds
   * (SqliteWrites.probe) makes the store up again: on a full disk small writes (a claim, a key's last use, this
   * check's) still succeed while every new row fails. Damage to the file keeps it down until a restart. Each
   * write, this one's included, checks that the file at the path is still the one opened.
   *
   * Readiness probes and scrapes may come at any rate: one check runs at a time, and those asked for meanwhile
   * share its answer, so one check's write at most ever waits on the storage.
   */
  ping(): Promise<void> {
    this.checking ??= this.checkStorage().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async checkStorage(): Promise<void> {
    this.read('SELECT 1');
    const failure = this.storageFailure;
    if (failure === undefined) return this.write('ping');
    if (failure.damage) throw dependencyUnavailable(failure.error);
    await this.write('probe');
    if (this.storageFailure === failure) this.storageFailure = undefined;
  }

  /**
   * The states only a restart leaves: a writer thread that died young (writer.ts), damage to the file, or another
   * file at the path (a restored copy, which only a new process opens). Nothing at the path is not one of them:
   * the directory may come back (a volume remounted, a directory moved back), and a restart would make an empty
   * store there instead.
   */
  unrecoverable(): string | null {
    const dead = this.writerThread?.dead;
    if (dead) return `${dead.message}, and a thread that dies within a second of starting is not replaced`;
    const failure = this.storageFailure;
    if (failure?.damage) return `the database file is damaged (${(failure.error as { code?: string }).code}): check it or restore it`;
    if (failure?.error.name === FILE_MOVED && (failure.error as { code?: string }).code === 'ESTALE') return 'another file is at the database path: only a new process opens it';
    return null;
  }

  /** Holds the database at its current size, or lets it grow again (SqliteWrites.holdSize): for tests of a full disk. */
  async holdSize(held: boolean): Promise<void> {
    await this.write('holdSize', held);
  }

  /**
   * SQLite copies the WAL into the file when the last connection to it closes, if that one may write. The
   * read-only connection holds its lock while the writer's closes, so which of the other two closes last
   * decides: normally the owner, which copies the WAL in, as any last close does. Into a file found damaged the
   * WAL's pages can only do harm: then the read-only connection closes last and copies nothing, and the WAL
   * stays beside the file, where start-up refuses it next to a restored backup. (SQLite itself copies nothing
   * into a file moved or replaced under it, which the identity check repeats; a `cp` over the live file keeps
   * its identity, so only the damage it causes, once found, is caught.)
   */
  async close(): Promise<void> {
    if (this.db.open) this.holdLock();
    await this.writerThread?.close();
    this.snapshot.end();
    const order = this.holdsItsFile() ? [this.db, this.owner] : [this.owner, this.db];
    for (const db of order) if (db.open) db.close();
    this.dataDirLock?.release();
  }

  /** Whether the file at the path is still the one opened, and was not found damaged. */
  private holdsItsFile(): boolean {
    if (this.storageFailure?.damage) return false;
    try {
      assertSameFile(this.options.filename, this.opened);
      return true;
    } catch {
      return false;
    }
  }

  /** A read takes a shared lock on the file, which a connection in WAL mode keeps until it closes. */
  private holdLock(): void {
    try {
      this.db.pragma('schema_version');
    } catch {
      // A damaged file may fail the read: SQLite took the lock before reading, and keeps it.
    }
  }

  async createWorkspace(workspace: Workspace): Promise<boolean> {
    return this.write('createWorkspace', workspace);
  }

  async findWorkspace(idOrName: string): Promise<Workspace | null> {
    const row = this.read('SELECT * FROM workspaces WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1', idOrName, idOrName, idOrName);
    return row ? rowToWorkspace(row) : null;
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return this.readAll('SELECT * FROM workspaces ORDER BY created_at, name').map(rowToWorkspace);
  }

  async hasWorkspaces(): Promise<boolean> {
    return this.readAll('SELECT 1 FROM workspaces LIMIT 1').length > 0;
  }

  /**
   * A key write: the workspace's keys go with it. Its campaigns and tags stay in this process's caches until pushed
   * out, where no caller reaches them, since no key of the workspace is left to ask.
   */
  async deleteWorkspace(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null> {
    return this.keyWrite(() => this.write('deleteWorkspace', workspaceId, now));
  }

  async startWorkspaceErasure(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null> {
    return this.keyWrite(() => this.write('startWorkspaceErasure', workspaceId, now));
  }

  async eraseWorkspaceRows(workspaceId: string, table: BatchErasedTable, limit: number): Promise<number> {
    return this.write('eraseWorkspaceRows', workspaceId, table, limit);
  }

  async exportRows<T extends ExportTable>(workspaceId: string, table: T, after: string | null, limit: number): Promise<ExportPage<T>> {
    const text = exportPageSql(table, (column) => `${column} = ?`, after === null ? null : '?', '+?');
    return exportPage(table, this.readAll(text, workspaceId, ...(after === null ? [] : [exportCursor(table, after)]), limit), limit);
  }

  /** A key write when it writes keys. */
  async importRows<T extends ExportTable>(table: T, rows: ExportRows[T][]): Promise<void> {
    const write = () => this.write('importRows', table, rows);
    await (table === 'api_keys' ? this.keyWrite(write) : write());
  }

  async countRows(table: ExportTable): Promise<RowCount> {
    const row = this.read(countRowsSql(table)) as Row;
    return { ofWorkspaces: Number(row.of_workspaces), orphaned: Number(row.orphaned) };
  }

  /** A file the process may open for writing grants every write. */
  async missingImportPrivileges(): Promise<string[]> {
    return [];
  }

  /** On the owner's connection, as the schema is read and made: the mark is a table, made and dropped by the copy. */
  async copyStarted(): Promise<Date | null> {
    if (!this.owner.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_copy'").get()) return null;
    const mark = this.owner.prepare('SELECT started_at FROM store_copy LIMIT 1').get() as Row | undefined;
    return new Date(mark ? Number(mark.started_at) : 0);
  }

  async markCopyStarted(at: Date): Promise<void> {
    this.owner.transaction(() => {
      this.owner.exec('CREATE TABLE store_copy (started_at INTEGER NOT NULL)');
      this.owner.prepare('INSERT INTO store_copy (started_at) VALUES (?)').run(at.getTime());
    })();
  }

  async markCopyFinished(): Promise<void> {
    this.owner.exec('DROP TABLE store_copy');
  }

  async insertApiKey(key: ApiKeyRecord, event: NewSecurityEvent): Promise<boolean> {
    return this.keyWrite(() => this.write('insertApiKey', key, event));
  }

  async findApiKeyByHash(hash: string): Promise<ApiKeyRecord | null> {
    return this.keys.get(hash, () => {
      const row = this.read('SELECT * FROM api_keys WHERE hash = ? UNION ALL SELECT * FROM api_keys WHERE previous_hash = ? LIMIT 1', hash, hash);
      return row ? rowToApiKey(row) : null;
    });
  }

  async findApiKey(id: string): Promise<ApiKeyRecord | null> {
    const row = this.read('SELECT * FROM api_keys WHERE id = ?', id);
    return row ? rowToApiKey(row) : null;
  }

  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    const rows =
      workspaceId === undefined
        ? this.readAll('SELECT * FROM api_keys ORDER BY created_at, id')
        : this.readAll('SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id', workspaceId);
    return rows.map(rowToApiKey);
  }

  async revokeApiKey(id: string, at: Date, event: NewSecurityEvent): Promise<boolean> {
    return this.keyWrite(() => this.write('revokeApiKey', id, at, event));
  }

  async rotateApiKey(id: string, replacing: string, hash: string, prefix: string, previousValidUntil: Date | null, event: NewSecurityEvent): Promise<boolean> {
    return this.keyWrite(() => this.write('rotateApiKey', id, replacing, hash, prefix, previousValidUntil, event));
  }

  /** Not a key write: a key's last use moves no version, and the cached record takes the time itself (key-cache.ts). */
  async touchApiKey(key: ApiKeyRecord, at: Date): Promise<void> {
    this.keys.used(key, at);
    await this.write('touchApiKey', key.id, at);
  }

  async upsertTags(workspaceId: string, names: string[]): Promise<void> {
    await this.write('upsertTags', workspaceId, names);
  }

  async missingTags(workspaceId: string, names: string[]): Promise<string[]> {
    const found = (name: string) => (this.read('SELECT 1 FROM tags WHERE workspace_id = ? AND name = ?', workspaceId, name) === undefined ? null : true);
    return names.filter((name) => this.tags.get(`${workspaceId}\u0000${name}`, () => found(name)) === null);
  }

  async insertCampaign(campaign: Campaign): Promise<void> {
    await this.write('insertCampaign', campaign);
  }

  async getCampaign(workspaceId: string, id: string): Promise<Campaign | null> {
    return this.campaigns.get(`${workspaceId}\u0000${id}`, () => {
      const row = this.read('SELECT * FROM campaigns WHERE id = ? AND workspace_id = ?', id, workspaceId);
      return row ? rowToCampaign(row) : null;
    });
  }

  async listCampaigns(workspaceId: string, options: ListOptions): Promise<Campaign[]> {
    const params: Record<string, unknown> = { workspaceId, first: options.first };
    const rows = this.readAll(
      `SELECT * FROM campaigns WHERE workspace_id = @workspaceId AND seq < ${pageEnd('campaigns', options, params)} ORDER BY seq DESC LIMIT +@first`,
      params,
    );
    return rows.map(rowToCampaign);
  }

  async enqueueJob(job: DuplicationJob, event: NewSecurityEvent, reservation?: IdempotencyRecord): Promise<boolean> {
    return this.write('enqueueJob', job, event, reservation);
  }

  async getJob(workspaceId: string, id: string): Promise<DuplicationJob | null> {
    const row = this.read('SELECT * FROM jobs WHERE id = ? AND workspace_id = ?', id, workspaceId);
    return row ? rowToJob(row) : null;
  }

  async getJobs(workspaceId: string, ids: readonly string[]): Promise<DuplicationJob[]> {
    // One statement whatever the number of ids, where `IN (?, …)` would prepare and keep one per number.
    return this.readAll('SELECT * FROM jobs WHERE workspace_id = ? AND id IN (SELECT value FROM json_each(?))', workspaceId, JSON.stringify(ids)).map(rowToJob);
  }

  async findJob(id: string): Promise<DuplicationJob | null> {
    const row = this.read('SELECT * FROM jobs WHERE id = ?', id);
    return row ? rowToJob(row) : null;
  }

  async listJobs(filter: JobFilter, first: number, beforeId: string | null): Promise<DuplicationJob[]> {
    const params: unknown[] = [];
    const text = listJobsSql(filter, first, beforeId, {
      param: (value) => (params.push(value), '?'),
      toDate: (value) => value.getTime(),
      inWorkspace: (placeholder) => `workspace_id = ${placeholder}`,
      limitPrefix: '+',
    });
    return this.readAll(text, ...params).map(rowToJob);
  }

  async cancelJob(jobId: string, outcome: JobFailure, now: Date): Promise<boolean> {
    return this.write('cancelJob', jobId, outcome, now);
  }

  async claimJobs(owner: string, limit: number, now: Date, leaseExpiresAt: Date): Promise<ClaimedJob[]> {
    return this.write('claimJobs', owner, limit, now, leaseExpiresAt);
  }

  async finishJob(jobId: string, owner: string, outcome: JobOutcome, now: Date): Promise<boolean> {
    return this.write('finishJob', jobId, owner, outcome, now);
  }

  async retryJob(jobId: string, owner: string, runAt: Date, error: JobError | null, now: Date, unacted = false): Promise<boolean> {
    return this.write('retryJob', jobId, owner, runAt, error, now, unacted);
  }

  async deferJob(jobId: string, owner: string, runAt: Date, now: Date): Promise<boolean> {
    return this.write('deferJob', jobId, owner, runAt, now);
  }

  async releaseJobs(owner: string, now: Date, options: ReleaseOptions = {}): Promise<number> {
    return this.write('releaseJobs', owner, now, options);
  }

  /**
   * Holding DATA_DIR, this is the only process that runs the file's jobs: at its start, a job left RUNNING is one a
   * process that stopped without handing it back (killed, crashed, the machine lost) was running. Without it (the
   * CLI), a gateway may be running them.
   */
  async endOrphanedLeases(now: Date): Promise<number> {
    return this.dataDirLock ? this.write('endLeases', now) : 0;
  }

  async countJobs(status: JobStatus): Promise<number> {
    return Number((this.read(COUNT_JOBS_SQL[status]) as Row).count);
  }

  async oldestDueJobWaitMs(now: Date): Promise<number | null> {
    const { run_at: runAt } = this.read(oldestDueJobSql('?'), now.getTime(), now.getTime()) as Row;
    return runAt === null ? null : now.getTime() - Number(runAt);
  }

  async reserveIdempotencyKey(record: IdempotencyRecord, staleBefore: Date): Promise<IdempotencyRecord | null> {
    return this.write('reserveIdempotencyKey', record, staleBefore);
  }

  async findIdempotencyKey(workspaceId: string, key: string): Promise<IdempotencyRecord | null> {
    const row = this.read('SELECT * FROM idempotency_keys WHERE workspace_id = ? AND key = ?', workspaceId, key);
    return row ? rowToIdempotency(row) : null;
  }

  async releaseIdempotencyKey(reservation: IdempotencyRecord): Promise<void> {
    await this.write('releaseIdempotencyKey', reservation);
  }

  async pruneFinishedJobs(finishedBefore: Date, limit: number): Promise<number> {
    return this.write('pruneFinishedJobs', finishedBefore, limit);
  }

  async pruneEvents(occurredBefore: Date, limit: number, after: EventPruneCursor | null): Promise<EventPruneBatch> {
    return this.write('pruneEvents', occurredBefore, limit, after);
  }

  async pruneIdempotencyKeys(expiredBefore: Date, limit: number): Promise<number> {
    return this.write('pruneIdempotencyKeys', expiredBefore, limit);
  }

  async insertEvent(event: NewSecurityEvent): Promise<void> {
    await this.write('insertEvent', event);
  }

  /** Upstream pacing's counters (rate-limiter.ts): CounterTable. */
  upsertCounter(key: string, points: number, msDuration: number, forceExpire: boolean): Promise<CounterRow> {
    return this.write('upsertCounter', key, points, msDuration, forceExpire);
  }

  async readCounter(key: string): Promise<CounterRow | null> {
    return (this.read('SELECT points, expire FROM rate_limits WHERE key = ? AND (expire > ? OR expire IS NULL)', key, Date.now()) as CounterRow | undefined) ?? null;
  }

  deleteCounter(key: string): Promise<boolean> {
    return this.write('deleteCounter', key);
  }

  async listEvents(workspaceId: string, filter: SecurityEventFilter, options: ListOptions): Promise<SecurityEvent[]> {
    const types = distinctTypes(filter);
    if (types?.length === 0) return [];
    const params: Record<string, unknown> = { workspaceId, first: options.first };
    const seeks = eventWindowSeeks(filter);
    const end = pageEnd('security_events', options, params);
    const where = ['workspace_id = @workspaceId'];
    if (seeks.until === undefined) where.push(`seq < ${end}`);
    else {
      where.push(`seq < min(${end}, ${EVENT_WINDOW_SQL.firstFromUntil('workspace_id = @workspaceId', '@untilSeek')})`);
      params.untilSeek = seeks.until.getTime();
    }
    // One lower bound, as pageEnd makes one upper bound.
    const starts: string[] = [];
    if (seeks.since !== undefined) {
      starts.push(EVENT_WINDOW_SQL.lastBeforeSince('workspace_id = @workspaceId', '@sinceSeek'));
      params.sinceSeek = seeks.since.getTime();
    }
    if (options.afterSeq !== undefined) {
      starts.push('@afterSeq');
      params.afterSeq = options.afterSeq;
    }
    if (starts.length > 0) where.push(`seq > ${starts.length === 1 ? starts[0] : `max(${starts.join(', ')})`}`);
    if (filter.jobId !== undefined) {
      where.push('job_id = @jobId');
      params.jobId = filter.jobId;
    }
    if (filter.apiKeyId !== undefined) {
      where.push('api_key_id = @apiKeyId');
      params.apiKeyId = filter.apiKeyId;
    }
    // `+occurred_at`: the times filter the rows of the seq range, and must not draw SQLite to the time index,
    // from which the rows come out of seq order, to be sorted, all of them, for every page.
    if (filter.since !== undefined) {
      where.push('+occurred_at >= @since');
      params.since = filter.since.getTime();
    }
    if (filter.until !== undefined) {
      where.push('+occurred_at < @until');
      params.until = filter.until.getTime();
    }
    if (types === undefined && !filter.unknownTypes) where.push(KNOWN_EVENT_TYPES_SQL);
    types?.forEach((type, index) => (params[`type${index}`] = type));
    const newest = 'ORDER BY seq DESC LIMIT +@first';
    let text: string;
    if (types === undefined || filter.jobId !== undefined) {
      // One read on the index of the narrowest filter: the job's (a handful of events, whatever their types), the
      // key's, or the workspace's. Left to choose, SQLite takes the workspace's index for a time window (two bounds on
      // seq) and filters every event of the window by key, and given a job and a key it may walk every event of the
      // key (of the type, with one) for the few of the job.
      const index = filter.jobId !== undefined ? 'security_events_job' : filter.apiKeyId !== undefined ? 'security_events_key' : 'security_events_workspace';
      if (types !== undefined) where.push(`type IN (${types.map((_, position) => `@type${position}`).join(', ')})`);
      text = `SELECT * FROM security_events INDEXED BY ${index} WHERE ${where.join(' AND ')} ${newest}`;
    } else {
      // One seek per type, each reading at most a page in seq order, merged. Given `type IN (…)` SQLite reads every
      // event of the workspace in seq order and filters it (or every event of the key), and left to choose in each
      // branch it may still take the workspace's or the key's index for the same reason: hence INDEXED BY. Each
      // number of types is a statement of its own, prepared and kept: at most as many as there are event types.
      const index = filter.apiKeyId === undefined ? 'security_events_type' : 'security_events_key_type';
      const branch = (position: number) =>
        `SELECT * FROM security_events INDEXED BY ${index} WHERE ${where.join(' AND ')} AND type = @type${position}`;
      text = `${types.map((_, position) => branch(position)).join(' UNION ALL ')} ${newest}`;
    }
    const rows = this.readAll(text, params);
    // A cursor's row that is gone lists nothing (pageEnd): told apart from the end of the list only then.
    if (rows.length === 0 && options.beforeId !== undefined && (await this.eventSeq(workspaceId, options.beforeId)) === null) {
      throw eventCursorGone();
    }
    return rows.map(rowToEvent);
  }

  async eventSeq(workspaceId: string, id: string): Promise<number | null> {
    return this.read(`SELECT ${rowSeq('security_events', '?', '?')} AS seq`, workspaceId, id)!.seq as number | null;
  }
}
