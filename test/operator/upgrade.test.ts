import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { POSTGRES_MIGRATIONS } from '../../src/adapters/postgres/migrations.js';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { insertStatement, newJobToRow } from '../../src/adapters/rows.js';
import { missingSchemaObjects, SQLITE_MIGRATIONS } from '../../src/adapters/sqlite/migrations.js';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import type { DuplicationJob } from '../../src/domain/types.js';
import { apiKeyFixture, at, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { cliProcess } from '../support/cli.js';
import { startGateway } from '../support/gateway.js';
import { LogSink } from '../support/log-sink.js';
import { createTestDatabase, createTestSchema, openPostgresStore, skipWithoutPostgres, TEST_DATABASE_URL, withAdmin } from '../support/postgres.js';
import { spawnGateway, startFailureOf } from '../support/process.js';

describe('starting on a store a newer gateway has migrated', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stops before listening, with one line naming the file and both schema versions', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const file = join(dir, 'gateway.db');
    const store = new SqliteStore({ filename: file });
    await store.migrate();
    await store.close();
    const database = new Database(file);
    database.pragma(`user_version = ${SQLITE_MIGRATIONS.length + 1}`);
    database.close();

    const failure = await startFailureOf({ DATA_DIR: dir, SEED_DEMO: 'false' });

    const [exit, line, ...rest] = failure.split('\n');
    expect(exit).toBe('dist/main.js exited with 1 before listening:');
    expect(line).toContain(
      `campaign-gateway: failed to start: the SQLite database ${file} has schema version ${SQLITE_MIGRATIONS.length + 1}, newer than this gateway's ${SQLITE_MIGRATIONS.length}`,
    );
    expect(line).toContain('downgrading is not supported');
    expect(rest).toEqual(['']);
  });
});

describe('upgrading a store whose key version moved with every last use of a key', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Whether writing a key's last use, and renaming it, move the key version, as another connection sees them. */
  const versionMoves = (file: string, keyId: string) => {
    const db = new Database(file);
    try {
      const version = () => db.prepare('SELECT version FROM api_keys_version').pluck().get();
      const moves = (sql: string) => {
        const start = version();
        db.prepare(sql).run(keyId);
        return version() !== start;
      };
      return { lastUse: moves('UPDATE api_keys SET last_used_at = last_used_at + 1 WHERE id = ?'), rename: moves("UPDATE api_keys SET name = name || '.' WHERE id = ?") };
    } finally {
      db.close();
    }
  };

  it('keeps its keys, and from then on every change to a key but its last use moves the version', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const file = join(dir, 'gateway.db');
    const older = SQLITE_MIGRATIONS.findIndex((migration) => migration.includes('DROP TRIGGER api_keys_updated'));
    const workspace = workspaceFixture();
    const key = apiKeyFixture(workspace.id, { lastUsedAt: new Date(0) });
    const before = new SqliteStore({ filename: file, migrations: SQLITE_MIGRATIONS.slice(0, older) });
    await before.migrate();
    await before.createWorkspace(workspace);
    await before.insertApiKey(key, eventFixture(workspace.id));
    await before.close();
    expect(versionMoves(file, key.id)).toEqual({ lastUse: true, rename: true });

    const store = new SqliteStore({ filename: file });
    await store.migrate();
    expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id);
    await store.close();
    expect(versionMoves(file, key.id)).toEqual({ lastUse: false, rename: true });
    const db = new Database(file, { readonly: true });
    try {
      expect(db.pragma('user_version', { simple: true })).toBe(SQLITE_MIGRATIONS.length);
      expect(missingSchemaObjects(db, SQLITE_MIGRATIONS)).toEqual([]);
    } finally {
      db.close();
    }
  });
});

