import type { RateLimitState } from './errors.js';
import type {
  ApiKeyRecord,
  Campaign,
  DuplicationJob,
  IdempotencyRecord,
  JobError,
  JobFilter,
  JobStatus,
  ListedCampaign,
  NewSecurityEvent,
  Page,
  SecurityEvent,
  SecurityEventFilter,
  Workspace,
} from './types.js';

export interface ListOptions {
  first: number;
  /** Return rows strictly before (older than) this sequence number. */
  beforeSeq?: number;
  /**
   * Return rows strictly before the row of the workspace with this id (a cursor's). Takes the place of `beforeSeq`.
   * When the workspace has no such row: campaigns list none (the campaign reader then refuses the cursor); events
   * reject with `eventCursorGone` (cursor.ts), since an empty page would read as the end of a list that goes on past
   * a pruned event.
   */
  beforeId?: string;
  /**
   * Events only: return rows strictly after (newer than) this sequence number, an event's (`eventSeq`); combines
   * with the other bounds. A number, not the event's id, so that a listing read in pages goes on once the event is
   * pruned.
   */
  afterSeq?: number;
}

export interface JobOutcome {
  status: 'SUCCEEDED' | 'FAILED';
  resultCampaignId: string | null;
  error: JobError | null;
  /** Local mode: the copy, written in the same transaction as the outcome. */
  newCampaign?: Campaign;
  event: NewSecurityEvent;
}

/** An outcome that fails a job, with its error. */
export type JobFailure = JobOutcome & { status: 'FAILED'; error: JobError };

/** Where a pass of `pruneEvents` has got to: the last event it examined, in the order it examines them. */
export interface EventPruneCursor {
  occurredAt: Date;
  seq: number;
}

export interface EventPruneBatch {
  deleted: number;
  /** Where the next batch of the pass starts; null once the pass has examined every event older than the cutoff. */
  next: EventPruneCursor | null;
}

/**
 * What erasing a workspace did: the rows deleted from each table, in the order they were deleted (the store's own
 * tables only: an SQLite store has neither `job_queue_turns` nor `rate_limits`). Or nothing at all, while a job of the
 * workspace is running under a lease: `running` such jobs, the last lease ending at `leaseEndsAt`.
 */
export type WorkspaceDeletion =
  | { deleted: true; rows: Record<string, number> }
  | { deleted: false; running: number; leaseEndsAt: Date };

/** The tables an erasure empties in batches between its first step and its last, in that order. */
export const ERASED_IN_BATCHES = ['security_events', 'jobs', 'campaigns', 'tags'] as const;
export type BatchErasedTable = (typeof ERASED_IN_BATCHES)[number];

/** The rows of one workspace an export reads from each table, as the domain holds them (the store's tables, by their names). */
export interface ExportRows {
  workspaces: Workspace;
  api_keys: ApiKeyRecord;
  tags: { workspaceId: string; name: string };
  campaigns: Campaign;
  jobs: DuplicationJob;
  security_events: SecurityEvent;
  idempotency_keys: IdempotencyRecord;
}

export type ExportTable = keyof ExportRows;

/** The tables an export reads, in the order it reads them: every table erasure deletes from, but the counters of the queue and the limiters. */
export const EXPORT_TABLES: readonly ExportTable[] = ['workspaces', 'api_keys', 'tags', 'campaigns', 'jobs', 'security_events', 'idempotency_keys'];

/** What countRows counts in a table: rows of a workspace there is, and rows of none. */
export interface RowCount {
  ofWorkspaces: number;
  orphaned: number;
}

/** A page of an export: its rows in the order of the table's key, and the key of the last row, where the next page starts; null after the last page. */
export interface ExportPage<T extends ExportTable> {
  rows: ExportRows[T][];
  next: string | null;
}

/** What opening a store does with one an older version left: bring its schema up to date, or refuse it unchanged. */
export type OlderSchema = 'upgrade' | 'refuse';

