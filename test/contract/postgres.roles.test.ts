import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { postgresLimiters } from '../../src/adapters/limiter-backends.js';
import { POSTGRES_MIGRATIONS } from '../../src/adapters/postgres/migrations.js';
import { EVENT_ORDER_LOCK, MIGRATION_LOCK, PostgresStore, type PostgresStoreOptions } from '../../src/adapters/postgres/store.js';
import { isUnavailable } from '../../src/domain/errors.js';
import { at, campaignFixture, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { createTestDatabase, readmeGrants, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { waitFor } from '../support/wait.js';

/** A lock held, as an open transaction or a session lock of another session would hold it. */
async function holding(url: string, statements: [string, unknown[]][]): Promise<{ pid: number; release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url, application_name: 'lock-holder' });
  await client.connect();
  for (const [text, values] of statements) await client.query(text, values);
  const pid = Number((await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
  return { pid, release: () => client.end() };
}

/**
 * Whether the migration lock of `url`'s database is held by anyone, as pg_locks shows it. An advisory lock is the
 * database's: the stores other test files migrate meanwhile in other databases take their own.
 */
async function migrationLockHeld(url: string): Promise<boolean> {
  return withAdmin(async (client) => {
    const { rows } = await client.query(
      `SELECT count(*)::int AS held FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND classid = 0 AND objid = $1 AND objsubid = 1`,
      [MIGRATION_LOCK],
    );
    return rows[0].held > 0;
  }, url);
}

describe.skipIf(skipWithoutPostgres)('PostgreSQL: the migration lock, a runtime role without DDL, and a role’s lock_timeout', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  const runtime = `cgw_rt_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const password = randomUUID();
  const schema = 'app';
  let databaseName: string;
  let owner: string;
  const opened: PostgresStore[] = [];
  const open = (options: Partial<PostgresStoreOptions> & { url?: string } = {}) => {
    const { url = database.url, ...rest } = options;
    // The job queue on the times each call gives, as the store contract drives it.
    const store = new PostgresStore({ connectionString: url, poolSize: 4, jobTime: 'caller', ...rest });
    opened.push(store);
    return store;
  };
  const runtimeUrl = () => {
    const url = new URL(database.url);
    url.username = runtime;
    url.password = password;
    return url.toString();
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    databaseName = new URL(database.url).pathname.slice(1);
    owner = decodeURIComponent(new URL(database.url).username);
    // The runtime role, granted what the README says on a schema its owner made.
    await withAdmin(async (client) => {
      await client.query(`CREATE SCHEMA ${schema}`);
      await client.query(readmeGrants({ runtime, owner, schema, database: databaseName, password }));
    }, database.url);
    await open({ schema }).migrate();
  });

  afterAll(async () => {
    await Promise.all(opened.map((store) => store.close().catch(() => undefined)));
    await database?.drop();
    await withAdmin((client) => client.query(`DROP ROLE IF EXISTS ${runtime}`));
  });

  it('refuses to make a new store beside one in another schema, as after a restore without --create, naming it and the fix', async () => {
    // The owner's search_path is the default one ("$user", public): the database's SET search_path, lost.
    await expect(open().migrate()).rejects.toThrow(
      new RegExp(
        `holds no gateway tables on its search_path \\("\\$user", public\\), but schema ${schema} holds a gateway store: .*Nothing was made\\. ` +
          `Set the search_path to the store's schema \\(ALTER DATABASE ${databaseName} SET search_path = ${schema}, .*options=-c%20search_path%3D${schema} in DATABASE_URL\\)`,
      ),
    );
    const made = await withAdmin(
      async (client) => (await client.query(`SELECT to_regclass('public.schema_migrations') AS version, to_regclass('public.workspaces') AS workspaces`)).rows[0],
      database.url,
    );
    expect(made).toEqual({ version: null, workspaces: null });
    // As the refusal says: the search_path in DATABASE_URL finds the store.
    const url = new URL(database.url);
    url.searchParams.set('options', `-c search_path=${schema}`);
    expect(await open({ url: url.toString() }).migrate()).toEqual({ from: POSTGRES_MIGRATIONS.length, to: POSTGRES_MIGRATIONS.length });
  });

  it('starts on the store another instance made on its search_path between its first two looks, rather than take it for a restore’s', async () => {
    const fresh = await createTestDatabase();
    const query = pg.Client.prototype.query;
    let interleaved = false;
    // The other instance commits its whole migration right after this one's first look found no store.
    const spy = vi.spyOn(pg.Client.prototype, 'query');
    spy.mockImplementation(function (this: pg.Client, ...args: unknown[]) {
      const result = (query as (...args: unknown[]) => Promise<unknown>).apply(this, args);
      if (interleaved || typeof args[0] !== 'string' || !args[0].includes("to_regclass('schema_migrations')")) return result;
      interleaved = true;
      spy.mockRestore();
      return result.then(async (found) => {
        await open({ url: fresh.url }).migrate();
        return found;
      });
    } as typeof query);
    try {
      expect(await open({ url: fresh.url }).migrate()).toEqual({ from: POSTGRES_MIGRATIONS.length, to: POSTGRES_MIGRATIONS.length });
      expect(interleaved).toBe(true);
    } finally {
      spy.mockRestore();
      await Promise.all(opened.splice(-2).map((store) => store.close().catch(() => undefined)));
      await fresh.drop();
    }
  });

  it('holds the migration lock no longer than the migration, even where the connection outlives the store’s use of it', async () => {
    await withAdmin((client) => client.query('CREATE SCHEMA pooled'), database.url);
    // A pooler keeps the server's session when the client goes: here the migration's connection is simply kept open.
    const ended: pg.Client[] = [];
    const end = vi.spyOn(pg.Client.prototype, 'end').mockImplementation(function (this: pg.Client) {
      ended.push(this);
      return Promise.resolve();
    });
    try {
      const versions = await open({ schema: 'pooled' }).migrate();
      end.mockRestore();
      expect(versions).toMatchObject({ from: 0, to: POSTGRES_MIGRATIONS.length });
      expect(ended).toHaveLength(1);
      expect(await migrationLockHeld(database.url)).toBe(false);
    } finally {
      end.mockRestore();
      await Promise.all(ended.map((client) => client.end()));
    }
  });

  it('says once who holds the migration lock while it waits, then migrates when it is let go; gives up after a bound', async () => {
    await withAdmin((client) => client.query('CREATE SCHEMA waiting; CREATE SCHEMA bounded'), database.url);
    const holder = await holding(database.url, [['SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]]]);
    expect(await migrationLockHeld(database.url)).toBe(true);
    const waits: string[] = [];
    let settled = false;
    const migrating = open({ schema: 'waiting', migrationLock: { retryMs: 20, noticeMs: 0 }, onMigrationWait: (message) => waits.push(message) })
      .migrate()
      .finally(() => (settled = true));
    try {
      await waitFor(async () => waits.length > 0);
      expect(settled).toBe(false);
      expect(waits).toEqual([expect.stringContaining(`the migration lock (PostgreSQL advisory lock ${MIGRATION_LOCK}), held by the session of pid ${holder.pid}`)]);
      expect(waits[0]).toContain(`application_name 'lock-holder'`);
      expect(waits[0]).toContain(`SELECT pg_terminate_backend(${holder.pid})`);

      const bounded = open({ schema: 'bounded', migrationLock: { retryMs: 20, noticeMs: 0, waitMs: 100 } });
      await expect(bounded.migrate()).rejects.toThrow(new RegExp(`gave up after \\d+ s waiting for the migration lock .* pid ${holder.pid}`));
    } finally {
      await holder.release();
    }
    expect(await migrating).toMatchObject({ from: 0, to: POSTGRES_MIGRATIONS.length });
    expect(waits).toHaveLength(1);
  });

  it('lets other sessions’ statements on a table through while a migration waits for its lock, naming who holds it, and migrates once it is let go', async () => {
    await withAdmin((client) => client.query('CREATE SCHEMA blocked'), database.url);
    // A store at the schema before jobs.upstream_unacted_attempts (version 7), which needs jobs to itself for a moment.
    await open({ schema: 'blocked', migrations: POSTGRES_MIGRATIONS.slice(0, 6) }).migrate();
    // A transaction that read jobs and stays open, as a pg_dump or a long export holds it.
    const blocker = await holding(database.url, [
      ['BEGIN', []],
      ['SELECT count(*) FROM blocked.jobs', []],
    ]);
    // Given up with the migration lock's wait.
    await expect(open({ schema: 'blocked', migrationLock: { tableLockTimeoutMs: 100, waitMs: 50 } }).migrate()).rejects.toThrow(
      new RegExp(`gave up after \\d+ s waiting for a lock on the store's tables held by the session of pid ${blocker.pid} .* on jobs`),
    );
    const waits: string[] = [];
    let settled = false;
    const migrating = open({ schema: 'blocked', migrationLock: { tableLockTimeoutMs: 200 }, onMigrationWait: (message) => waits.push(message) })
      .migrate()
      .finally(() => (settled = true));
    const other = new pg.Client({ connectionString: database.url, application_name: 'other-instance' });
    await other.connect();
    try {
      const waitingFor = async (text: string) => {
        const { rows } = await other.query(`SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`, [`%${text}%`]);
        return rows[0].waiting > 0;
      };
      await waitFor(() => waitingFor('ADD COLUMN upstream_unacted_attempts'));
      // Another instance's read of jobs, asked for while the migration waits: it gets through with the blocker still open.
      let read = false;
      const reading = other.query('SELECT count(*) FROM blocked.jobs').then(() => (read = true));
      reading.catch(() => undefined);
      await waitFor(async () => read);
      await reading;
      expect(settled).toBe(false);
      await waitFor(async () => waits.length > 0);
      expect(waits[0]).toContain(`upgrading the schema to version ${POSTGRES_MIGRATIONS.length} waits for a lock on the store's tables held by the session of pid ${blocker.pid} (`);
      expect(waits[0]).toContain(`application_name 'lock-holder'`);
      expect(waits[0]).toContain(`on jobs (SELECT pg_terminate_backend(${blocker.pid}) ends it)`);
    } finally {
      await other.end();
      await blocker.release();
    }
    expect(await migrating).toMatchObject({ from: 6, to: POSTGRES_MIGRATIONS.length });
    // Told once for the one blocker, however many times it was tried.
    expect(waits).toHaveLength(1);
  });

  it('starts as a role granted only what the README says, running no DDL, and refuses to make or upgrade the schema with one line naming who can', async () => {
    // The schema its owner made: the runtime role starts, its search_path from the role.
    const store = open({ url: runtimeUrl() });
    expect(await store.migrate()).toEqual({ from: POSTGRES_MIGRATIONS.length, to: POSTGRES_MIGRATIONS.length });
    expect(await store.migrate('refuse')).toEqual({ from: POSTGRES_MIGRATIONS.length, to: POSTGRES_MIGRATIONS.length });

    // What the gateway does with its rows, as that role: the store, the queue, pruning and the quota.
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const campaign = campaignFixture(ws.id);
    await store.insertCampaign(campaign);
    await store.upsertTags(ws.id, ['promo']);
    const job = jobFixture(ws.id, { runAt: at(0), requestId: 'runtime-role' });
    expect(await store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }))).toBe(true);
    const [claimed] = await store.claimJobs('w', 1, at(1000), at(60_000));
    expect(claimed.requestId).toBe('runtime-role');
    const copy = campaignFixture(ws.id);
    const done = { status: 'SUCCEEDED' as const, resultCampaignId: copy.id, error: null, newCampaign: copy, event: eventFixture(ws.id, { jobId: job.id }) };
    expect(await store.finishJob(claimed.id, 'w', done, at(2000))).toBe(true);
    expect(await store.listEvents(ws.id, { since: at(0) }, { first: 10 })).toHaveLength(2);
    expect(await store.pruneFinishedJobs(at(3_600_000), 10)).toBe(1);
    await store.pruneEvents(at(3_600_000), 10, null);
    await store.pruneIdempotencyKeys(at(3_600_000), 10);
    expect((await postgresLimiters(store.pool).limiter({ keyPrefix: 'q', points: 5, durationSeconds: 60 }).consume('ws')).remainingPoints).toBe(4);
    // The CLI's erasure, which locks rows and the workspace's event order as it deletes.
    expect(await store.deleteWorkspace(ws.id, at(4_000_000))).toMatchObject({ deleted: true, rows: { workspaces: 1, campaigns: 2, tags: 1, job_queue_turns: 1 } });

    // A version with one more migration: the runtime role refuses it, the owner upgrades, and the default privileges
    // let the runtime role use what it made.
    const next = [...POSTGRES_MIGRATIONS, 'CREATE TABLE later_table (id bigserial PRIMARY KEY, note text)'];
    await expect(open({ url: runtimeUrl(), migrations: next }).migrate()).rejects.toThrow(
      `the PostgreSQL database in DATABASE_URL is at schema version ${POSTGRES_MIGRATIONS.length} and this version needs ${next.length}, which the role ${runtime} may not upgrade (`,
    );
    await expect(open({ url: runtimeUrl(), migrations: next }).migrate()).rejects.toThrow(`naming the role that owns the tables, ${owner}: it upgrades the schema`);
    expect(await open({ schema, migrations: next }).migrate()).toMatchObject({ from: POSTGRES_MIGRATIONS.length, to: next.length });
    const upgraded = open({ url: runtimeUrl(), migrations: next });
    expect(await upgraded.migrate()).toMatchObject({ from: next.length, to: next.length });
    await upgraded.pool.query(`INSERT INTO later_table (note) VALUES ('written by the runtime role')`);

    // An empty schema: the runtime role may not make it.
    await withAdmin((client) => client.query(`CREATE SCHEMA empty; GRANT USAGE ON SCHEMA empty TO ${runtime}`), database.url);
    await expect(open({ url: runtimeUrl(), schema: 'empty' }).migrate()).rejects.toThrow(
      `the PostgreSQL database in DATABASE_URL holds no gateway tables in schema empty yet, which the role ${runtime} may not make (permission denied for schema empty, 42501). ` +
        `Start this version's gateway once with a DATABASE_URL naming the role that owns the schema, ${owner}:`,
    );
  });

  it('waits for a workspace’s event lock past a lock_timeout set on the role, for a row as long as its own lock_timeout, not the role’s, and answers a lock it times out on as unavailable', async () => {
    await withAdmin((client) => client.query(`ALTER ROLE ${runtime} SET lock_timeout = '50ms'`), database.url);
    const store = open({ url: runtimeUrl() });
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const first = jobFixture(ws.id);
    await store.enqueueJob(first, eventFixture(ws.id, { jobId: first.id }));

    // Whether `work` still waits once its statement has waited for a lock many times the role's lock_timeout, as the server measures it.
    const waitsPastTheRoles = async (work: Promise<unknown>): Promise<boolean> => {
      let settled = false;
      void work.then(
        () => (settled = true),
        () => (settled = true),
      );
      await waitFor(async () => {
        if (settled) return true;
        const { rows } = await store.pool.query(
          `SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock' AND now() - query_start > interval '500 ms'`,
          [runtime],
        );
        return rows[0].waiting > 0;
      });
      return !settled;
    };

    // Another transaction of the workspace holds its event lock (a session lock conflicts with the transaction's).
    const holder = await holding(database.url, [['SELECT pg_advisory_lock($1, hashtext($2))', [EVENT_ORDER_LOCK, ws.id]]]);
    const job = jobFixture(ws.id);
    const enqueued = store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }));
    try {
      expect(await waitsPastTheRoles(enqueued)).toBe(true);
    } finally {
      await holder.release();
    }
    expect(await enqueued).toBe(true);

    // A row the enqueue must update, locked by another transaction: waited for past the role's lock_timeout, which the
    // gateway's own overrides, then refused with 55P03, answered 503.
    const rowHolder = await holding(database.url, [
      ['BEGIN', []],
      [`SELECT * FROM ${schema}.job_queue_turns WHERE workspace_id = $1 FOR UPDATE`, [ws.id]],
    ]);
    try {
      const refusal = store.enqueueJob(jobFixture(ws.id), eventFixture(ws.id)).catch((error: unknown) => error);
      expect(await waitsPastTheRoles(refusal)).toBe(true);
      const refused = await refusal;
      expect(isUnavailable(refused)).toBe(true);
      expect((refused as Error).cause).toMatchObject({ code: '55P03', message: expect.stringContaining('relation "job_queue_turns"') });
    } finally {
      await rowHolder.release();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('PostgreSQL: a database another application shares', () => {
  it('makes a new store on its search_path beside another tool’s schema_migrations, workspaces and jobs', async () => {
    const database = await createTestDatabase();
    const store = new PostgresStore({ connectionString: database.url, poolSize: 1, jobTime: 'caller' });
    try {
      // A Rails application's tables (golang-migrate, Ecto and dbmate name their table schema_migrations too).
      await withAdmin(
        (client) =>
          client.query(
            'CREATE SCHEMA rails; CREATE TABLE rails.schema_migrations (version varchar PRIMARY KEY); ' +
              'CREATE TABLE rails.workspaces (id bigserial PRIMARY KEY); CREATE TABLE rails.jobs (id bigserial PRIMARY KEY)',
          ),
        database.url,
      );
      expect(await store.migrate()).toEqual({ from: 0, to: POSTGRES_MIGRATIONS.length });
      const made = await withAdmin(async (client) => (await client.query(`SELECT to_regclass('public.jobs') IS NOT NULL AS made`)).rows[0].made, database.url);
      expect(made).toBe(true);
    } finally {
      await store.close();
      await database.drop();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('PostgreSQL: a second store, in a schema of its own, beside one in public', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let databaseName: string;
  const opened: PostgresStore[] = [];
  const open = (url: string) => {
    const store = new PostgresStore({ connectionString: url, poolSize: 1, jobTime: 'caller' });
    opened.push(store);
    return store;
  };
  const naming = (schema: string) => {
    const url = new URL(database.url);
    url.searchParams.set('options', `-c search_path=${schema}`);
    return url.toString();
  };
  const tablesIn = (schema: string) =>
    withAdmin(async (client) => (await client.query(`SELECT count(*)::int AS tables FROM pg_tables WHERE schemaname = $1`, [schema])).rows[0].tables, database.url);

  beforeEach(async () => {
    database = await createTestDatabase();
    databaseName = new URL(database.url).pathname.slice(1);
    // The first store, in public, with a workspace of its own.
    const first = open(database.url);
    await first.migrate();
    await first.createWorkspace(workspaceFixture('production'));
    await withAdmin((client) => client.query('CREATE SCHEMA staging'), database.url);
  });

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((store) => store.close().catch(() => undefined)));
    await database?.drop();
  });

  it('makes it when DATABASE_URL names its schema, leaving the first as it was', async () => {
    const before = await tablesIn('public');
    const second = open(naming('staging'));
    expect(await second.migrate()).toEqual({ from: 0, to: POSTGRES_MIGRATIONS.length });
    expect(await tablesIn('staging')).toBe(before);
    expect(await tablesIn('public')).toBe(before);
    const workspaces = (schema: string) =>
      withAdmin(async (client) => (await client.query(`SELECT name FROM ${schema}.workspaces`)).rows.map((row) => row.name), database.url);
    expect(await workspaces('public')).toEqual(['production']);
    expect(await workspaces('staging')).toEqual([]);
  });

  it.each([
    ['the database', (name: string) => `ALTER DATABASE ${name} SET search_path = staging`],
    ['the role in the database', (name: string) => `ALTER ROLE CURRENT_USER IN DATABASE ${name} SET search_path = staging`],
  ])('still refuses an empty search_path set on %s, not by the connection, saying how a second store is made', async (_on, set) => {
    await withAdmin((client) => client.query(set(databaseName)), database.url);
    await expect(open(database.url).migrate()).rejects.toThrow(
      /holds no gateway tables on its search_path \(staging\), but schema public holds a gateway store: .*A second store, in a schema of its own, is made by naming its schema in DATABASE_URL/,
    );
    expect(await tablesIn('staging')).toBe(0);
  });
});
