import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LockWaitCancelled } from '../../src/adapters/postgres/outage.js';
import type { Queryable } from '../../src/adapters/postgres/pool.js';
import { EVENT_ORDER_LOCK, type PostgresStore } from '../../src/adapters/postgres/store.js';
import { EVENT_TIME_SKEW_MS } from '../../src/adapters/rows.js';
import { isUnavailable } from '../../src/domain/errors.js';
import type { ListOptions } from '../../src/domain/ports.js';
import type { JobFilter, SecurityEventFilter, SecurityEventType } from '../../src/domain/types.js';
import { at, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { createTestDatabase, createTestSchema, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { waitFor } from '../support/wait.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Actual Rows': number;
  'Actual Loops': number;
  'Rows Removed by Filter'?: number;
  'Index Name'?: string;
  'Shared Hit Blocks': number;
  'Shared Read Blocks': number;
  Plans?: PlanNode[];
}

/** Rows a plan took from the table or its indexes: those each scan returned and those its filter dropped. */
function rowsRead(node: PlanNode): number {
  const own = node['Node Type'].includes('Scan') ? (node['Actual Rows'] + (node['Rows Removed by Filter'] ?? 0)) * node['Actual Loops'] : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + rowsRead(child), 0);
}

/**
 * Pages the scans of the named indexes read, with the rows they fetched. An index entry a scan's condition on a
 * later column of the index steps over (`Index Cond`) is counted nowhere else: neither returned nor removed by a filter.
 */
function indexPagesRead(node: PlanNode, indexes: string[]): number {
  const own = node['Index Name'] !== undefined && indexes.includes(node['Index Name']) ? node['Shared Hit Blocks'] + node['Shared Read Blocks'] : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + indexPagesRead(child, indexes), 0);
}

/** The statements a listing sends, run again under EXPLAIN ANALYZE: the rows it lists and those they read together. */
async function explainedOn(store: PostgresStore, schema: { url: string; schema: string }, list: () => Promise<unknown[]>): Promise<{ listed: number; read: number; plans: PlanNode[] }> {
  // The store's statements outside a transaction, as it sends them (its private `db`, on the pool's connections).
  const sent = vi.spyOn((store as unknown as { db: Queryable }).db, 'query');
  let listed: number;
  let statements: [string, unknown[]][];
  try {
    listed = (await list()).length;
    statements = sent.mock.calls.map((call) => call as unknown as [string, unknown[]]);
  } finally {
    sent.mockRestore();
  }
  const plans = await withAdmin(async (client) => {
    await client.query(`SET search_path = ${schema.schema}`);
    const explain = async ([text, values]: [string, unknown[]]) => (await client.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values)).rows[0]['QUERY PLAN'][0].Plan;
    return Promise.all(statements.map(explain));
  }, schema.url);
  return { listed, read: plans.reduce((sum: number, plan: PlanNode) => sum + rowsRead(plan), 0), plans };
}

