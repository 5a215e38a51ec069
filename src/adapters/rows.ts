import type { BatchErasedTable, ClaimedJob, EventPruneBatch, ExportPage, ExportRows, ExportTable } from '../domain/ports.js';
import { firstIdAt } from '../domain/ids.js';
import {
  JOB_STATUSES,
  SECURITY_EVENT_TYPES,
  type ApiKeyRecord,
  type Campaign,
  type DuplicationJob,
  type IdempotencyRecord,
  type JobErrorCode,
  type JobFilter,
  type JobStatus,
  type NewSecurityEvent,
  type SecurityEvent,
  type SecurityEventFilter,
  type SecurityEventType,
  type Workspace,
} from '../domain/types.js';

/** Rows as the SQL stores return them, mapped to domain objects. Numbers that PostgreSQL returns as strings (bigint) are converted. */
export type Row = Record<string, unknown>;

// Dates arrive as epoch milliseconds (SQLite) or as Date objects (PostgreSQL timestamptz).
const date = (value: unknown): Date => new Date(Number(value));
const maybeDate = (value: unknown): Date | null => (value === null || value === undefined ? null : date(value));
// JSON arrives as text (SQLite) or already parsed (PostgreSQL jsonb).
const parse = <T>(value: unknown): T => (typeof value === 'string' ? JSON.parse(value) : value) as T;

export const rowToWorkspace = (row: Row): Workspace => ({
  id: String(row.id),
  name: String(row.name),
  createdAt: date(row.created_at),
});

export const rowToApiKey = (row: Row): ApiKeyRecord => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  name: String(row.name),
  hash: String(row.hash),
  prefix: String(row.prefix),
  permissions: parse(row.permissions),
  allowedCidrs: row.allowed_cidrs === null ? null : parse(row.allowed_cidrs),
  previousHash: (row.previous_hash as string | null) ?? null,
  previousHashExpiresAt: maybeDate(row.previous_hash_expires_at),
  createdAt: date(row.created_at),
  lastUsedAt: maybeDate(row.last_used_at),
  expiresAt: maybeDate(row.expires_at),
  revokedAt: maybeDate(row.revoked_at),
});

export const rowToCampaign = (row: Row): Campaign => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  name: String(row.name),
  description: row.description === null ? null : String(row.description),
  tagNames: parse(row.tag_names),
  draft: Boolean(row.draft),
  body: parse(row.body),
  createdAt: date(row.created_at),
  updatedAt: date(row.updated_at),
  duplicatedFrom: row.duplicated_from === null ? null : String(row.duplicated_from),
});

export const rowToJob = (row: Row): DuplicationJob => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  status: row.status as DuplicationJob['status'],
  sourceCampaignId: String(row.source_campaign_id),
  name: String(row.name),
  description: row.description === null ? null : String(row.description),
  tagNames: row.tag_names === null ? null : parse(row.tag_names),
  channel: row.channel as DuplicationJob['channel'],
  apiKeyId: String(row.api_key_id),
  apiKeyName: String(row.api_key_name),
  ip: String(row.ip),
  requestId: (row.request_id as string | null) ?? null,
  attempts: Number(row.attempts),
  runAt: date(row.run_at),
  leaseOwner: row.lease_owner === null ? null : String(row.lease_owner),
  leaseExpiresAt: maybeDate(row.lease_expires_at),
  createdAt: date(row.created_at),
  updatedAt: date(row.updated_at),
  finishedAt: maybeDate(row.finished_at),
  resultCampaignId: row.result_campaign_id === null ? null : String(row.result_campaign_id),
  // Written by the gateway, each one of JOB_ERROR_CODES unless an older version wrote it.
  error: row.error_code === null ? null : { code: String(row.error_code) as JobErrorCode, message: String(row.error_message) },
});

export const rowToIdempotency = (row: Row): IdempotencyRecord => ({
  workspaceId: String(row.workspace_id),
  key: String(row.key),
  requestHash: String(row.request_hash),
  jobId: (row.job_id as string | null) ?? null,
  createdAt: date(row.created_at),
  expiresAt: date(row.expires_at),
});