/** The schema version a store was found at, and the one it is at now: equal when nothing was applied, `from` 0 for a new store. */
export interface SchemaVersions {
  from: number;
  to: number;
  /** Why the schema could not be checked for parts its version lacks, and what enables the check; absent when it was. */
  unchecked?: string;
}

/** A store's schema, found at a version above this version's (`known`): a newer version migrated it since this one opened it. */
export interface NewerSchema {
  found: number;
  known: number;
  /** Says so, naming the store and both versions. */
  message: string;
}

/**
 * Persistence. Every method that takes a workspace id only ever sees that workspace's rows. A key no row can
 * hold (text with a NUL, which PostgreSQL cannot take) is a key like any other no row holds: nothing is found.
 * Adapters: SQLite (embedded default) and PostgreSQL; all pass test/contract/store.contract.ts.
 */
export interface GatewayStore {
  readonly kind: string;
  /**
   * Makes the schema of a new store, and refuses one a newer version has migrated. A store an older version
   * left is brought up to date (`upgrade`, the default: the gateway as it starts) or refused as it is (`refuse`).
   */
  migrate(older?: OlderSchema): Promise<SchemaVersions>;
  /**
   * Reads the schema's version again (one cheap read): what a newer version that migrated the store since it was
   * opened left it at, the rolling upgrade that `migrate` cannot see; null while it is at most this version's.
   */
  newerSchema(): Promise<NewerSchema | null>;
  ping(): Promise<void>;
  /**
   * The time by the database server's clock, read now: what this instance's clock is measured against, since every
   * instance takes lease ends, run times and quota windows from its own. Absent for a store in process (SQLite).
   */
  databaseTime?(): Promise<Date>;
  /**
   * Why the store cannot serve again until the process restarts (a state it never leaves by itself), or null.
   * Unlike a failing ping(), which an outage also causes, this fails liveness. Absent: no such state.
   */
  unrecoverable?(): string | null;
  /**
   * The embedded store's writer thread, for /metrics: hears, from now on, how long each group of writes took to
   * commit (its fsync included), in seconds. Absent: not measured (PostgreSQL).
   */
  observeCommits?(observer: (seconds: number) => void): void;
  /** The writes waiting for the embedded store's writer thread now: sent or about to be, not yet committed. */
  writesWaiting?(): number;
  /** A shared store's pool, for /metrics: its connections in use and idle now, and the requests waiting for one. Absent: no pool. */
  connections?(): { inUse: number; idle: number; awaited: number };
  /** The writes waiting for the workspaces' event locks now: on a connection, or parked without one. Absent: no such lock. */
  eventLockWrites?(): { waiting: number; parked: number };
  close(): Promise<void>;

