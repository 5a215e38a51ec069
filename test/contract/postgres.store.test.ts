import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { postgresLimiters } from '../../src/adapters/limiter-backends.js';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { isUnavailable, unavailableCause } from '../../src/domain/errors.js';
import { apiKeyFixture, at, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { waitFor } from '../support/wait.js';
import { storeContract } from './store.contract.js';

const schemas = new Map<PostgresStore, Awaited<ReturnType<typeof createTestSchema>>>();

describe.skipIf(skipWithoutPostgres)('postgres', () => {
  storeContract('postgres', {
    async create() {
      const schema = await createTestSchema();
      const store = openPostgresStore(schema.url, schema.schema);
      schemas.set(store, schema);
      return store;
    },
    async open(store) {
      const { url, schema } = schemas.get(store as PostgresStore)!;
      return openPostgresStore(url, schema);
    },
    async setSchemaVersion(store, version) {
      const { url, schema } = schemas.get(store as PostgresStore)!;
      await withAdmin((client) => client.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES ($1)`, [version]), url);
    },
    async rowsNaming(store, ids) {
      const { url, schema } = schemas.get(store as PostgresStore)!;
      return withAdmin(async (client) => {
        const { rows } = await client.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [schema]);
        const counts: Record<string, number> = {};
        for (const { table_name: table } of rows) {
          const found = await client.query(`SELECT count(*) FROM ${schema}."${table}" AS r WHERE EXISTS (SELECT FROM unnest($1::text[]) AS i (id) WHERE strpos(r::text, i.id) > 0)`, [ids]);
          counts[table] = Number(found.rows[0].count);
        }
        return counts;
      }, url);
    },
    async destroy(store) {
      await store.close();
      await schemas.get(store as PostgresStore)!.drop();
      schemas.delete(store as PostgresStore);
    },
  });

  it("erases the limiter counters kept in PostgreSQL that are named after the workspace or one of its keys, and no other workspace's", async () => {
    const schema = await createTestSchema();
    const store = openPostgresStore(schema.url, schema.schema);
    try {
      await store.migrate();
      const limiters = postgresLimiters(store.pool);
      const [quota, reads, refusals, downloads] = ['duplicate', 'upstream-reads', 'denied-permission-events', 'security-event-downloads'].map((keyPrefix) =>
        limiters.limiter({ keyPrefix, points: 100, durationSeconds: 60 }),
      );
      const keys = new Map<string, string>();
      for (const workspace of [workspaceFixture(), workspaceFixture()]) {
        await store.createWorkspace(workspace);
        const key = apiKeyFixture(workspace.id);
        await store.insertApiKey(key, eventFixture(workspace.id, { type: 'API_KEY_CREATED', apiKeyId: key.id }));
        await Promise.all([quota.consume(workspace.id), reads.consume(workspace.id), refusals.consume(key.id), refusals.consume(`${key.id}:previous`), downloads.consume(key.id)]);
        keys.set(workspace.id, key.id);
      }
      const [erased, kept] = [...keys.keys()];
      const counted = async () => (await withAdmin((client) => client.query(`SELECT key FROM ${schema.schema}.rate_limits ORDER BY key`), schema.url)).rows.map((row) => row.key);
      expect(await counted()).toHaveLength(10);

      expect(await store.deleteWorkspace(erased, at(0))).toMatchObject({ deleted: true, rows: { rate_limits: 5, job_queue_turns: 0, api_keys: 1 } });
      const keptKey = keys.get(kept);
      expect(await counted()).toEqual(
        [`denied-permission-events:${keptKey}`, `denied-permission-events:${keptKey}:previous`, `duplicate:${kept}`, `security-event-downloads:${keptKey}`, `upstream-reads:${kept}`].sort(),
      );
    } finally {
      await store.close();
      await schema.drop();
    }
  });

  it('lets a write wait for a row another transaction holds a moment; answers one that waited out its lock timeout UNAVAILABLE, naming the row, and uses its connection again', async () => {
    const schema = await createTestSchema();
    // One connection: the same server process answers every statement unless it is given up and replaced.
    const store = new PostgresStore({ connectionString: schema.url, schema: schema.schema, poolSize: 1, jobTime: 'caller' });
    const holder = new pg.Client({ connectionString: schema.url });
    try {
      await store.migrate();
      const workspace = workspaceFixture();
      await store.createWorkspace(workspace);
      const key = apiKeyFixture(workspace.id);
      await store.insertApiKey(key, eventFixture(workspace.id));
      const serverProcess = async () => Number((await store.pool.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      const before = await serverProcess();
      await holder.connect();
      await holder.query(`SET search_path = ${schema.schema}`);
      const holderPid = Number((await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      const lockKeyRow = async () => {
        await holder.query('BEGIN');
        await holder.query('SELECT FROM api_keys WHERE id = $1 FOR UPDATE', [key.id]);
      };
      // A wait that ends within the lock timeout, as writes of one row wait for each other: the write goes through.
      await lockKeyRow();
      const touched = store.touchApiKey(key, at(500));
      await waitFor(() => withAdmin(async (client) => (await client.query('SELECT FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [holderPid])).rowCount, schema.url));
      await holder.query('COMMIT');
      await touched;
      // The key's row, as a transaction of an instance frozen in the middle of a key change keeps it.
      await lockKeyRow();
      // A statement of its own (the key's last use), and one in a transaction (a revocation).
      for (const write of [() => store.touchApiKey(key, at(1000)), () => store.revokeApiKey(key.id, at(1000), eventFixture(workspace.id))]) {
        const refused = await write().then(() => 'written', (error: unknown) => error);
        expect(isUnavailable(refused)).toBe(true);
        expect(unavailableCause(refused)).toMatchObject({ code: '55P03', message: expect.stringContaining('in relation "api_keys"') });
      }
      expect(await serverProcess()).toBe(before);
      await holder.query('ROLLBACK');
      expect(await store.revokeApiKey(key.id, at(2000), eventFixture(workspace.id))).toBe(true);
      expect(await serverProcess()).toBe(before);
    } finally {
      await holder.end();
      await store.close();
      await schema.drop();
    }
  });

  it('lets claims take due jobs while another instance, making waiting jobs due, waits on a locked job: they wait for it a second, not until it is done', async () => {
    const schema = await createTestSchema();
    const [store, second] = [openPostgresStore(schema.url, schema.schema), openPostgresStore(schema.url, schema.schema)];
    const lockers = [new pg.Client({ connectionString: schema.url }), new pg.Client({ connectionString: schema.url })];
    try {
      await store.migrate();
      const workspace = workspaceFixture();
      await store.createWorkspace(workspace);
      // Jobs 1 to 29 are retries, waiting until their time; 29's comes later than the others'.
      const jobs = Array.from({ length: 30 }, (_, i) => jobFixture(workspace.id, { runAt: at(i === 29 ? 5000 : i) }));
      for (const job of jobs) await store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
      const pids = await Promise.all(
        lockers.map(async (locker, i) => {
          await locker.connect();
          await locker.query(`SET search_path = ${schema.schema}`);
          await locker.query('BEGIN');
          await locker.query('SELECT FROM jobs WHERE id = $1 FOR UPDATE', [jobs[28 + i].id]);
          return Number((await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
        }),
      );
      const blockedBy = (pid: number) =>
        withAdmin(async (client) => (await client.query('SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).rows[0]?.pid as number | undefined);
      // One instance makes 1 to 28 due and waits on 28. Another, whose time has 29 due as well, leaves that to it after
      // a second (waiting on, it would wait as long, or fail at the statement timeout) and takes the job due already.
      const first = store.claimJobs('first', 5, at(100), at(60_000));
      await waitFor(() => blockedBy(pids[0]));
      expect((await second.claimJobs('later', 5, at(10_000), at(60_000))).map((job) => job.id)).toEqual([jobs[0].id]);
      await lockers[0].query('COMMIT');
      expect((await first).map((job) => job.id)).toEqual(jobs.slice(1, 6).map((job) => job.id));
      // Another makes 29 due and waits on it.
      const later = second.claimJobs('later', 5, at(10_000), at(60_000));
      await waitFor(() => blockedBy(pids[1]));
      // Jobs 6 to 28 are due, pending, and claimed by nobody: a claim takes them rather than wait on.
      expect((await store.claimJobs('next', 5, at(10_000), at(60_000))).map((job) => job.id)).toEqual(jobs.slice(6, 11).map((job) => job.id));
      await lockers[1].query('COMMIT');
      expect(await later).toHaveLength(5);
    } finally {
      await Promise.all(lockers.map((locker) => locker.end()));
      await Promise.all([store.close(), second.close()]);
      await schema.drop();
    }
  });
});