export const rowToEvent = (row: Row): SecurityEvent => ({
  id: String(row.id),
  seq: Number(row.seq),
  workspaceId: String(row.workspace_id),
  type: row.type as SecurityEvent['type'],
  occurredAt: date(row.occurred_at),
  apiKeyId: (row.api_key_id as string | null) ?? null,
  apiKeyName: (row.api_key_name as string | null) ?? null,
  channel: (row.channel as SecurityEvent['channel']) ?? null,
  ip: (row.ip as string | null) ?? null,
  jobId: (row.job_id as string | null) ?? null,
  campaignId: (row.campaign_id as string | null) ?? null,
  details: parse(row.details),
});

/** How a store keeps the values SQL drivers disagree on: times (epoch ms or timestamptz) and booleans. */
export interface SqlValues {
  date(value: Date): unknown;
  bool(value: boolean): unknown;
}

const maybe = (value: Date | null, sql: SqlValues): unknown => (value === null ? null : sql.date(value));
// Arrays and objects are stored as JSON text; pg would otherwise send an array as a PostgreSQL array.
const text = (value: unknown): string | null => (value === null ? null : JSON.stringify(value));

/** Domain objects to the rows both SQL stores insert, column name to value. */
export const apiKeyToRow = (key: ApiKeyRecord, sql: SqlValues): Row => ({
  id: key.id,
  workspace_id: key.workspaceId,
  name: key.name,
  hash: key.hash,
  prefix: key.prefix,
  permissions: text(key.permissions),
  allowed_cidrs: text(key.allowedCidrs),
  previous_hash: key.previousHash,
  previous_hash_expires_at: maybe(key.previousHashExpiresAt, sql),
  created_at: sql.date(key.createdAt),
  last_used_at: maybe(key.lastUsedAt, sql),
  expires_at: maybe(key.expiresAt, sql),
  revoked_at: maybe(key.revokedAt, sql),
});

export const campaignToRow = (campaign: Campaign, sql: SqlValues): Row => ({
  id: campaign.id,
  workspace_id: campaign.workspaceId,
  name: campaign.name,
  description: campaign.description,
  tag_names: text(campaign.tagNames),
  draft: sql.bool(campaign.draft),
  body: text(campaign.body),
  created_at: sql.date(campaign.createdAt),
  updated_at: sql.date(campaign.updatedAt),
  duplicated_from: campaign.duplicatedFrom,
});

/** A job as it is enqueued; lease and outcome columns start empty. One due later than it was made is `waiting` (promoteDueJobsSql). */
export const newJobToRow = (job: DuplicationJob, sql: SqlValues): Row => ({
  id: job.id,
  workspace_id: job.workspaceId,
  status: job.status,
  source_campaign_id: job.sourceCampaignId,
  name: job.name,
  description: job.description,
  tag_names: text(job.tagNames),
  channel: job.channel,
  api_key_id: job.apiKeyId,
  api_key_name: job.apiKeyName,
  ip: job.ip,
  request_id: job.requestId,
  attempts: job.attempts,
  run_at: sql.date(job.runAt),
  created_at: sql.date(job.createdAt),
  updated_at: sql.date(job.updatedAt),
  waiting: sql.bool(job.runAt.getTime() > job.createdAt.getTime()),
});

export const eventToRow = (event: NewSecurityEvent, sql: SqlValues): Row => ({
  id: event.id,
  workspace_id: event.workspaceId,
  type: event.type,
  occurred_at: sql.date(event.occurredAt),
  api_key_id: event.apiKeyId,
  api_key_name: event.apiKeyName,
  channel: event.channel,
  ip: event.ip,
  job_id: event.jobId,
  campaign_id: event.campaignId,
  details: text(event.details),
});

/** One statement per status, each naming its status: a partial index (jobs_due, jobs_leased) is used only for a WHERE it can see at planning. */
export const COUNT_JOBS_SQL: Record<JobStatus, string> = {
  PENDING: "SELECT COUNT(*) AS count FROM jobs WHERE status = 'PENDING'",
  RUNNING: "SELECT COUNT(*) AS count FROM jobs WHERE status = 'RUNNING'",
  SUCCEEDED: "SELECT COUNT(*) AS count FROM jobs WHERE status = 'SUCCEEDED'",
  FAILED: "SELECT COUNT(*) AS count FROM jobs WHERE status = 'FAILED'",
};

/**
 * How long before `--since` a listing still reads job ids: an id takes the time of the instance that accepted the
 * job, created_at the database's on PostgreSQL. A day is far past any skew readiness reports (more than a second).
 */