describe('upgrading a store with jobs queued before workspaces took turns', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the jobs queued before the upgrade first, in the order they became due, then the new ones by turn', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const file = join(dir, 'gateway.db');
    const older = SQLITE_MIGRATIONS.findIndex((migration) => migration.includes('job_queue_clock'));
    const [busy, quiet] = [workspaceFixture(), workspaceFixture()];
    const before = new SqliteStore({ filename: file, migrations: SQLITE_MIGRATIONS.slice(0, older) });
    await before.migrate();
    for (const workspace of [busy, quiet]) await before.createWorkspace(workspace);
    await before.close();
    // Queued as the older version queued them, with no turn, and not marked as waiting for their time.
    const queued = [3, 1, 2].map((due) => jobFixture(busy.id, { runAt: at(due) }));
    const db = new Database(file);
    for (const job of queued) {
      const { waiting: _, request_id: _requestId, ...row } = newJobToRow(job, { date: (value) => value.getTime(), bool: Number });
      const { text, values } = insertStatement('jobs', row, () => '?');
      db.prepare(text).run(...values);
    }
    db.close();

    const store = new SqliteStore({ filename: file });
    try {
      await store.migrate();
      const [next, fromQuiet] = [jobFixture(busy.id, { runAt: at(10) }), jobFixture(quiet.id, { runAt: at(11) })];
      for (const job of [next, fromQuiet]) await store.enqueueJob(job, eventFixture(job.workspaceId, { jobId: job.id }));
      const claimed: string[] = [];
      for (let i = 0; i < 5; i += 1) claimed.push(...(await store.claimJobs('w', 1, at(100), at(60_000))).map((job) => job.id));
      expect(claimed).toEqual([queued[1], queued[2], queued[0], fromQuiet, next].map((job) => job.id));
    } finally {
      await store.close();
    }
  });
});

/**
 * Upgrades `store` (closing it after), on which `queued` was accepted before jobs kept their request id: that job has
 * none, and one accepted after the upgrade keeps its own, as the worker claims them.
 */
async function expectRequestIdsAfterUpgrade(store: GatewayStore, versions: { from: number; to: number }, queued: DuplicationJob): Promise<void> {
  try {
    expect(await store.migrate()).toEqual(versions);
    const next = jobFixture(queued.workspaceId, { runAt: at(2), requestId: 'after-the-upgrade' });
    await store.enqueueJob(next, eventFixture(next.workspaceId, { jobId: next.id }));
    const claimed = await store.claimJobs('w', 2, at(100), at(60_000));
    expect(claimed.map(({ id, requestId }) => ({ id, requestId }))).toEqual([
      { id: queued.id, requestId: null },
      { id: next.id, requestId: 'after-the-upgrade' },
    ]);
  } finally {
    await store.close();
  }
}

describe('upgrading a store with jobs accepted before jobs kept their request id', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps those jobs, with no request id, and keeps the request id of the jobs accepted after', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const file = join(dir, 'gateway.db');
    const older = SQLITE_MIGRATIONS.findIndex((migration) => migration.includes('request_id'));
    const workspace = workspaceFixture();
    const before = new SqliteStore({ filename: file, migrations: SQLITE_MIGRATIONS.slice(0, older) });
    await before.migrate();
    await before.createWorkspace(workspace);
    await before.close();
    // Queued as the older version queued it, with no request id.
    const queued = jobFixture(workspace.id, { runAt: at(1) });
    const db = new Database(file);
    const { request_id: _, ...row } = newJobToRow(queued, { date: (value) => value.getTime(), bool: Number });
    const { text, values } = insertStatement('jobs', row, () => '?');
    db.prepare(text).run(...values);
    db.close();

    await expectRequestIdsAfterUpgrade(new SqliteStore({ filename: file }), { from: older, to: SQLITE_MIGRATIONS.length }, queued);
  });
});

describe('starting on a store an older gateway left', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const start = async () => {
    const sink = new LogSink();
    const gateway = await startGateway({ DATA_DIR: dir, LOG_LEVEL: 'info', LOG_FORMAT: 'json', WORKER_CONCURRENCY: '0' }, { logDestination: sink });
    await gateway.close();
    return sink.lines().filter((line) => line.component === 'store' && /schema/.test(line.msg));
  };

  it('says once that it brought the schema up to date, from which version to which, and how long that took', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const older = SQLITE_MIGRATIONS.length - 2;
    const before = new SqliteStore({ filename: join(dir, 'gateway.db'), migrations: SQLITE_MIGRATIONS.slice(0, older) });
    await before.migrate();
    await before.close();

    const [line, ...more] = await start();
    expect(line).toMatchObject({ level: 30, from: older, to: SQLITE_MIGRATIONS.length, msg: `upgraded the store's schema from version ${older} to ${SQLITE_MIGRATIONS.length}` });
    expect(line.durationMs).toEqual(expect.any(Number));
    expect(more).toEqual([]);
    // Up to date now: nothing to say.
    expect(await start()).toEqual([]);
  });

  it('says nothing of a store it makes new', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    expect(await start()).toEqual([]);
  });
});