/** What the PostgreSQL adapter adds beyond the store contract: how much of the table its reads touch. */
describe.skipIf(skipWithoutPostgres)('PostgreSQL store specifics', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  let store: PostgresStore;
  const quiet = workspaceFixture();
  const busy = workspaceFixture();
  const rare: SecurityEventType[] = ['CAMPAIGN_DUPLICATION_FAILED', 'PERMISSION_DENIED'];
  const key = 'key-quiet';
  /** The key of ten of the quiet workspace's events, one every 2,000. */
  const occasional = 'key-occasional';

  const explained = (list: () => Promise<unknown[]>) => explainedOn(store, schema, list);
  const explainedEvents = (filter: SecurityEventFilter, options: ListOptions) => explained(() => store.listEvents(quiet.id, filter, options));

  beforeAll(async () => {
    schema = await createTestSchema();
    store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    await store.createWorkspace(quiet);
    await store.createWorkspace(busy);
    // The quiet workspace: 20,000 events, mostly of two common types, one in twenty of a third, and 10 of each rare one;
    // all but ten of them caused by one key.
    // Then the busy one: 20,000 newer events, all of the types rare in the quiet one, so that the table has plenty of them.
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      const insert = `INSERT INTO security_events (id, workspace_id, type, occurred_at, api_key_id, job_id, details)`;
      await client.query(
        `${insert} SELECT 'quiet-' || i, $1,
           CASE WHEN i % 2000 = 7 THEN $3 WHEN i % 2000 = 1007 THEN $4 WHEN i % 20 = 11 THEN 'API_KEY_ROTATED' WHEN i % 2 = 0 THEN 'CAMPAIGN_DUPLICATION_REQUESTED' ELSE 'CAMPAIGN_DUPLICATED' END,
           $2::timestamptz + i * interval '1 s', CASE WHEN i % 2000 = 1500 THEN $6 ELSE $5 END, CASE WHEN i = 2007 THEN 'job-quiet' END, '{}'
         FROM generate_series(1, 20000) AS i ORDER BY i`,
        [quiet.id, at(0), ...rare, key, occasional],
      );
      await client.query(
        `${insert} SELECT 'busy-' || i, $1, CASE WHEN i % 2 = 0 THEN $3 ELSE $4 END, $2::timestamptz + interval '1 day' + i * interval '1 s', 'key-busy', NULL, '{}'
         FROM generate_series(1, 20000) AS i ORDER BY i`,
        [busy.id, at(0), ...rare],
      );
      // Campaigns alike: 20,000 of the quiet workspace, the busy one's 20,000 newer, then the quiet one's 20 newest.
      const campaigns = (workspaceId: string, prefix: string, count: number) =>
        client.query(
          `INSERT INTO campaigns (id, workspace_id, name, tag_names, draft, body, created_at, updated_at)
           SELECT $2 || i, $1, 'Copy ' || i, '[]', true, '{}', $3, $3 FROM generate_series(1, $4::int) AS i ORDER BY i`,
          [workspaceId, prefix, at(0), count],
        );
      await campaigns(quiet.id, 'quiet-campaign-', 20_000);
      await campaigns(busy.id, 'busy-campaign-', 20_000);
      await campaigns(quiet.id, 'quiet-recent-', 20);
      // As autovacuum would have by the time the tables hold this many rows.
      await client.query('ANALYZE security_events');
      await client.query('ANALYZE campaigns');
    }, schema.url);
  }, 60_000);

  afterAll(async () => {
    await store?.close();
    await schema?.drop();
  });

  it('reads a page of types rare in the workspace without walking its other events or another workspace’s', async () => {
    const cursor = (await store.listEvents(quiet.id, { types: rare }, { first: 5 })).at(-1)!;
    const cases: [SecurityEventFilter, ListOptions, number][] = [
      [{ types: rare }, { first: 51 }, 20],
      [{ types: [rare[0], 'API_KEY_ROTATED'] }, { first: 51 }, 51],
      [{ types: rare, apiKeyId: key }, { first: 51 }, 20],
      [{ types: rare }, { first: 51, beforeId: cursor.id }, 15],
      [{ types: rare }, { first: 51, beforeSeq: cursor.seq }, 15],
      [{ types: rare, since: at(4000_000), until: at(16000_000) }, { first: 51 }, 12],
      [{ types: [...rare, 'API_KEY_CREATED'], apiKeyId: key, since: at(4000_000) }, { first: 51, beforeId: cursor.id }, 11],
    ];
    for (const [filter, options, count] of cases) {
      const { listed, read } = await explainedEvents(filter, options);
      expect(listed, JSON.stringify(filter)).toBe(count);
      // A page of each type at most, and a few rows per time bound and cursor: nothing like the other events of the workspace.
      expect(read, `${JSON.stringify(filter)} ${JSON.stringify(options)}`).toBeLessThan(100);
    }
  });

  it('bounds a time window with seeks on the workspace’s own times, not on every workspace’s events of the time', async () => {
    // The quiet workspace's events span 20,000 s from at(0), one a second; the busy one's were stamped a day later.
    const HOUR = 3600_000;
    // A window's seq range reaches EVENT_TIME_SKEW_MS past its end: a page ending there steps over those events.
    const skew = EVENT_TIME_SKEW_MS / 1000;
    const cases: [SecurityEventFilter, number, number][] = [
      [{ since: at(30 * HOUR) }, 0, 100],
      [{ until: at(6 * HOUR) }, 51, 100],
      [{ since: at(4000_000), until: at(16000_000) }, 51, skew + 100],
      [{ types: rare, since: at(30 * HOUR) }, 0, 100],
      [{ apiKeyId: key, since: at(30 * HOUR), until: at(48 * HOUR) }, 0, 100],
      // A key with few events in a long window: its own, not the window's every event.
      [{ apiKeyId: occasional, since: at(2000_000) }, 9, 100],
      [{ apiKeyId: occasional, since: at(2000_000), until: at(18000_000) }, 8, 100],
    ];
    for (const [filter, count, most] of cases) {
      const { listed, read } = await explainedEvents(filter, { first: 51 });
      expect(listed, JSON.stringify(filter)).toBe(count);
      expect(read, JSON.stringify(filter)).toBeLessThan(most);
    }
  });

  it('reads a later page of a time window from its cursor, not the whole window below the cursor', async () => {
    // The 1,000th newest of the quiet workspace's events, inside every window below.
    const cursor = (await store.listEvents(quiet.id, {}, { first: 1000 })).at(-1)!;
    const skew = EVENT_TIME_SKEW_MS / 1000;
    const cases: [SecurityEventFilter, ListOptions, number][] = [
      [{ since: at(4000_000) }, { first: 51, beforeId: cursor.id }, 100],
      [{ since: at(4000_000) }, { first: 51, beforeSeq: cursor.seq }, 100],
      [{ until: at(16000_000) }, { first: 51, beforeId: cursor.id }, skew + 100],
      [{ since: at(4000_000), until: at(19990_000) }, { first: 51, beforeId: cursor.id }, 100],
      [{ apiKeyId: key, since: at(4000_000) }, { first: 51, beforeId: cursor.id }, 100],
      [{ types: ['CAMPAIGN_DUPLICATED'], since: at(4000_000) }, { first: 51, beforeId: cursor.id }, 100],
    ];
    for (const [filter, options, most] of cases) {
      const { listed, read } = await explainedEvents(filter, options);
      expect(listed, JSON.stringify(filter)).toBe(51);
      expect(read, `${JSON.stringify(filter)} ${JSON.stringify(options)}`).toBeLessThan(most);
    }
    // A cursor naming no event of the workspace is refused, as without a window.
    await expect(explainedEvents({ since: at(4000_000) }, { first: 51, beforeId: 'busy-5' })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
  });

  it('reads the newest events of a workspace, of a key or of a job without walking another workspace’s newer ones', async () => {
    const cases: [SecurityEventFilter, number][] = [
      [{}, 51],
      [{ apiKeyId: key }, 51],
      [{ jobId: 'job-quiet' }, 1],
      [{ jobId: 'job-quiet', types: rare }, 1],
      // A key polling its job, as one without security_events.read does: the job's events, not the key's.
      [{ jobId: 'job-quiet', apiKeyId: key }, 1],
      [{ jobId: 'job-quiet', apiKeyId: key, types: [rare[0]] }, 1],
    ];
    for (const [filter, count] of cases) {
      const { listed, read } = await explainedEvents(filter, { first: 51 });
      expect(listed, JSON.stringify(filter)).toBe(count);
      expect(read, JSON.stringify(filter)).toBeLessThan(100);
    }
  });

  it('reads a page of campaigns without walking another workspace’s newer ones', async () => {
    const cases: [ListOptions, string][] = [
      [{ first: 51 }, 'quiet-recent-20'],
      [{ first: 51, beforeId: 'quiet-recent-11' }, 'quiet-recent-10'],
      [{ first: 51, beforeId: 'quiet-campaign-10000' }, 'quiet-campaign-9999'],
    ];
    for (const [options, newest] of cases) {
      const { listed, read } = await explained(async () => {
        const campaigns = await store.listCampaigns(quiet.id, options);
        expect(campaigns[0].id, JSON.stringify(options)).toBe(newest);
        return campaigns;
      });
      expect(listed, JSON.stringify(options)).toBe(51);
      expect(read, JSON.stringify(options)).toBeLessThan(100);
    }
  });

  it('claims the job of a workspace sent after another’s backlog of 10,000 in a claim of 10, reading fewer than 100 rows', async () => {
    // The busy workspace's backlog, turn by turn as enqueueJob gives them: 0, 1, 2…
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      await client.query(
        `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, channel, api_key_id, api_key_name, ip, run_at, created_at, updated_at, queue_turn)
         SELECT 'busy-job-' || i, $1, 'PENDING', 'cmp', 'Copy', 'REST', 'key-busy', 'key', '127.0.0.1', $2::timestamptz + i * interval '1 ms', $2, $2, i
         FROM generate_series(0, 9999) AS i`,
        [busy.id, at(0)],
      );
      await client.query('ANALYZE jobs');
    }, schema.url);
    const lone = workspaceFixture();
    await store.createWorkspace(lone);
    const job = jobFixture(lone.id, { runAt: at(60_000) });
    await store.enqueueJob(job, eventFixture(lone.id, { jobId: job.id }));

    const { listed, read } = await explained(async () => {
      const claimed = await store.claimJobs('w', 10, at(120_000), at(180_000));
      expect(claimed.map((claimedJob) => claimedJob.id)).toContain(job.id);
      return claimed;
    });
    expect(listed).toBe(10);
    expect(read).toBeLessThan(100);
  });

  it('claims 10 due jobs behind 10,000 waiting for a retry with turns ahead of theirs, reading fewer than 20 pages of the queue’s indexes', async () => {
    // A database of its own: a transaction open in the shared one (another suite's snapshot, a long export) would keep
    // the vacuum below from clearing dead entries, which the claim would step over; its horizon is its database's.
    const database = await createTestDatabase();
    const queue = openPostgresStore(database.url, 'public');
    onTestFinished(async () => {
      await queue.close();
      await database.drop();
    });
    await queue.migrate();
    const [waiting, due] = [workspaceFixture(), workspaceFixture()];
    for (const workspace of [waiting, due]) await queue.createWorkspace(workspace);
    // Claimed, then retried an hour on by the store itself, each keeping its turn: 0, 1, 2… The queue holds nothing else.
    const retried = await withAdmin(async (client) => {
      const { rows } = await client.query(
        `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, channel, api_key_id, api_key_name, ip, run_at, created_at, updated_at, queue_turn, lease_owner, lease_expires_at)
         SELECT 'waiting-job-' || i, $1, 'RUNNING', 'cmp', 'Copy', 'REST', 'key-waiting', 'key', '127.0.0.1', $2, $2, $2, i, 'w', $3
         FROM generate_series(0, 9999) AS i RETURNING id`,
        [waiting.id, at(0), at(60_000)],
      );
      // Another workspace's backlog of 10,000, due, turn by turn after them: too many to sort on each claim. Made before
      // the retries, on the same connection, so that it fills pages of its own in turn order, not the gaps the retries'
      // updates leave across the table: the pages counted below include those of the rows the claim fetches.
      await client.query(
        `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, channel, api_key_id, api_key_name, ip, run_at, created_at, updated_at, queue_turn)
         SELECT 'due-job-' || lpad(i::text, 5, '0'), $1, 'PENDING', 'cmp', 'Copy', 'REST', 'key-due', 'key', '127.0.0.1', $2::timestamptz + i * interval '1 ms', $2, $2, 10000 + i
         FROM generate_series(0, 9999) AS i`,
        [due.id, at(2000)],
      );
      return rows.map((row) => String(row.id));
    }, database.url);
    const error = { code: 'UPSTREAM_UNAVAILABLE' as const, message: 'busy' };
    // Four at a time: the pool's connections, not its queue's timeout, bound how many run at once.
    const lanes = [0, 1, 2, 3].map(async (lane) => {
      for (let i = lane; i < retried.length; i += 4) expect(await queue.retryJob(retried[i], 'w', at(3_600_000), error, at(1000))).toBe(true);
    });
    await Promise.all(lanes);
    await withAdmin(async (client) => {
      // Without the entries of the rows updated above, which a claim would step over until a vacuum.
      await client.query('VACUUM ANALYZE jobs');
    }, database.url);

    const { listed, read, plans } = await explainedOn(queue, { url: database.url, schema: 'public' }, async () => {
      const claimed = await queue.claimJobs('w', 10, at(120_000), at(180_000));
      expect(claimed.map((job) => job.id)).toEqual(Array.from({ length: 10 }, (_, i) => `due-job-0000${i}`));
      return claimed;
    });
    expect(listed).toBe(10);
    expect(read).toBeLessThan(100);
    // Stepping over the 10,000 entries of the waiting jobs in jobs_turn read about 90 of its pages.
    expect(plans.reduce((sum, plan) => sum + indexPagesRead(plan, ['jobs_turn', 'jobs_waiting']), 0)).toBeLessThan(20);
  });

  /** A new workspace with `count` finished jobs, ids `<prefix><i>`, the ith finished i seconds after at(0); the table analysed as autovacuum would. */
  async function finishedJobs(prefix: string, count: number) {
    const workspace = workspaceFixture();
    await store.createWorkspace(workspace);
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      await client.query(
        `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, channel, api_key_id, api_key_name, ip, run_at, created_at, updated_at, finished_at)
         SELECT $3 || i, $1, 'SUCCEEDED', 'cmp', 'Copy', 'REST', 'key-old', 'key', '127.0.0.1', $2, $2, $2, $2::timestamptz + i * interval '1 s'
         FROM generate_series(1, $4::int) AS i`,
        [workspace.id, at(0), prefix, count],
      );
      await client.query('ANALYZE jobs');
    }, schema.url);
    return workspace;
  }

  it('prunes a batch of finished jobs by their ids in the primary key, not by a scan of every job', async () => {
    await finishedJobs('finished-job-', 50_000);
    const { listed, plans } = await explained(async () => Array.from({ length: await store.pruneFinishedJobs(at(40_000_000), 1000) }));
    expect(listed).toBe(1000);
    const scans = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(scans)];
    const jobScans = plans.flatMap(scans).filter((node) => node['Relation Name'] === 'jobs');
    expect(jobScans.length).toBeGreaterThan(0);
    expect(jobScans.map((node) => node['Node Type'])).not.toContain('Seq Scan');
  });

  it('exports a workspace’s jobs a page at a time, and erases them, through the workspace’s index, not a scan of every job', async () => {
    const small = await finishedJobs('small-job-', 30);
    const jobScans = (plans: PlanNode[]) => {
      const scans = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(scans)];
      return plans.flatMap(scans).filter((node) => node['Relation Name'] === 'jobs').map((node) => node['Node Type']);
    };
    for (const after of [null, 'small-job-2']) {
      const { listed, read, plans } = await explained(async () => (await store.exportRows(small.id, 'jobs', after, 10)).rows);
      expect(listed).toBe(10);
      // The workspace's 30 jobs at most (a bitmap scan reads each twice), of the table's 60,000.
      expect(read).toBeLessThan(100);
      expect(jobScans(plans)).not.toContain('Seq Scan');
    }

    // The erasure's statements run in a transaction, on a client of the pool's own; planned again, not run again.
    const sent = vi.spyOn(pg.Client.prototype, 'query');
    let statements: [string, unknown[]][];
    try {
      expect(await store.deleteWorkspace(small.id, at(0))).toMatchObject({ deleted: true, rows: { jobs: 30 } });
      statements = sent.mock.calls.map((call) => call as unknown as [string, unknown[]]).filter(([text]) => typeof text === 'string' && /\bFROM jobs\b/.test(text));
    } finally {
      sent.mockRestore();
    }
    expect(statements).toHaveLength(2);
    const plans = await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      return Promise.all(statements.map(async ([text, values]) => (await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values)).rows[0]['QUERY PLAN'][0].Plan as PlanNode));
    }, schema.url);
    expect(jobScans(plans)).not.toContain('Seq Scan');
  });
});