const ID_CLOCK_SLACK_MS = 24 * 3600_000;

/** How a store's SQL writes what listJobsSql needs of it. */
export interface ListJobsDialect {
  /** Takes a value and gives its placeholder. */
  param: (value: unknown) => string;
  toDate: (value: Date) => unknown;
  /** The condition that a job is of the workspace whose placeholder is given. */
  inWorkspace: (placeholder: string) => string;
  /** What the limit's placeholder is written after: SQLite's `+` (connection.ts says why). */
  limitPrefix?: string;
}

/**
 * The statement of listJobs. Newest first by id, an index's order: a workspace's through jobs_workspace, ordered by
 * the workspace first, every job through the primary key. Given `workspace_id = $n`, PostgreSQL drops the
 * workspace from the order (it is one value) and may walk the primary key backwards through every other
 * workspace's jobs: the PostgreSQL store writes the workspace as a list of one (IN_WORKSPACE in its store.ts says
 * why). A time bound also bounds the ids from below (ids begin with their time, ids.ts), so that the scan stops
 * there instead of reading every older job. The status is written in the text, as COUNT_JOBS_SQL's, so that a
 * queue's partial index can serve PENDING and RUNNING. A key is read among the rows the rest finds (no index starts with it):
 * the CLI names its workspace with it (AdminService.keyJobFilter).
 */
export function listJobsSql(filter: JobFilter, first: number, beforeId: string | null, sql: ListJobsDialect): string {
  const { param } = sql;
  const where: string[] = [];
  if (filter.workspaceId !== undefined) where.push(sql.inWorkspace(param(filter.workspaceId)));
  if (filter.status !== undefined) where.push(`status = '${JOB_STATUSES.find((status) => status === filter.status) ?? 'none'}'`);
  if (filter.apiKeyId !== undefined) where.push(`api_key_id = ${param(filter.apiKeyId)}`);
  if (filter.createdSince !== undefined) {
    where.push(`created_at >= ${param(sql.toDate(filter.createdSince))}`);
    where.push(`id >= ${param(firstIdAt(filter.createdSince.getTime() - ID_CLOCK_SLACK_MS))}`);
  }
  if (beforeId !== null) where.push(`id < ${param(beforeId)}`);
  const order = filter.workspaceId === undefined ? 'id DESC' : 'workspace_id DESC, id DESC';
  return `SELECT * FROM jobs${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ${sql.limitPrefix ?? ''}${param(first)}`;
}

/** The due time of the pending job due longest ago, and the time it is due by; `now` is SQL for the time. */
export const oldestDueJobSql = (now: string): string => `SELECT MIN(run_at) AS run_at, ${now} AS now FROM jobs WHERE status = 'PENDING' AND run_at <= ${now}`;

/** The pending jobs put there not due yet (`waiting`) whose time, `now`, has come. */
const dueWaitingJobs = (now: string): string => `status = 'PENDING' AND waiting = true AND run_at <= ${now}`;

/**
 * Makes due the pending jobs put there not due yet (`waiting`: retried, deferred) whose time has come, so that a
 * claim finds them in jobs_turn, and claims never step over the jobs still waiting. One seek on jobs_waiting: its
 * cost is the number of jobs that became due, not the number waiting. `now` is its one parameter, in the store's
 * placeholder. Running it twice at once is correct, though not harmless on PostgreSQL (see its store's promoteDueJobs).
 */
export const promoteDueJobsSql = (now: string): string => `UPDATE jobs SET waiting = false WHERE ${dueWaitingJobs(now)}`;
/**
 * A job promoteDueJobsSql would make due, if any, read without locking it. In the order of jobs_waiting, so that it is one
 * seek there: as EXISTS, planned to stop at the first row it finds, it read every due job instead.
 */
export const anyJobToPromoteSql = (now: string): string => `SELECT run_at FROM jobs WHERE ${dueWaitingJobs(now)} ORDER BY run_at LIMIT 1`;

/** A column whose value the INSERT reads from the database: SQL taking one parameter (`param`, given its placeholder). */
export interface ReadColumn {
  column: string;
  sql: (placeholder: string) => string;
  param: unknown;
}

/**
 * `INSERT INTO table (columns) VALUES (placeholders)` for a row, and the columns read by the statement itself
 * (their parameters last, in order); `placeholder` numbers from 1 (pg) or ignores it (SQLite).
 */