  /** False, writing nothing, when a workspace has the name already (made since the caller looked). */
  createWorkspace(workspace: Workspace): Promise<boolean>;
  findWorkspace(idOrName: string): Promise<Workspace | null>;
  listWorkspaces(): Promise<Workspace[]>;
  /** Whether there is any workspace: one row read, however many there are. */
  hasWorkspaces(): Promise<boolean>;
  /**
   * The first step of an erasure, in one short transaction: what must go at once so that nothing new starts for the
   * workspace. Its API keys (no request authenticates for it any more), its idempotency keys, and its jobs a claim
   * could take (PENDING, and RUNNING under a lease expired at `now`). Refused, deleting nothing, while one of its jobs
   * runs under a lease, as deleteWorkspace. Null when the workspace is not there.
   */
  startWorkspaceErasure(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null>;
  /**
   * Deletes up to `limit` rows of the workspace from `table` (of jobs, only finished ones: a job a request enqueued
   * since the first step is deleteWorkspace's to judge), in a transaction of its own; returns how many it did.
   */
  eraseWorkspaceRows(workspaceId: string, table: BatchErasedTable, limit: number): Promise<number>;
  /**
   * The last step of an erasure (alone, a whole one): the workspace and every row that names it or its keys, in every table, in one transaction. Deletes
   * nothing while one of its jobs is RUNNING under a lease not expired at `now` (a worker may be acting on it); a
   * job whose lease expired is one no worker holds any more (its `finishJob` would write nothing), and goes. Null
   * when the workspace is not there (another process deleted it since the caller found it): nothing was deleted.
   */
  deleteWorkspace(workspaceId: string, now: Date): Promise<WorkspaceDeletion | null>;
  /**
   * Up to `limit` rows of the workspace in `table`, in the order of the table's key (seq, id or name), after the row
   * whose key is `after` (null: from the first), read on an index that starts with the workspace: a page costs the
   * same however many rows the workspace or the table holds. A read, never a write.
   */
  exportRows<T extends ExportTable>(workspaceId: string, table: T, after: string | null, limit: number): Promise<ExportPage<T>>;
  /**
   * Writes rows as exportRows read them from another store, in one transaction: every column kept (a key's hashes, a
   * job's state and lease, an event's seq), so that a store copied page by page reads the same (`store copy`). A
   * job's queue turn is 0, that of a job queued before turns existed: the copied backlog goes first, by due time.
   * Meant for a store no gateway uses yet: rows already there are not merged but fail the write.
   */
  importRows<T extends ExportTable>(table: T, rows: ExportRows[T][]): Promise<void>;
  /**
   * The rows of `table` that belong to a workspace there is (of `workspaces`, all), which `store copy` compares between
   * the two stores, and those whose workspace is gone (erased while a request still wrote), which it does not copy.
   */
  countRows(table: ExportTable): Promise<RowCount>;
  /**
   * What importRows needs and the store's role lacks, as `INSERT on jobs` (none: the copy may write): checked before
   * a copy writes anything, so that it stops before the first row rather than part-way.
   */
  missingImportPrivileges(): Promise<string[]>;
  /**
   * When a `store copy` into this store started, while it has not finished: the store then holds part of another, on
   * which no gateway may start. Null for any other store.
   */
  copyStarted(): Promise<Date | null>;
  /** Marks the store as being copied into (a table of its own, `store_copy`), before the copy writes any row. */
  markCopyStarted(at: Date): Promise<void>;
  /** Removes the mark, once every row is copied and the counts of both stores match. */
  markCopyFinished(): Promise<void>;

  /** False, writing nothing, when the key's workspace does not exist (deleted since the caller found it). */
  insertApiKey(key: ApiKeyRecord, event: NewSecurityEvent): Promise<boolean>;
  findApiKeyByHash(hash: string): Promise<ApiKeyRecord | null>;
  findApiKey(id: string): Promise<ApiKeyRecord | null>;
  listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]>;
  revokeApiKey(id: string, at: Date, event: NewSecurityEvent): Promise<boolean>;
  /**
   * Replaces a key's secret `replacing`, the hash the caller read, and writes `event` with it. The old hash is kept as
   * the previous one, in place of any earlier previous hash, valid until `previousValidUntil` (null: not at all, on no
   * clock's word, so that no instance with a clock behind the caller's takes it after the rotation). `findApiKeyByHash` finds the key by either hash, so that a replaced secret used later is known as
   * the key's; the caller checks the previous hash's expiry. False, writing nothing, when the key is revoked, gone, or no longer has that
   * hash (another rotation replaced it since the caller read it, so what the event says of the key is stale).
   */
  rotateApiKey(id: string, replacing: string, hash: string, prefix: string, previousValidUntil: Date | null, event: NewSecurityEvent): Promise<boolean>;
  /**
   * Records that `key`, as `findApiKeyByHash` returned it, was used at `at`. A store that caches keys gives its
   * cached record that time, so that the next lookup sees it without reading the row again.
   */
  touchApiKey(key: ApiKeyRecord, at: Date): Promise<void>;