describe.skipIf(skipWithoutPostgres)('PostgreSQL: the jobs an operator lists', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  let store: PostgresStore;
  const quiet = workspaceFixture();
  const busy = workspaceFixture();
  const empty = workspaceFixture();
  const MINUTE = 60_000;
  const DAY = 24 * 60 * MINUTE;

  beforeAll(async () => {
    schema = await createTestSchema();
    store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    for (const workspace of [quiet, busy, empty]) await store.createWorkspace(workspace);
    // The quiet workspace's 20,000 jobs, one every 10 minutes from at(0), then the busy one's 20,000 newer, alike
    // from 150 days later; each id made at its job's time, as newId makes them.
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      const jobs = (workspaceId: string, count: number, from: Date, every: number) =>
        client.query(
          `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, channel, api_key_id, api_key_name, ip, run_at, created_at, updated_at, finished_at)
           SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-' || lpad(to_hex(i), 12, '0'), $1, 'SUCCEEDED', 'cmp', 'Copy', 'REST', 'key', 'key', '127.0.0.1', t, t, t, t
           FROM (SELECT i, t, lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') AS h
                 FROM (SELECT i, $2::timestamptz + i * $4::bigint * interval '1 millisecond' AS t FROM generate_series(1, $3::int) AS i) AS times) AS made
           ORDER BY i`,
          [workspaceId, from, count, every],
        );
      await jobs(quiet.id, 20_000, at(0), 10 * MINUTE);
      await jobs(busy.id, 20_000, at(150 * DAY), 10 * MINUTE);
      await client.query('ANALYZE jobs');
    }, schema.url);
  }, 60_000);

  afterAll(async () => {
    await store?.close();
    await schema?.drop();
  });

  it('reads a workspace’s jobs through its own index and stops a time-bounded listing at the ids of its time', async () => {
    const newest = at(150 * DAY + 20_000 * 10 * MINUTE);
    const cases: [JobFilter, number][] = [
      [{ workspaceId: quiet.id }, 100],
      [{ workspaceId: empty.id }, 0],
      // A key's, as the CLI reads them: among its workspace's jobs.
      [{ workspaceId: quiet.id, apiKeyId: 'key' }, 100],
      [{ workspaceId: empty.id, apiKeyId: 'key', status: 'PENDING' }, 0],
      [{ workspaceId: quiet.id, createdSince: at(19_995 * 10 * MINUTE) }, 6],
      [{ createdSince: new Date(newest.getTime() - 25 * MINUTE) }, 3],
      [{ status: 'SUCCEEDED', createdSince: new Date(newest.getTime() - 25 * MINUTE) }, 3],
    ];
    for (const [filter, count] of cases) {
      const { listed, read } = await explainedOn(store, schema, () => store.listJobs(filter, 100, null));
      expect(listed, JSON.stringify(filter)).toBe(count);
      // The jobs listed, and for a time bound those of the day before it (144, one every 10 minutes): not the busy
      // workspace's 20,000 newer jobs, nor every job older than the bound.
      expect(read, JSON.stringify(filter)).toBeLessThan(200);
    }
  });
});