export function insertStatement(table: string, row: Row, placeholder: (position: number) => string, read: ReadColumn[] = []): { text: string; values: unknown[] } {
  const columns = Object.keys(row);
  const values = Object.values(row);
  const sources = columns.map((_, index) => placeholder(index + 1));
  for (const column of read) {
    columns.push(column.column);
    values.push(column.param);
    sources.push(column.sql(placeholder(values.length)));
  }
  return { text: `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${sources.join(', ')})`, values };
}

/**
 * A new job's turn in the queue (`queue_turn`), read by its INSERT: the queue's clock (the highest turn claimed), or
 * one past its workspace's last job's turn when that is later. So a workspace with a backlog queues behind its own
 * jobs rather than making every other workspace's wait behind them, and one whose last job is older than the clock
 * starts at the clock, however many jobs it ran before. The last job counts whatever its state: a workspace that
 * sends its next job as soon as the last one is claimed would otherwise take the clock's turn every time, ahead of
 * another's backlog waiting at the next turn. A retried or deferred job keeps its turn. This is the embedded store's
 * form: its writes are one at a time, so no other job comes between the read and the insert. The workspace's last
 * turn is one seek on jobs_workspace_turn. PostgreSQL keeps each workspace's last turn in a row instead
 * (PostgresStore.enqueueJob): there, transactions running at once do not see each other's jobs.
 */
export const jobTurn = (job: DuplicationJob): ReadColumn => ({
  column: 'queue_turn',
  sql: (workspace) =>
    `(SELECT MAX(turn) FROM (SELECT turn FROM job_queue_clock UNION ALL
       SELECT MAX(queue_turn) + 1 FROM jobs WHERE workspace_id = ${workspace}) turns)`,
  param: job.workspaceId,
});

/**
 * The jobs a claim took (rows with their `queue_turn`, and `taken_over_from`: the lease owner of a job that was
 * RUNNING under an expired lease), in the order the queue gives them: by turn, then due time, then id. The highest
 * turn among them is what the claim moves the clock up to.
 */
export function claimedJobs(rows: Row[]): { jobs: ClaimedJob[]; lastTurn: number | null } {
  const turn = (row: Row) => Number(row.queue_turn);
  const ordered = rows.map((row) => ({
    row,
    job: {
      ...rowToJob(row),
      ...(typeof row.taken_over_from === 'string' ? { takenOverFrom: row.taken_over_from } : {}),
      upstreamUnactedAttempts: Number(row.upstream_unacted_attempts ?? 0),
    },
  }));
  ordered.sort(
    (a, b) => turn(a.row) - turn(b.row) || a.job.runAt.getTime() - b.job.runAt.getTime() || (a.job.id < b.job.id ? -1 : a.job.id > b.job.id ? 1 : 0),
  );
  return { jobs: ordered.map(({ job }) => job), lastTurn: rows.length === 0 ? null : Math.max(...rows.map(turn)) };
}

/**
 * The sequence number of the workspace's row a cursor names, as SQL: NULL when there is none (another
 * workspace's, or pruned), so that `seq < (…)` then matches no row.
 */
export const rowSeq = (table: 'campaigns' | 'security_events', workspaceParam: string, idParam: string): string =>
  `(SELECT seq FROM ${table} WHERE workspace_id = ${workspaceParam} AND id = ${idParam})`;

/**
 * A retention batch from the events it examined (`seq`, `occurred_at`, oldest first) and how many it deleted.
 * An event of a job goes only once the job is gone, so a kept job (finished recently, or not finished) keeps its events.
 */
export function eventPruneBatch(examined: Row[], limit: number, deleted: number): EventPruneBatch {
  const last = examined.at(-1);
  // A short batch reached the cutoff: the pass is over.
  const next = last && examined.length >= limit ? { occurredAt: date(last.occurred_at), seq: Number(last.seq) } : null;
  return { deleted, next };
}

/**
 * How far, at most, the time stamped on an event (occurred_at) can be out of the order in which the events of
 * its workspace commit (seq): the time from stamping an event to committing it, plus the difference between the
 * clocks of the instances that write. An event is stamped just before its transaction, which commits within
 * seconds or fails (PostgreSQL cuts a statement, or a wait for a connection, at 10 s; SQLite waits 5 s at most for
 * a lock), and instances kept by NTP are within a second of each other: ten minutes leaves room for a clock a few
 * minutes off. docs/DESIGN.md §4 states it.
 */