  upsertTags(workspaceId: string, names: string[]): Promise<void>;
  /** Of the given tag names, those that do not exist in the workspace. */
  missingTags(workspaceId: string, names: string[]): Promise<string[]>;
  insertCampaign(campaign: Campaign): Promise<void>;
  getCampaign(workspaceId: string, id: string): Promise<Campaign | null>;
  listCampaigns(workspaceId: string, options: ListOptions): Promise<Campaign[]>;

  /**
   * Inserts the job and its CAMPAIGN_DUPLICATION_REQUESTED event in one transaction, and, when given,
   * binds the idempotency key `reservation` made to the job in the same transaction. A reservation another one
   * replaced since (a request stalled past a minute, then retried) binds nothing: false, and nothing written.
   */
  enqueueJob(job: DuplicationJob, event: NewSecurityEvent, reservation?: IdempotencyRecord): Promise<boolean>;
  getJob(workspaceId: string, id: string): Promise<DuplicationJob | null>;
  /** The jobs of the workspace among `ids`, in one read, in no particular order: an id of none is left out. */
  getJobs(workspaceId: string, ids: readonly string[]): Promise<DuplicationJob[]>;
  /** A job by its id alone, whatever its workspace: for the operator (the CLI), never for a caller. */
  findJob(id: string): Promise<DuplicationJob | null>;
  /**
   * Up to `first` jobs that match `filter`, newest first (by id: ids are made in time order), older than the job
   * `beforeId` (null: from the newest): a page, and the last job's id where the next one starts.
   */
  listJobs(filter: JobFilter, first: number, beforeId: string | null): Promise<DuplicationJob[]>;
  /**
   * Fails a job no worker holds: PENDING, or RUNNING under a lease expired at `now` (its worker is gone; one still
   * running it would find its `finishJob` writes nothing). Writes the outcome (FAILED, its error) and its event in one
   * transaction, or nothing at all, returning false, for a job in any other state or none.
   */
  cancelJob(jobId: string, outcome: JobFailure, now: Date): Promise<boolean>;
  /**
   * Claims up to `limit` runnable jobs (pending and due, or running with an expired lease) for `owner`,
   * marks them RUNNING with a lease until `leaseExpiresAt` and counts an attempt.
   */
  claimJobs(owner: string, limit: number, now: Date, leaseExpiresAt: Date): Promise<ClaimedJob[]>;
  /**
   * Writes the terminal state, the outcome event and (local mode) the new campaign in one transaction,
   * only while `owner` still holds the lease. Returns false, writing nothing, when it does not.
   */
  finishJob(jobId: string, owner: string, outcome: JobOutcome, now: Date): Promise<boolean>;
  /**
   * Returns a running job to the queue, due at `runAt`, keeping the error of the failed attempt. `unacted`: the
   * attempt is known to have made nothing upstream, and is counted in `upstreamUnactedAttempts`; left out, as an
   * earlier version leaves it, the attempt counts as one that may have.
   */
  retryJob(jobId: string, owner: string, runAt: Date, error: JobError | null, now: Date, unacted?: boolean): Promise<boolean>;
  /**
   * Returns a running job to the queue, due at `runAt`, without counting the attempt it was claimed with:
   * it was never tried (e.g. it waited for an upstream pacing slot). Keeps the job's error.
   */
  deferJob(jobId: string, owner: string, runAt: Date, now: Date): Promise<boolean>;
  /**
   * Hands back every job `owner` holds (graceful shutdown), due at once, without counting the attempt; with
   * `keepAttempts`, the attempt stays counted (and not as one known to have made nothing): its run may have acted
   * outside the store before it was cut short.
   */
  releaseJobs(owner: string, now: Date, options?: ReleaseOptions): Promise<number>;
  /**
   * The gateway's start, before its worker claims: ends, as of `now`, the lease of every RUNNING job when the store
   * knows that no other process can be running it (an embedded store this process holds, data-dir-lock.ts), so that
   * the next claim takes the job over as it takes one whose lease expired (an attempt counted, `takenOverFrom`). How
   * many it ended: none for a store that cannot know (a CLI's, beside a running gateway). Absent: never known
   * (PostgreSQL, which other instances share).
   */
  endOrphanedLeases?(now: Date): Promise<number>;
  /**
   * Jobs in one status. PENDING and RUNNING count the queue, through its partial indexes, so they stay cheap
   * however many finished jobs are kept; SUCCEEDED and FAILED count every finished job kept.
   */
  countJobs(status: JobStatus): Promise<number>;
  /**
   * How long the pending job that has been due longest has been due, in ms: from the earliest `runAt` at or before
   * `now` among PENDING jobs, read through the due-job index, to `now`, both by the clock the store keeps the queue's
   * time by (the database's, for PostgreSQL); null when no pending job is due.
   */
  oldestDueJobWaitMs(now: Date): Promise<number | null>;