describe("the README's examples of schema versions", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8').replace(/\s+/g, ' ');
  const numbers = (pattern: RegExp) => [...readme.matchAll(pattern)].map((match) => match.slice(1).map(Number));

  it("are this version's, so that no example names an upgrade that cannot happen", () => {
    expect(numbers(/M is (\d+) for SQLite and (\d+) for PostgreSQL/g)).toEqual([[SQLITE_MIGRATIONS.length, POSTGRES_MIGRATIONS.length]]);
    expect(numbers(/`… from version (\d+) to (\d+)`/g)).toEqual([[SQLITE_MIGRATIONS.length - 1, SQLITE_MIGRATIONS.length]]);
    expect(numbers(/is at schema version (\d+) and this version needs (\d+)/g)).toEqual([[SQLITE_MIGRATIONS.length - 1, SQLITE_MIGRATIONS.length]]);
    expect(numbers(/has schema version (\d+), newer than this gateway's (\d+)/g)).toEqual([[SQLITE_MIGRATIONS.length + 1, SQLITE_MIGRATIONS.length]]);
  });
});

describe.skipIf(skipWithoutPostgres)('upgrading a PostgreSQL store whose workspaces’ turns were read from their jobs', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;

  afterEach(() => schema.drop());

  it('keeps the turns of the jobs queued before, and gives a workspace’s next job the turn after its last', async () => {
    schema = await createTestSchema();
    const older = POSTGRES_MIGRATIONS.findIndex((migration) => migration.includes('job_queue_turns'));
    const [busy, quiet] = [workspaceFixture(), workspaceFixture()];
    const before = new PostgresStore({ connectionString: schema.url, schema: schema.schema, migrations: POSTGRES_MIGRATIONS.slice(0, older) });
    await before.migrate();
    for (const workspace of [busy, quiet]) await before.createWorkspace(workspace);
    await before.close();
    // Queued as the older version queued them, one after the other: turns 0, 1 and 2.
    const queued = [1, 2, 3].map((due) => jobFixture(busy.id, { runAt: at(due) }));
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      for (const [turn, job] of queued.entries()) {
        const { request_id: _, ...row } = newJobToRow(job, { date: (value) => value, bool: (value) => value });
        const { text, values } = insertStatement('jobs', { ...row, queue_turn: turn }, (position) => `$${position}`);
        await client.query(text, values);
      }
    }, schema.url);

    const store = openPostgresStore(schema.url, schema.schema);
    try {
      expect(await store.migrate()).toEqual({ from: older, to: POSTGRES_MIGRATIONS.length });
      const [next, fromQuiet] = [jobFixture(busy.id, { runAt: at(10) }), jobFixture(quiet.id, { runAt: at(11) })];
      for (const job of [next, fromQuiet]) await store.enqueueJob(job, eventFixture(job.workspaceId, { jobId: job.id }));
      const claimed: string[] = [];
      for (let i = 0; i < 5; i += 1) claimed.push(...(await store.claimJobs('w', 1, at(100), at(60_000))).map((job) => job.id));
      // The quiet workspace's job takes the clock's turn, 0; the busy one's next job the turn after its last, 3.
      expect(claimed).toEqual([queued[0], fromQuiet, queued[1], queued[2], next].map((job) => job.id));
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('upgrading a PostgreSQL store with jobs accepted before jobs kept their request id', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;

  afterEach(() => schema.drop());

  it('keeps those jobs, with no request id, and keeps the request id of the jobs accepted after', async () => {
    schema = await createTestSchema();
    const older = POSTGRES_MIGRATIONS.findIndex((migration) => migration.includes('request_id'));
    const workspace = workspaceFixture();
    const before = new PostgresStore({ connectionString: schema.url, schema: schema.schema, migrations: POSTGRES_MIGRATIONS.slice(0, older) });
    await before.migrate();
    await before.createWorkspace(workspace);
    await before.close();
    // Queued as the older version queued it, with no request id.
    const queued = jobFixture(workspace.id, { runAt: at(1) });
    await withAdmin(async (client) => {
      await client.query(`SET search_path = ${schema.schema}`);
      const { request_id: _, ...row } = newJobToRow(queued, { date: (value) => value, bool: (value) => value });
      const { text, values } = insertStatement('jobs', row, (position) => `$${position}`);
      await client.query(text, values);
    }, schema.url);

    await expectRequestIdsAfterUpgrade(openPostgresStore(schema.url, schema.schema), { from: older, to: POSTGRES_MIGRATIONS.length }, queued);
  });
});

describe.skipIf(skipWithoutPostgres)('starting on a PostgreSQL store that claims its schema version but lacks part of it', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;

  afterEach(() => database.drop());

  it('stops before listening, naming what it lacks, and leaves it as it was', async () => {
    database = await createTestDatabase();
    // Version 3 as a development build made it, before it had jobs.waiting.
    const turns = POSTGRES_MIGRATIONS.findIndex((migration) => migration.includes('job_queue_clock'));
    const early = POSTGRES_MIGRATIONS[turns]
      .replace(" AND waiting = false", '')
      .split('\n')
      .filter((line) => !line.includes('waiting'))
      .join('\n');
    const before = new PostgresStore({ connectionString: database.url, migrations: [...POSTGRES_MIGRATIONS.slice(0, turns), early] });
    await before.migrate();
    await before.close();

    const failure = await startFailureOf({ DATABASE_URL: database.url, SEED_DEMO: 'false' });

    const [exit, line, ...rest] = failure.split('\n');
    expect(exit).toBe('dist/main.js exited with 1 before listening:');
    expect(line).toContain(
      `campaign-gateway: failed to start: the PostgreSQL database in DATABASE_URL is at schema version ${turns + 1} but lacks column jobs.waiting, index jobs_waiting: `,
    );
    expect(line).toContain('Restore a backup, or add what it lacks');
    expect(rest).toEqual(['']);
    const versions = await withAdmin((client) => client.query('SELECT MAX(version) AS version FROM schema_migrations'), database.url);
    expect(versions.rows[0].version).toBe(turns + 1);

    // Completed as the README says, it is upgraded.
    const completion = /```sql\n(ALTER TABLE jobs ADD COLUMN waiting[^`]*)```/.exec(readFileSync(new URL('../../README.md', import.meta.url), 'utf8'))![1];
    await withAdmin((client) => client.query(completion), database.url);
    const store = openPostgresStore(database.url);
    try {
      expect(await store.migrate()).toEqual({ from: turns + 1, to: POSTGRES_MIGRATIONS.length });
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('starting on PostgreSQL as a role that may not create temporary tables', () => {
  // Named apart from the cgw_ of API keys, which the log redacts.
  const name = `notemp_${process.pid}`;

  afterEach(() =>
    withAdmin(async (client) => {
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.query(`DROP ROLE IF EXISTS ${name}`);
    }),
  );

  it('starts unchecked, saying once in the log which grant enables the check, and the CLI works too', async () => {
    // Hardened as some setups are: TEMPORARY, which every role has through PUBLIC by default, revoked.
    await withAdmin(async (client) => {
      await client.query(`CREATE ROLE ${name} LOGIN PASSWORD 'hardened'`);
      await client.query(`CREATE DATABASE ${name}`);
      await client.query(`REVOKE TEMPORARY ON DATABASE ${name} FROM PUBLIC`);
    });
    const url = new URL(TEST_DATABASE_URL!);
    url.pathname = `/${name}`;
    await withAdmin((client) => client.query(`GRANT CREATE ON SCHEMA public TO ${name}`), url.toString());
    [url.username, url.password] = [name, 'hardened'];
    const env = { DATABASE_URL: url.toString(), SEED_DEMO: 'false' };

    // A new database: nothing to check.
    const first = await spawnGateway(env);
    first.child.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    expect(first.logs.filter((line) => line.level >= 40)).toEqual([]);

    const gateway = await spawnGateway(env);
    try {
      expect(gateway.logs.filter((line) => line.level >= 40)).toEqual([
        expect.objectContaining({
          level: 40,
          component: 'store',
          msg:
            `the schema was not checked for parts its version lacks: the role ${name} may not create temporary tables in database ${name}, ` +
            `where the check makes the schema afresh to compare; GRANT TEMPORARY ON DATABASE ${name} TO ${name} enables the check`,
        }),
      ]);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }

    // The CLI opens the store as the gateway does, and says nothing of the check.
    const created = await cliProcess(['workspaces', 'create', 'hardened'], env);
    expect(created).toMatchObject({ code: 0, stderr: '' });
  }, 120_000);
});