export const EVENT_TIME_SKEW_MS = 10 * 60_000;

/**
 * The bounds on `seq` that make a time window of events a range of the seq index, each found with one seek on the
 * time index (workspace_id, occurred_at). Within a workspace seq is commit order, so if an event stamped before
 * `since - SKEW` committed as number n, every event numbered up to n committed before it, and so was stamped
 * before `since`; likewise every event numbered from that of one stamped at or after `until + SKEW` on was stamped
 * at or after `until`. The time filters themselves stay in the query: the bounds only spare it the rows that
 * cannot match, which without them are read down to the workspace's oldest event whenever the window holds fewer
 * rows than asked for. `inWorkspace` is the store's condition on the workspace, `at` its placeholder for the seek's
 * time (`since - SKEW`, `until + SKEW`: see eventWindowSeeks). Each seek is ordered by the workspace, then the time,
 * which only the time index gives: ordered by the time alone, PostgreSQL may walk security_events_age (occurred_at)
 * instead, through every other workspace's events of the time, when it expects the workspace to have many of them.
 */
export const EVENT_WINDOW_SQL = {
  /** Every event of the workspace numbered up to this was stamped before `since` (0 when none is known to be). */
  lastBeforeSince: (inWorkspace: string, at: string): string =>
    `COALESCE((SELECT seq FROM security_events WHERE ${inWorkspace} AND occurred_at < ${at} ORDER BY workspace_id DESC, occurred_at DESC LIMIT 1), 0)`,
  /** Every event of the workspace numbered from this on was stamped at or after `until` (past every number when none is). */
  firstFromUntil: (inWorkspace: string, at: string): string =>
    `COALESCE((SELECT seq FROM security_events WHERE ${inWorkspace} AND occurred_at >= ${at} ORDER BY workspace_id, occurred_at LIMIT 1), ${Number.MAX_SAFE_INTEGER})`,
};

/** The times EVENT_WINDOW_SQL seeks for a filter's `since` and `until`, each pushed out by EVENT_TIME_SKEW_MS. */
export function eventWindowSeeks(filter: { since?: Date; until?: Date }): { since?: Date; until?: Date } {
  return {
    since: filter.since && new Date(filter.since.getTime() - EVENT_TIME_SKEW_MS),
    until: filter.until && new Date(filter.until.getTime() + EVENT_TIME_SKEW_MS),
  };
}

/**
 * The condition that leaves out events of a type this version does not know (SecurityEventFilter.unknownTypes):
 * a filter on the rows a listing reads in order, so that a page is filled from the known events behind them.
 */
export const KNOWN_EVENT_TYPES_SQL = `type IN (${SECURITY_EVENT_TYPES.map((type) => `'${type}'`).join(', ')})`;

/**
 * The types an event filter reads, each once (undefined: every type). A caller repeating a type must not make a
 * statement of another shape: there is one per number of distinct types, at most as many as there are types.
 */
export const distinctTypes = (filter: SecurityEventFilter): SecurityEventType[] | undefined => filter.types && [...new Set(filter.types)];

/** How an export pages through each table: the column that names the workspace, the key it pages by, and the row as the domain holds it. */
const EXPORT_READS: { [T in ExportTable]: { workspace: string; key: string; toRecord: (row: Row) => ExportRows[T] } } = {
  workspaces: { workspace: 'id', key: 'id', toRecord: rowToWorkspace },
  api_keys: { workspace: 'workspace_id', key: 'id', toRecord: rowToApiKey },
  tags: { workspace: 'workspace_id', key: 'name', toRecord: (row) => ({ workspaceId: String(row.workspace_id), name: String(row.name) }) },
  campaigns: { workspace: 'workspace_id', key: 'seq', toRecord: rowToCampaign },
  jobs: { workspace: 'workspace_id', key: 'id', toRecord: rowToJob },
  security_events: { workspace: 'workspace_id', key: 'seq', toRecord: rowToEvent },
  idempotency_keys: { workspace: 'workspace_id', key: 'key', toRecord: rowToIdempotency },
};

/**
 * A page of an export (exportRows): `inWorkspace` makes the condition on the workspace's column, `after` and `limit`
 * are placeholders (`after` null on the first page). Ordered by the workspace first, so that only an index that starts
 * with it gives the order, and each page is one seek (PostgreSQL's planner needs this; see IN_WORKSPACE in its store).
 */