  /**
   * Reserves an idempotency key for a request being accepted. Returns null when this call reserved it;
   * otherwise the record that holds it. An expired record, or a reservation older than `staleBefore`
   * that never got a job (its request died), is replaced.
   */
  reserveIdempotencyKey(record: IdempotencyRecord, staleBefore: Date): Promise<IdempotencyRecord | null>;
  /** The record of an idempotency key as it is, whether or not it still holds the key; a read, never a write. */
  findIdempotencyKey(workspaceId: string, key: string): Promise<IdempotencyRecord | null>;
  /**
   * Drops a reservation that did not produce a job (the request failed), only while it is still this one: a
   * request that stalled past a minute must not drop the reservation of the retry that replaced it.
   */
  releaseIdempotencyKey(reservation: IdempotencyRecord): Promise<void>;

  /** Retention, in bounded batches: each call deletes at most `limit` rows and returns how many it did. */
  pruneFinishedJobs(finishedBefore: Date, limit: number): Promise<number>;
  /**
   * Examines at most `limit` events older than `occurredBefore`, oldest first, after `after` (null: from the
   * oldest), and deletes those that may go: an event of a job goes only once the job is gone, so a kept job
   * keeps its events. Those kept are stepped over by the cursor, so a pass reads each of them once.
   */
  pruneEvents(occurredBefore: Date, limit: number, after: EventPruneCursor | null): Promise<EventPruneBatch>;
  pruneIdempotencyKeys(expiredBefore: Date, limit: number): Promise<number>;

  insertEvent(event: NewSecurityEvent): Promise<void>;
  listEvents(workspaceId: string, filter: SecurityEventFilter, options: ListOptions): Promise<SecurityEvent[]>;
  /** The sequence number of the workspace's event with this id, null when it has none (pruned, another workspace's). */
  eventSeq(workspaceId: string, id: string): Promise<number | null>;
}

/** Points a quota took: the state after, and the window they were taken in, which alone may get them back. */
export interface QuotaTaken extends RateLimitState {
  readonly window?: unknown;
}

/** A quota: a number of points per window, per key (a workspace). */
export interface Quota {
  readonly limit: number;
  /** Takes points; rejects with GatewayError RATE_LIMITED (carrying the state) when the quota is spent. */
  consume(key: string, points?: number): Promise<QuotaTaken>;
  /** The state without taking a point. */
  peek(key: string): Promise<RateLimitState>;
  /**
   * Gives back the points `taken` took, for a request that turned out to owe none, to the window they were taken
   * in while it lasts; resolves whether it did. A window that is over owes nothing, and the next one must not hold
   * more than the limit for it.
   */
  refund(taken: QuotaTaken, points?: number): Promise<boolean>;
}