describe.skipIf(skipWithoutPostgres)('PostgreSQL: workspaces whose event lock another transaction keeps', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  // Four connections: one of them may wait for a workspace's event lock at a time, two for all of them.
  let store: PostgresStore;
  const held = [workspaceFixture(), workspaceFixture(), workspaceFixture()];
  const other = workspaceFixture();
  const enqueue = (workspaceId: string) => {
    const job = jobFixture(workspaceId);
    return store.enqueueJob(job, eventFixture(workspaceId, { jobId: job.id }));
  };
  /** The sessions waiting on the server for the held workspaces' event locks, and the store's connections in use. */
  const waits = async () => {
    const [{ waiting }] = await withAdmin(
      async (client) =>
        (
          await client.query(
            `SELECT count(*)::int AS waiting FROM pg_locks
             WHERE locktype = 'advisory' AND NOT granted AND classid = $1 AND objid IN (SELECT hashtext(id)::oid FROM unnest($2::text[]) AS held (id))`,
            [EVENT_ORDER_LOCK, held.map((workspace) => workspace.id)],
          )
        ).rows,
      schema.url,
    );
    return { waiting, inUse: store.pool.totalCount - store.pool.idleCount };
  };
  /** Runs `work` while another session's transaction keeps the event locks of `workspaces`. */
  const whileHeld = <T>(workspaces: { id: string }[], work: () => Promise<T>): Promise<T> =>
    withAdmin(async (client) => {
      await client.query('BEGIN');
      for (const workspace of workspaces) await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [EVENT_ORDER_LOCK, workspace.id]);
      try {
        return await work();
      } finally {
        await client.query('COMMIT');
      }
    }, schema.url);

  beforeAll(async () => {
    schema = await createTestSchema();
    store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    for (const workspace of [...held, other]) await store.createWorkspace(workspace);
  });

  afterAll(async () => {
    await store?.close();
    await schema?.drop();
  });

  it("lets one connection wait for a workspace's lock, parks its other writes without one, and runs them again once it is free", async () => {
    const [workspace] = held;
    let writes: Promise<boolean[]> | undefined;
    await whileHeld([workspace], async () => {
      writes = Promise.all(Array.from({ length: 6 }, () => enqueue(workspace.id)));
      await waitFor(async () => {
        const now = await waits();
        return now.waiting === 1 && now.inUse === 1;
      });
      // Three connections stay for the other workspaces.
      expect(await enqueue(other.id)).toBe(true);
      expect((await waits()).waiting).toBe(1);
    });
    expect(await writes).toEqual(Array.from({ length: 6 }, () => true));
    const events = await store.listEvents(workspace.id, {}, { first: 10 });
    expect(new Set(events.map((event) => event.jobId)).size).toBe(6);
  });

  it('lets two connections wait for the locks of three workspaces, and refuses all their writes after 8 s, waiting or parked, each naming its lock', async () => {
    const eventsBefore = await Promise.all(held.map(async (workspace) => (await store.listEvents(workspace.id, {}, { first: 100 })).length));
    const refusals = await whileHeld(held, async () => {
      const writes = held.flatMap((workspace) => [0, 1].map(() => enqueue(workspace.id).catch((error: unknown) => error)));
      await waitFor(async () => (await waits()).waiting === 2);
      // Two connections stay for the other workspaces.
      expect(await enqueue(other.id)).toBe(true);
      expect(await waits()).toEqual({ waiting: 2, inUse: 2 });
      return Promise.all(writes);
    });
    const waited = [
      'until the statement was cancelled \\(canceling statement due to lock timeout\\)',
      "for 8 s, without a connection while as many of this instance's connections as may waited for event locks \\(1 for one workspace's, 2 in all\\)",
    ];
    for (const [index, refused] of refusals.entries()) {
      const workspace = held[Math.floor(index / 2)];
      const lock = `the lock that orders the security events of workspace ${workspace.id} \\(PostgreSQL advisory lock ${EVENT_ORDER_LOCK}, hashtext\\('${workspace.id}'\\)\\)`;
      expect(isUnavailable(refused)).toBe(true);
      expect((refused as Error).cause).toBeInstanceOf(LockWaitCancelled);
      expect(((refused as Error).cause as Error).message).toMatch(new RegExp(`^waited for ${lock} (${waited.join('|')}): another transaction held it all that time$`));
    }
    // The first two to wait did so on the server, until the lock timeout their statements set.
    expect(refusals.filter((refused) => ((refused as Error).cause as LockWaitCancelled).code === '55P03').length).toBeGreaterThanOrEqual(2);
    const eventsAfter = await Promise.all(held.map(async (workspace) => (await store.listEvents(workspace.id, {}, { first: 100 })).length));
    expect(eventsAfter).toEqual(eventsBefore);
  }, 30_000);
});