export function exportPageSql(table: ExportTable, inWorkspace: (column: string) => string, after: string | null, limit: string): string {
  const { workspace, key } = EXPORT_READS[table];
  return `SELECT * FROM ${table} WHERE ${inWorkspace(workspace)}${after === null ? '' : ` AND ${key} > ${after}`} ORDER BY ${[...new Set([workspace, key])].join(', ')} LIMIT ${limit}`;
}

/**
 * countRows: a table's rows of a workspace there is, and those of none (events and idempotency keys have no foreign
 * key, so those a request wrote while its workspace was being erased outlive it). Every workspace is of itself.
 */
export function countRowsSql(table: ExportTable): string {
  return `SELECT COUNT(w.id) AS of_workspaces, COUNT(*) - COUNT(w.id) AS orphaned FROM ${table} t LEFT JOIN workspaces w ON w.id = t.${EXPORT_READS[table].workspace}`;
}

/**
 * One batch of an erasure (eraseWorkspaceRows): up to `limit` rows of the workspace, found on an index that starts
 * with it. Of jobs only finished ones: one still queued or running was enqueued since the erasure's first step.
 */
export function eraseWorkspaceRowsSql(table: BatchErasedTable, workspace: string, limit: string): string {
  const { key } = EXPORT_READS[table];
  const finished = table === 'jobs' ? " AND status NOT IN ('PENDING', 'RUNNING')" : '';
  return `DELETE FROM ${table} WHERE workspace_id = ${workspace} AND ${key} IN (
    SELECT ${key} FROM ${table} WHERE workspace_id = ${workspace}${finished} LIMIT ${limit})`;
}

/** The cursor of an export page as its statement takes it: a number for a table paged by seq. */
export const exportCursor = (table: ExportTable, after: string): string | number => (EXPORT_READS[table].key === 'seq' ? Number(after) : after);

/** A page of an export from the rows its statement read: the next one starts after the last row, unless this one was not full. */
export function exportPage<T extends ExportTable>(table: T, rows: Row[], limit: number): ExportPage<T> {
  const { key, toRecord } = EXPORT_READS[table];
  return { rows: rows.map(toRecord) as ExportRows[T][], next: rows.length < limit ? null : String(rows[rows.length - 1][key]) };
}

/**
 * Each table's row as importRows writes it, every column the domain object holds: unlike newJobToRow, a job keeps its
 * lease and outcome, and an event its seq (a campaign's seq, which the domain does not hold, is the target's own, in
 * the order the rows come in; a job's upstream_unacted_attempts, which it does not hold either, starts at 0, so that
 * each attempt it made counts as one that may have reached the upstream). A pending job is `waiting` whatever its due time: the next claim's promoteDueJobsSql
 * puts those due in the queue's index.
 */
export const IMPORT_ROWS: { [T in ExportTable]: (record: ExportRows[T], sql: SqlValues) => Row } = {
  workspaces: (workspace, sql) => ({ id: workspace.id, name: workspace.name, created_at: sql.date(workspace.createdAt) }),
  api_keys: apiKeyToRow,
  tags: (tag) => ({ workspace_id: tag.workspaceId, name: tag.name }),
  campaigns: campaignToRow,
  jobs: (job, sql) => ({
    ...newJobToRow(job, sql),
    waiting: sql.bool(job.status === 'PENDING'),
    lease_owner: job.leaseOwner,
    lease_expires_at: maybe(job.leaseExpiresAt, sql),
    finished_at: maybe(job.finishedAt, sql),
    result_campaign_id: job.resultCampaignId,
    error_code: job.error?.code ?? null,
    error_message: job.error?.message ?? null,
  }),
  security_events: (event, sql) => ({ seq: event.seq, ...eventToRow(event, sql) }),
  idempotency_keys: (record, sql) => ({
    workspace_id: record.workspaceId,
    key: record.key,
    request_hash: record.requestHash,
    job_id: record.jobId,
    created_at: sql.date(record.createdAt),
    expires_at: sql.date(record.expiresAt),
  }),
};

/** The rows importRows writes for `records`, mapped by IMPORT_ROWS. */
export const importRows = <T extends ExportTable>(table: T, records: ExportRows[T][], sql: SqlValues): Row[] =>
  records.map((record) => IMPORT_ROWS[table](record, sql));