/** A job as a claim took it. */
export interface ClaimedJob extends DuplicationJob {
  /**
   * The lease owner of a job the claim took while RUNNING under an expired lease (its worker died, hung or lost the
   * store): that run may have reached the upstream already. Absent for a job that was pending.
   */
  takenOverFrom?: string;
  /**
   * How many of the attempts before this one are known to have made nothing upstream (`unacted` of their retry):
   * every other attempt counted in `attempts` may have, whichever instance made it and however it ended. Absent: none.
   */
  upstreamUnactedAttempts?: number;
}

/** How `releaseJobs` hands jobs back. */
export interface ReleaseOptions {
  /** Keep the attempt each job was claimed with: in upstream mode its call may be in flight, and may have acted. */
  keepAttempts?: boolean;
}

/**
 * Failed authentications per client (an IP address): past the limit the client is blocked for a while,
 * whatever key it sends, so keys cannot be guessed at speed.
 */
export interface AuthFailureLimiter {
  /** Rejects with GatewayError AUTH_BLOCKED (with retryAfterSeconds) while the client is blocked. */
  check(client: string): Promise<void>;
  /** Counts one failed authentication; when it is the one that blocks the client, how many seconds the block lasts. */
  recordFailure(client: string): Promise<number | null>;
  /** Lifts the client's block and forgets its failures; false when it had neither. */
  unblock(client: string): Promise<boolean>;
}

/**
 * Points a name may spend per window: the events of one kind a key may add to its workspace's security log, so that a
 * key refused over and over cannot bury the log (or fill the disk) with its refusals; the reads of a workspace.
 */
export interface Budget {
  /** Whether `points` (1 when left out) more may be spent under this name now, and if not, how long until they may. */
  take(name: string, points?: number): Promise<{ granted: true } | { granted: false; retryAfterMs: number }>;
}

export type DuplicationResult =
  | { kind: 'succeeded'; resultCampaignId: string | null; newCampaign?: Campaign; details?: Record<string, unknown> }
  /**
   * `mayHaveActed` (a duplicator acting outside the store): false when the attempt is known to have made nothing
   * there (refused, or never sent); left out, it may have.
   */
  | { kind: 'permanent'; error: JobError; mayHaveActed?: boolean }
  | { kind: 'transient'; error: JobError; retryAfterMs?: number; mayHaveActed?: boolean }
  /**
   * Not tried at all (no upstream pacing slot yet, the pacing store cannot be reached, or the upstream is down and
   * its circuit open): back to the queue for `retryAfterMs`, no attempt counted. No other job can be tried before
   * then either, so the worker stops claiming until that time.
   */
  | { kind: 'deferred'; retryAfterMs: number; waitsFor: 'slot' | 'pacing store' | 'upstream' };

/** Executes one duplication job: in the gateway's own store (local) or against Braze (braze). */
export interface Duplicator {
  /**
   * Whether a run acts outside the gateway's store (upstream mode: Braze makes the copy when called), so that a run
   * whose outcome was not recorded cannot be repeated for free: it would make another copy.
   */
  readonly actsOutsideStore: boolean;
  duplicate(job: DuplicationJob): Promise<DuplicationResult>;
}

/** Read access to campaigns: the gateway's own store, or Braze's list/details endpoints in upstream mode. */
export interface CampaignReader {
  /** Whether accepting a job checks that the source campaign and the tags exist (local mode). */
  readonly validatesOnAccept: boolean;
  /** `requestId`: the request that reads, for an upstream's logs and the calls it makes (upstream mode). */
  get(workspaceId: string, id: string, requestId?: string): Promise<Campaign | null>;
  list(workspaceId: string, first: number, after: string | null, requestId?: string): Promise<Page<ListedCampaign>>;
}

/**
 * The hold on every upstream call that the upstream asked for with a 429 (upstream mode), as every instance shares
 * it: no pending job is sent before it ends, whatever its own run time.
 */
export interface UpstreamPause {
  /** Milliseconds until the hold ends; 0 when there is none. */
  remainingMs(): Promise<number>;
}

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
