import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { COUNT_JOBS_SQL, insertStatement, jobTurn, newJobToRow } from '../../src/adapters/rows.js';
import { WAL_SIZE_LIMIT_BYTES } from '../../src/adapters/sqlite/connection.js';
import { SQLITE_MIGRATIONS } from '../../src/adapters/sqlite/migrations.js';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { SqliteWriter } from '../../src/adapters/sqlite/writer.js';
import { CLAIM_JOBS_SQL, PROMOTE_DUE_JOBS_SQL } from '../../src/adapters/sqlite/writes.js';
import { GatewayError } from '../../src/domain/errors.js';
import { EXPORT_TABLES, type ListOptions } from '../../src/domain/ports.js';
import type { SecurityEventFilter, SecurityEventType } from '../../src/domain/types.js';
import { apiKeyFixture, at, campaignFixture, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { countStatements, KEY_BY_HASH } from '../support/statements.js';
import { damageTable } from '../support/store-checks.js';

/** What the SQLite adapter adds beyond the store contract: its writer thread, group commit and read caches. */
describe('SQLite store specifics', () => {
  let dir: string;
  let file: string;
  let store: SqliteStore;
  /** Another process on the same file, e.g. the key CLI while the gateway runs. */
  let other: SqliteStore;
  let ws: string;

  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
  /** More rows than the 10,000 each read cache holds. */
  const MORE_THAN_CACHED = 15_000;
  /** Looks up each cold row once, in order, and after every tenth the next hot row: each hot one many times over. */
  const cycle = async <T>(hot: T[], cold: T[], lookUp: (row: T) => Promise<void>) => {
    for (const [index, row] of cold.entries()) {
      await lookUp(row);
      if (index % 10 === 0) await lookUp(hot[(index / 10) % hot.length]);
    }
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-sqlite-'));
    file = join(dir, 'gateway.db');
    store = new SqliteStore({ filename: file });
    await store.migrate();
    other = new SqliteStore({ filename: file });
    const workspace = workspaceFixture();
    await store.createWorkspace(workspace);
    ws = workspace.id;
  });

  afterEach(async () => {
    await other.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prepares one statement for a list of event types however often a type repeats in it', async () => {
    await store.insertEvent(eventFixture(ws, { type: 'PERMISSION_DENIED' }));
    const statements = (store as unknown as { sql: { cache: Map<string, unknown> } }).sql.cache;
    await store.listEvents(ws, { types: ['PERMISSION_DENIED'] }, { first: 10 });
    const prepared = statements.size;
    for (let copies = 2; copies <= 200; copies += 1) {
      const events = await store.listEvents(ws, { types: Array(copies).fill('PERMISSION_DENIED') }, { first: 10 });
      expect(events.map((event) => event.type)).toEqual(['PERMISSION_DENIED']);
    }
    expect(statements.size).toBe(prepared);
  });

  it('refuses a database at the last schema version that lacks what the migrations make, naming what it lacks', async () => {
    const edited = new Database(file);
    edited.exec('DROP INDEX security_events_age; DROP TABLE idempotency_keys; ALTER TABLE jobs DROP COLUMN error_message');
    edited.close();
    const refusal = other.migrate();
    await expect(refusal).rejects.toThrow(`the SQLite database ${file} is at schema version ${SQLITE_MIGRATIONS.length} but lacks `);
    const message = await refusal.catch((error: Error) => error.message);
    for (const missing of ['column jobs.error_message', 'index security_events_age', 'table idempotency_keys', 'column idempotency_keys.request_hash']) {
      expect(message).toContain(missing);
    }
    expect(message).not.toContain('api_keys');
  });

  it('makes the data directory and the database file readable by its own user only', async () => {
    const made = new SqliteStore({ filename: join(dir, 'made', 'here', 'gateway.db') });
    await made.migrate();
    const modes = (names: string[]) => names.map((name) => statSync(join(dir, 'made', 'here', name)).mode & 0o777);
    expect(modes(['gateway.db', 'gateway.db-wal', 'gateway.db-shm'])).toEqual([0o600, 0o600, 0o600]);
    await made.close();
    expect(statSync(join(dir, 'made', 'here')).mode & 0o777).toBe(0o700);
  });

  it('commits the writes of one turn together: a failing one rejects alone, the others are committed when they resolve', async () => {
    const first = jobFixture(ws);
    const second = jobFixture(ws);
    const results = await Promise.allSettled([
      store.enqueueJob(first, eventFixture(ws, { jobId: first.id })),
      store.enqueueJob({ ...second }, eventFixture(ws, { jobId: second.id })),
      store.enqueueJob({ ...first, name: 'duplicate id' }, eventFixture(ws, { jobId: first.id })),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);

    // Seen from a separate connection, as after a crash: what resolved is committed, nothing of the failed write is.
    const reader = new Database(file, { readonly: true });
    try {
      const jobs = reader.prepare('SELECT id, name FROM jobs ORDER BY id').all() as { id: string; name: string }[];
      expect(jobs.map((job) => job.id).sort()).toEqual([first.id, second.id].sort());
      expect(jobs.find((job) => job.id === first.id)?.name).toBe(first.name);
      const events = reader.prepare('SELECT COUNT(*) AS n FROM security_events').get() as { n: number };
      expect(events.n).toBe(2);
    } finally {
      reader.close();
    }
  });

  it('undoes all of a write of a group that fails after its first statement succeeded, and commits the others', async () => {
    const recorded = eventFixture(ws);
    await store.insertEvent(recorded);
    const [before, halfWritten, after] = [jobFixture(ws), jobFixture(ws), jobFixture(ws)];
    const results = await Promise.allSettled([
      store.enqueueJob(before, eventFixture(ws, { jobId: before.id })),
      // Its job row goes in; its event, reusing the id of one already recorded, does not.
      store.enqueueJob(halfWritten, eventFixture(ws, { id: recorded.id, jobId: halfWritten.id })),
      store.enqueueJob(after, eventFixture(ws, { jobId: after.id })),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);

    const reader = new Database(file, { readonly: true });
    try {
      expect(reader.prepare('SELECT id FROM jobs').pluck().all().sort()).toEqual([before.id, after.id].sort());
      expect(reader.prepare('SELECT job_id FROM security_events WHERE id = ?').pluck().get(recorded.id)).toBeNull();
      expect(reader.prepare('SELECT COUNT(*) FROM security_events').pluck().get()).toBe(3);
    } finally {
      reader.close();
    }
  });

  it('finishes the writes in flight before close() resolves: none is lost, each one resolved', async () => {
    const jobs = Array.from({ length: 20 }, () => jobFixture(ws));
    const writes = jobs.map((job) => store.enqueueJob(job, eventFixture(ws, { jobId: job.id })));
    await store.close();
    await expect(Promise.all(writes)).resolves.toHaveLength(jobs.length);

    const reader = new Database(file, { readonly: true });
    try {
      expect((reader.prepare('SELECT COUNT(*) AS n FROM jobs').get() as { n: number }).n).toBe(jobs.length);
    } finally {
      reader.close();
    }
    await expect(store.insertEvent(eventFixture(ws))).rejects.toThrow(/writer/);
  });

  it('resolves every close() of the writer, made together while a write is in flight, after that write', async () => {
    const writer = new SqliteWriter(file);
    const write = writer.call('ping');
    await Promise.all([writer.close(), writer.close()]);
    await expect(write).resolves.toBeUndefined();
    await expect(writer.call('ping')).rejects.toThrow(/has exited/);
  });

  it('fails only the write whose arguments cannot be copied to the writer thread', async () => {
    const job = jobFixture(ws);
    const [uncopyable, fine] = await Promise.allSettled([
      store.insertEvent(eventFixture(ws, { details: { callback: () => undefined } as unknown as Record<string, unknown> })),
      store.enqueueJob(job, eventFixture(ws, { jobId: job.id })),
    ]);
    expect(uncopyable.status).toBe('rejected');
    expect(fine.status).toBe('fulfilled');
    expect(await store.getJob(ws, job.id)).toMatchObject({ id: job.id, status: 'PENDING' });
  });

  it('lets a process that never closes its store exit once its writes have resolved', async () => {
    const script = new URL('./fixtures/store-left-open.ts', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, join(dir, 'left-open.db')], { timeout: 60_000 });
    expect(stdout.trim()).toBe('left-open');
    const reader = new Database(join(dir, 'left-open.db'), { readonly: true });
    try {
      expect(reader.prepare('SELECT name FROM workspaces').pluck().all()).toEqual(['left-open']);
    } finally {
      reader.close();
    }
  });

  it('refuses a key revoked by this store at once, and one revoked by another connection from the next turn on', async () => {
    const mine = apiKeyFixture(ws);
    const theirs = apiKeyFixture(ws);
    await store.insertApiKey(mine, eventFixture(ws));
    await store.insertApiKey(theirs, eventFixture(ws));
    expect((await store.findApiKeyByHash(mine.hash))?.revokedAt).toBeNull();
    expect((await store.findApiKeyByHash(theirs.hash))?.revokedAt).toBeNull();

    await store.revokeApiKey(mine.id, at(1), eventFixture(ws));
    expect((await store.findApiKeyByHash(mine.hash))?.revokedAt).toEqual(at(1));
    // Cached again after this store's revoke emptied the cache: only the other connection's write can tell it.
    expect((await store.findApiKeyByHash(theirs.hash))?.revokedAt).toBeNull();

    await other.revokeApiKey(theirs.id, at(2), eventFixture(ws));
    await nextTurn();
    expect((await store.findApiKeyByHash(theirs.hash))?.revokedAt).toEqual(at(2));
  });

  describe('caching keys', () => {
    let keyLoads: () => number;

    beforeEach(() => {
      keyLoads = countStatements(store, KEY_BY_HASH);
    });

    const insertKeys = async (count: number) => {
      const keys = Array.from({ length: count }, () => apiKeyFixture(ws));
      await Promise.all(keys.map((key) => store.insertApiKey(key, eventFixture(ws))));
      await nextTurn();
      return keys;
    };

    it('keeps the keys in use while more keys than it holds pass through', async () => {
      const hot = await insertKeys(100);
      const cold = await insertKeys(MORE_THAN_CACHED);
      await cycle(hot, cold, async (key) => expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id));
      // Each cold key read once, each hot key once, at its first use.
      expect(keyLoads()).toBe(cold.length + hot.length);
    });

    it('keeps the keys in use however many hashes no key has are looked up', async () => {
      const known = await insertKeys(100);
      for (const key of known) await store.findApiKeyByHash(key.hash);
      const unknown = Array.from({ length: MORE_THAN_CACHED }, (_, index) => String(index).padStart(64, 'u'));
      for (const hash of unknown) expect(await store.findApiKeyByHash(hash)).toBeNull();
      for (const key of known) expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id);
      expect(await store.findApiKeyByHash(unknown.at(-1)!)).toBeNull();
      expect(keyLoads()).toBe(known.length + unknown.length);
    });

    it("keeps every key when one's last use is written, giving it that time, and sees other connections' changes from the next turn", async () => {
      const [used, revoked, narrowed] = await insertKeys(3);
      const found = await store.findApiKeyByHash(used.hash);
      await store.findApiKeyByHash(revoked.hash);
      await store.findApiKeyByHash(narrowed.hash);
      await store.touchApiKey(found!, at(5));
      await nextTurn();
      expect((await store.findApiKeyByHash(used.hash))?.lastUsedAt).toEqual(at(5));
      expect((await store.findApiKeyByHash(revoked.hash))?.lastUsedAt).toBeNull();
      expect(keyLoads()).toBe(3);

      await other.revokeApiKey(revoked.id, at(6), eventFixture(ws));
      await nextTurn();
      expect((await store.findApiKeyByHash(revoked.hash))?.revokedAt).toEqual(at(6));
      await other.rotateApiKey(used.id, used.hash, 'a'.repeat(64), 'cgw_rotated', null, eventFixture(ws));
      await nextTurn();
      expect(await store.findApiKeyByHash(used.hash)).toMatchObject({ hash: 'a'.repeat(64), previousHash: used.hash, previousHashExpiresAt: null });
      const raw = new Database(file);
      try {
        raw.prepare("UPDATE api_keys SET permissions = '[]' WHERE id = ?").run(narrowed.id);
      } finally {
        raw.close();
      }
      await nextTurn();
      expect((await store.findApiKeyByHash(narrowed.hash))?.permissions).toEqual([]);
    });

    it('moves the key version for a change to any column of a key but its last use', async () => {
      const [key] = await insertKeys(1);
      const raw = new Database(file);
      try {
        const version = () => raw.prepare('SELECT version FROM api_keys_version').pluck().get();
        const columns = raw.prepare("SELECT name FROM pragma_table_info('api_keys')").pluck().all() as string[];
        const moved = columns.filter((column) => {
          const before = version();
          raw.prepare(`UPDATE api_keys SET "${column}" = "${column}" WHERE id = ?`).run(key.id);
          return version() !== before;
        });
        expect(moved).toEqual(columns.filter((column) => column !== 'last_used_at'));
        expect(moved.length).toBeGreaterThan(10);
      } finally {
        raw.close();
      }
    });
  });

  it('finds a key created by another connection after a lookup that missed it', async () => {
    const key = apiKeyFixture(ws);
    expect(await store.findApiKeyByHash(key.hash)).toBeNull();
    await other.insertApiKey(key, eventFixture(ws));
    await nextTurn();
    expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id);
  });

  it('keeps the campaigns in use while more campaigns than it holds pass through', async () => {
    const reads = countStatements(store, 'FROM campaigns WHERE id = ?');
    const campaigns = Array.from({ length: 100 + MORE_THAN_CACHED }, () => campaignFixture(ws));
    await Promise.all(campaigns.map((campaign) => store.insertCampaign(campaign)));
    const [hot, cold] = [campaigns.slice(0, 100), campaigns.slice(100)];
    await cycle(hot, cold, async (campaign) => expect((await store.getCampaign(ws, campaign.id))?.id).toBe(campaign.id));
    expect(reads()).toBe(campaigns.length);
  });

  it('finds campaigns and tags inserted by another connection after a lookup that missed them', async () => {
    const campaign = campaignFixture(ws);
    expect(await store.getCampaign(ws, campaign.id)).toBeNull();
    expect(await store.missingTags(ws, ['late'])).toEqual(['late']);
    await other.insertCampaign(campaign);
    await other.upsertTags(ws, ['late']);
    expect(await store.getCampaign(ws, campaign.id)).toEqual(campaign);
    expect(await store.missingTags(ws, ['late'])).toEqual([]);
  });

  it('reads of one turn share one snapshot: what another connection commits meanwhile is read from the next turn on', async () => {
    const raw = new Database(file);
    try {
      expect(await store.findWorkspace('late')).toBeNull();
      raw.prepare('INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)').run('late-id', 'late', 0);
      expect(await store.findWorkspace('late')).toBeNull();
      await nextTurn();
      expect((await store.findWorkspace('late'))?.id).toBe('late-id');
    } finally {
      raw.close();
    }
  });

  it("ends the turn's read transaction before a write's answer is handed out, so a read after the write sees it", async () => {
    const events: string[] = [];
    const writer = new SqliteWriter(file, { beforeAnswers: () => events.push('read transaction ended') });
    try {
      await writer.call('ping').then(() => events.push('write resolved'));
      expect(events).toEqual(['read transaction ended', 'write resolved']);
    } finally {
      await writer.close();
    }
  });

  it('cuts the -wal file back to its limit once a burst that grew it past that has been checkpointed', async () => {
    const wal = `${file}-wal`;
    // A read transaction held open keeps every checkpoint from reaching the end of the WAL, so the burst grows it.
    const reader = new Database(file);
    try {
      reader.prepare('BEGIN').run();
      reader.prepare('SELECT count(*) FROM workspaces').get();
      await Promise.all(Array.from({ length: 1500 }, () => store.insertEvent(eventFixture(ws, { details: { description: 'd'.repeat(4000) } }))));
      expect(statSync(wal).size).toBeGreaterThan(WAL_SIZE_LIMIT_BYTES);
      reader.prepare('COMMIT').run();
      const [checkpoint] = reader.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
      expect(checkpoint.checkpointed).toBe(checkpoint.log);
    } finally {
      reader.close();
    }
    // The next write starts the WAL over, and its commit cuts the file back.
    await store.insertEvent(eventFixture(ws));
    expect(statSync(wal).size).toBeLessThanOrEqual(WAL_SIZE_LIMIT_BYTES);
  });

  it('overwrites what the pruner deletes, so that none of it stays readable in the database file', async () => {
    const fileText = () => readFileSync(file).toString('latin1');
    const checkpoint = () => {
      const connection = new Database(file);
      try {
        const [result] = connection.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
        expect(result.busy).toBe(0);
      } finally {
        connection.close();
      }
    };
    // Enough events for whole pages of them to be freed, as a pruner's batch frees them.
    await Promise.all(
      Array.from({ length: 300 }, (_, index) =>
        store.insertEvent(eventFixture(ws, { ip: '2001:db8:feed::42', details: { reason: `left-the-company-${index}`, requestId: `pruned-request-${index}` } })),
      ),
    );
    await store.insertEvent(eventFixture(ws, { occurredAt: at(10_000), details: { reason: 'kept-reason' } }));
    checkpoint();
    expect(fileText()).toContain('pruned-request-299');

    expect((await store.pruneEvents(at(1), 1000, null)).deleted).toBe(300);
    checkpoint();
    const text = fileText();
    expect(text).toContain('kept-reason');
    for (const pruned of ['pruned-request-', 'left-the-company-', '2001:db8:feed::42']) expect(text).not.toContain(pruned);
  });

  describe('when the writer thread dies', () => {
    /** A message the thread cannot handle: it throws outside any write, as a bug in the thread would, and the thread dies. */
    const killThread = (writer: SqliteWriter) => {
      const { thread } = writer as unknown as { thread: Worker };
      // Not events.once(): it would reject on the 'error' the thread emits before it exits.
      const exited = new Promise((resolve) => thread.once('exit', resolve));
      thread.postMessage({});
      return { thread, exited };
    };
    const workspaceRow = (id: string) => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare('SELECT id FROM workspaces WHERE id = ?').get(id);
      } finally {
        db.close();
      }
    };

    it('fails the calls it was sent, sends the unsent ones to a new thread, and serves later calls there', async () => {
      const restarts: Error[] = [];
      const writer = new SqliteWriter(file, { onRestart: (error) => restarts.push(error), minThreadLifetimeMs: 0 });
      try {
        await writer.call('ping');
        const { thread, exited } = killThread(writer);
        // Sent after the message that kills the thread: never run, and failed rather than left waiting.
        const sent = writer.call('createWorkspace', { ...workspaceFixture(), id: 'sent-before-death' });
        let unsent: Promise<boolean> | undefined;
        // Made while the thread's death is being handled, before any new thread exists.
        thread.prependOnceListener('exit', () => (unsent = writer.call('createWorkspace', { ...workspaceFixture(), id: 'unsent' })));
        await expect(sent).rejects.toThrow(/The SQLite writer stopped/);
        await exited;
        await expect(unsent).resolves.toBe(true);
        await writer.call('createWorkspace', { ...workspaceFixture(), id: 'after-death' });
        expect(restarts).toHaveLength(1);
        expect(workspaceRow('sent-before-death')).toBeUndefined();
        expect(workspaceRow('unsent')).toEqual({ id: 'unsent' });
        expect(workspaceRow('after-death')).toEqual({ id: 'after-death' });
      } finally {
        await writer.close();
      }
    });

    it('is not replaced when it dies young: later calls fail at once, as the store ping then does', async () => {
      const restarts: Error[] = [];
      const writer = new SqliteWriter(file, { onRestart: (error) => restarts.push(error), minThreadLifetimeMs: 60_000 });
      try {
        await writer.call('ping');
        const { exited } = killThread(writer);
        await exited;
        await expect(writer.call('ping')).rejects.toThrow(/The SQLite writer stopped/);
        expect(restarts).toEqual([]);
      } finally {
        await writer.close();
      }
    });

    it('is not replaced when it dies young under the default lifetime the store relies on', async () => {
      // A frozen clock: the thread dies at the instant it started, however slowly this machine starts one.
      vi.useFakeTimers({ toFake: ['Date'] });
      const restarts: Error[] = [];
      const young = new SqliteStore({ filename: file, onWriterRestart: (error) => restarts.push(error) });
      try {
        await young.ping();
        const { exited } = killThread((young as unknown as { writer: SqliteWriter }).writer);
        await exited;
        await expect(young.ping()).rejects.toThrow(/The SQLite writer stopped/);
        await expect(young.insertEvent(eventFixture(ws))).rejects.toThrow(/The SQLite writer stopped/);
        expect(restarts).toEqual([]);
      } finally {
        vi.useRealTimers();
        await young.close();
      }
    });
  });

  it('counts the queue for /metrics through its partial indexes, without reading the finished jobs', () => {
    const db = new Database(file, { readonly: true });
    try {
      const plan = (status: keyof typeof COUNT_JOBS_SQL) =>
        (db.prepare(`EXPLAIN QUERY PLAN ${COUNT_JOBS_SQL[status]}`).all() as { detail: string }[]).map((row) => row.detail);
      expect(plan('PENDING')).toEqual(['SCAN jobs USING COVERING INDEX jobs_due']);
      expect(plan('RUNNING')).toEqual(['SCAN jobs USING COVERING INDEX jobs_leased']);
    } finally {
      db.close();
    }
  });

  it('makes due the waiting jobs whose time came with one seek, claims by turn walking the turn index, sorting nothing, and finds a new job’s turn with one seek on its workspace’s', () => {
    const db = new Database(file, { readonly: true });
    try {
      const plan = (text: string, ...params: unknown[]) => (db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(...params) as { detail: string }[]).map((row) => row.detail);
      // The jobs waiting for a retry that became due are found with one seek, not by reading every one waiting.
      expect(plan(PROMOTE_DUE_JOBS_SQL, { now: 1 })).toEqual(['SEARCH jobs USING INDEX jobs_waiting (run_at<?)']);
      const claim = plan(CLAIM_JOBS_SQL, { owner: 'w', lease: 1, now: 1, limit: 10 });
      expect(claim, claim.join('; ')).toContain('SCAN jobs USING COVERING INDEX jobs_turn');
      expect(claim, claim.join('; ')).toContain('SEARCH jobs USING INDEX jobs_leased (lease_expires_at<?)');
      expect(claim.filter((line) => /TEMP B-TREE/.test(line)), claim.join('; ')).toEqual([]);

      const job = jobFixture(ws);
      const { text, values } = insertStatement('jobs', newJobToRow(job, { date: (value) => value.getTime(), bool: Number }), () => '?', [jobTurn(job)]);
      const enqueue = plan(text, ...values);
      expect(enqueue, enqueue.join('; ')).toContain('SEARCH jobs USING COVERING INDEX jobs_workspace_turn (workspace_id=?)');
      expect(enqueue.filter((line) => /^SCAN jobs|TEMP B-TREE/.test(line)), enqueue.join('; ')).toEqual([]);
    } finally {
      db.close();
    }
  });

  it('starts a page after a cursor by seeking to its row, on the index of the filter', async () => {
    const statements = (store as unknown as { sql: { cache: Map<string, unknown> } }).sql.cache;
    const before = new Set(statements.keys());
    await listedForItsStatement(store.listEvents(ws, { jobId: 'j' }, { first: 10, beforeId: 'e' }));
    await store.listCampaigns(ws, { first: 10, beforeId: 'c' });
    const [events, campaigns] = [...statements.keys()].filter((text) => !before.has(text) && !isCursorLookup(text));
    const db = new Database(file, { readonly: true });
    try {
      const plan = (text: string) => (db.prepare(`EXPLAIN QUERY PLAN ${text}`).all({ workspaceId: ws, beforeId: 'x', jobId: 'j', first: 10 }) as { detail: string }[]).map((row) => row.detail);
      // One bound on seq, the cursor row's: the seek starts there, not at the newest row.
      expect(plan(events)).toEqual([
        'SEARCH security_events USING INDEX security_events_job (workspace_id=? AND job_id=? AND seq<?)',
        'SCALAR SUBQUERY 1',
        'SEARCH security_events USING INDEX sqlite_autoindex_security_events_1 (id=?)',
      ]);
      expect(plan(campaigns)).toEqual([
        'SEARCH campaigns USING INDEX campaigns_workspace (workspace_id=? AND seq<?)',
        'SCALAR SUBQUERY 1',
        'SEARCH campaigns USING INDEX sqlite_autoindex_campaigns_1 (id=?)',
      ]);
    } finally {
      db.close();
    }
  });

  it('exports a workspace a page at a time by seeking to the page’s start on an index in the order of the page, sorting nothing', async () => {
    const statements = (store as unknown as { sql: { cache: Map<string, unknown> } }).sql.cache;
    const before = new Set(statements.keys());
    for (const table of EXPORT_TABLES) {
      await store.exportRows(ws, table, null, 10);
      await store.exportRows(ws, table, '1', 10);
    }
    const texts = [...statements.keys()].filter((text) => !before.has(text));
    expect(texts).toHaveLength(2 * EXPORT_TABLES.length);
    const db = new Database(file, { readonly: true });
    try {
      const plan = (text: string) => (db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(...(text.match(/\?/g) ?? []).map(() => 'x')) as { detail: string }[]).map((row) => row.detail);
      const plans = texts.map(plan);
      // Only a workspace's keys are sorted, which are a handful.
      expect(plans.filter((lines) => lines.some((line) => /TEMP B-TREE/.test(line))).map(([first]) => first)).toEqual(
        Array(2).fill('SEARCH api_keys USING INDEX api_keys_workspace (workspace_id=?)'),
      );
      expect(plans.flat().filter((line) => /^SCAN/.test(line))).toEqual([]);
      expect(plans.filter((lines) => /^SEARCH jobs /.test(lines[0]))).toEqual([
        ['SEARCH jobs USING INDEX jobs_workspace (workspace_id=?)'],
        ['SEARCH jobs USING INDEX jobs_workspace (workspace_id=? AND id>?)'],
      ]);
    } finally {
      db.close();
    }
  });

  it('frees, when a store that holds DATA_DIR opens the file, the keys reserved by requests a stopped process never finished', async () => {
    const reservation = (key: string) => ({ workspaceId: ws, key, requestHash: 'h1', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) });
    const accepted = jobFixture(ws);
    expect(await store.reserveIdempotencyKey(reservation('cut'), at(-60_000))).toBeNull();
    expect(await store.reserveIdempotencyKey(reservation('accepted'), at(-60_000))).toBeNull();
    expect(await store.enqueueJob(accepted, eventFixture(ws), reservation('accepted'))).toBe(true);
    await other.close();
    await store.close();

    // A store that does not hold the directory (the CLI) may open the file while the gateway accepts that request.
    const cli = new SqliteStore({ filename: file });
    await cli.migrate('refuse');
    expect(await cli.findIdempotencyKey(ws, 'cut')).toMatchObject({ jobId: null });
    await cli.close();

    const restarted = new SqliteStore({ filename: file, holdDataDir: true });
    try {
      await restarted.migrate();
      // Within the minute a reservation is held: no 409 for the retry, which reserves the key for itself.
      expect(await restarted.reserveIdempotencyKey({ ...reservation('cut'), requestHash: 'h2', createdAt: at(1000) }, at(-59_000))).toBeNull();
      expect(await restarted.findIdempotencyKey(ws, 'cut')).toMatchObject({ requestHash: 'h2', jobId: null });
      expect(await restarted.findIdempotencyKey(ws, 'accepted')).toMatchObject({ jobId: accepted.id });
    } finally {
      await restarted.close();
    }
  });

  it('ends, in a store that holds DATA_DIR, the leases a stopped process left, so that the next claim takes their jobs over', async () => {
    const running = jobFixture(ws);
    const pending = jobFixture(ws, { runAt: at(1) });
    for (const job of [running, pending]) await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
    await store.claimJobs('killed', 1, at(0), at(3_600_000));
    await other.close();
    await store.close();

    // A store that does not hold the directory (the CLI) may be opened while the gateway runs the job.
    const cli = new SqliteStore({ filename: file });
    await cli.migrate('refuse');
    expect(await cli.endOrphanedLeases(at(1000))).toBe(0);
    expect(await cli.findJob(running.id)).toMatchObject({ status: 'RUNNING', leaseOwner: 'killed', leaseExpiresAt: at(3_600_000) });
    await cli.close();

    const restarted = new SqliteStore({ filename: file, holdDataDir: true });
    try {
      await restarted.migrate();
      expect(await restarted.endOrphanedLeases(at(1000))).toBe(1);
      // Still the killed run's until claimed: the claim at that very time takes it over, first, as an expired one.
      expect(await restarted.findJob(running.id)).toMatchObject({ status: 'RUNNING', leaseOwner: 'killed', attempts: 1 });
      const claimed = await restarted.claimJobs('next', 5, at(1000), at(61_000));
      expect(claimed.map(({ id, attempts, takenOverFrom }) => ({ id, attempts, takenOverFrom }))).toEqual([
        { id: running.id, attempts: 2, takenOverFrom: 'killed' },
        { id: pending.id, attempts: 1, takenOverFrom: undefined },
      ]);
    } finally {
      await restarted.close();
    }
  });

  it('runs one storage check at a time: checks asked for while one runs share its write', async () => {
    // Counts the checks' writes as SQLite makes them, on whichever connection.
    const db = new Database(file);
    try {
      db.exec(`
        CREATE TABLE probe_writes (n INTEGER NOT NULL);
        INSERT INTO probe_writes (n) VALUES (0);
        CREATE TRIGGER probe_inserted AFTER INSERT ON storage_probe BEGIN UPDATE probe_writes SET n = n + 1; END;
        CREATE TRIGGER probe_updated AFTER UPDATE ON storage_probe BEGIN UPDATE probe_writes SET n = n + 1; END;
      `);
      const writes = () => db.prepare('SELECT n FROM probe_writes').pluck().get();
      await Promise.all([store.ping(), store.ping(), store.ping()]);
      expect(writes()).toBe(1);
      await store.ping();
      expect(writes()).toBe(2);
    } finally {
      db.close();
    }
  });

  /**
   * A listing run for the statement it prepares: a cursor naming no event (these tests need none) is refused once
   * the page has been read and found empty, by a look-up of the cursor's row (isCursorLookup).
   */
  async function listedForItsStatement(listing: Promise<unknown>): Promise<void> {
    await listing.catch((error: unknown) => {
      if (!(error instanceof GatewayError && error.code === 'BAD_USER_INPUT')) throw error;
    });
  }

  const isCursorLookup = (text: string): boolean => text.startsWith('SELECT (SELECT seq FROM security_events');

  /** The plan (EXPLAIN QUERY PLAN) of the statement listEvents prepares for a filter of a shape it has not listed yet. */
  async function listingPlan(db: Database.Database, filter: SecurityEventFilter, options: Omit<ListOptions, 'first'>): Promise<string[]> {
    const statements = (store as unknown as { sql: { cache: Map<string, unknown> } }).sql.cache;
    const before = new Set(statements.keys());
    await listedForItsStatement(store.listEvents(ws, filter, { first: 10, ...options }));
    const [text] = [...statements.keys()].filter((statement) => !before.has(statement) && !isCursorLookup(statement));
    const params = Object.fromEntries(text.match(/@\w+/g)!.map((name) => [name.slice(1), 1]));
    return (db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(params) as { detail: string }[]).map((row) => row.detail);
  }

  it('reads a filter of several types with one seek per type on the index of the filter, each in seq order, merged', async () => {
    const rare: SecurityEventType[] = ['CAMPAIGN_DUPLICATION_FAILED', 'PERMISSION_DENIED'];
    const shapes: [SecurityEventFilter, Omit<ListOptions, 'first'>, string][] = [
      [{ types: rare }, {}, 'security_events_type'],
      [{ types: [...rare, 'API_KEY_CREATED'], apiKeyId: 'k' }, { beforeId: 'e' }, 'security_events_key_type'],
      [{ types: rare, since: at(1000), until: at(2000) }, { beforeSeq: 5 }, 'security_events_type'],
      [{ types: rare, apiKeyId: 'k', since: at(1000) }, { beforeId: 'e' }, 'security_events_key_type'],
      [{ types: rare, until: at(2000) }, {}, 'security_events_type'],
    ];
    const db = new Database(file, { readonly: true });
    try {
      for (const [filter, options, index] of shapes) {
        const detail = await listingPlan(db, filter, options);
        const seeks = detail.filter((line) => line.startsWith('SEARCH security_events USING INDEX security_events_') && line.includes('type=?'));
        expect(seeks, `${JSON.stringify(filter)}: ${detail.join('; ')}`).toHaveLength(filter.types!.length);
        for (const seek of seeks) expect(seek).toMatch(new RegExp(`^SEARCH security_events USING INDEX ${index} \\(workspace_id=\\?${filter.apiKeyId ? ' AND api_key_id=\\?' : ''} AND type=\\? AND seq[<>]`));
        expect(detail.filter((line) => /^SCAN|TEMP B-TREE/.test(line)), detail.join('; ')).toEqual([]);
      }
    } finally {
      db.close();
    }
  });

  it('reads the events of a key, of a job or of the workspace, in a time window or not, with one seek on the index of the narrowest filter', async () => {
    const key = 'SEARCH security_events USING INDEX security_events_key (workspace_id=? AND api_key_id=? AND seq>? AND seq<?)';
    const job = 'SEARCH security_events USING INDEX security_events_job (workspace_id=? AND job_id=? AND seq<?)';
    const shapes: [SecurityEventFilter, Omit<ListOptions, 'first'>, string][] = [
      // A key with few events in a long window: the window's every event, read to find them, held the event loop.
      [{ apiKeyId: 'k', since: at(1000) }, {}, key],
      [{ apiKeyId: 'k', since: at(1000), until: at(2000) }, { beforeId: 'e' }, key],
      [{ apiKeyId: 'k', until: at(2000) }, { beforeSeq: 5 }, 'SEARCH security_events USING INDEX security_events_key (workspace_id=? AND api_key_id=? AND seq<?)'],
      // A job's few events, which a key polling its job (with one type) found by walking the key's every event.
      [{ jobId: 'j', apiKeyId: 'k' }, {}, job],
      [{ jobId: 'j', apiKeyId: 'k', types: ['CAMPAIGN_DUPLICATED'] }, { beforeId: 'e' }, job],
      [{ jobId: 'j', apiKeyId: 'k', since: at(1000) }, {}, 'SEARCH security_events USING INDEX security_events_job (workspace_id=? AND job_id=? AND seq>? AND seq<?)'],
      [{ since: at(1000), until: at(2000) }, {}, 'SEARCH security_events USING INDEX security_events_workspace (workspace_id=? AND seq>? AND seq<?)'],
    ];
    const db = new Database(file, { readonly: true });
    try {
      for (const [filter, options, seek] of shapes) {
        const detail = await listingPlan(db, filter, options);
        expect(detail[0], `${JSON.stringify(filter)}: ${detail.join('; ')}`).toBe(seek);
        expect(detail.filter((line) => /^SCAN|TEMP B-TREE/.test(line)), detail.join('; ')).toEqual([]);
      }
    } finally {
      db.close();
    }
  });

  it('hands out cached rows frozen, so no caller can change what the next one reads', async () => {
    const campaign = campaignFixture(ws);
    await store.insertCampaign(campaign);
    const read = await store.getCampaign(ws, campaign.id);
    expect(() => (read!.tagNames as string[]).push('x')).toThrow(TypeError);
    expect(await store.getCampaign(ws, campaign.id)).toEqual(campaign);
  });

  describe('when its storage fails', () => {
    /** What a call that failed for its storage was answered: UNAVAILABLE, and the SQLite code of its cause. */
    const refusal = (result: PromiseSettledResult<unknown>) => {
      const reason = result.status === 'rejected' ? (result.reason as GatewayError) : undefined;
      return { code: reason?.code, cause: (reason?.cause as { code?: string } | undefined)?.code };
    };

    it('fails every write of a group that SQLite rolled back for want of room with SQLITE_FULL, and commits none of it', async () => {
      await store.holdSize(true);
      const job = jobFixture(ws, { description: '€'.repeat(4096) });
      const workspace = workspaceFixture();
      const results = await Promise.allSettled([store.createWorkspace(workspace), store.enqueueJob(job, eventFixture(ws, { jobId: job.id }))]);
      expect(results.map(refusal)).toEqual([
        { code: 'UNAVAILABLE', cause: 'SQLITE_FULL' },
        { code: 'UNAVAILABLE', cause: 'SQLITE_FULL' },
      ]);
      expect(await store.findWorkspace(workspace.id)).toBeNull();
      await expect(store.ping()).rejects.toMatchObject({ code: 'UNAVAILABLE', cause: { code: 'SQLITE_FULL' } });

      await store.holdSize(false);
      await store.ping();
      await Promise.all([store.createWorkspace(workspace), store.enqueueJob(job, eventFixture(ws, { jobId: job.id }))]);
      expect(await store.getJob(ws, job.id)).toMatchObject({ id: job.id, description: job.description });
    });

    /** A campaign whose table's first page is then overwritten in the file, as a failing disk would. */
    async function damagedCampaign() {
      const campaign = campaignFixture(ws);
      await store.insertCampaign(campaign);
      damageTable(file, 'campaigns');
      return campaign;
    }

    it('reports a damaged file as UNAVAILABLE, and stays down however writes go, since nothing but an operator repairs it', async () => {
      const campaign = await damagedCampaign();
      const damaged = new SqliteStore({ filename: file });
      try {
        expect(refusal(await Promise.allSettled([damaged.getCampaign(ws, campaign.id)]).then(([result]) => result))).toEqual({
          code: 'UNAVAILABLE',
          cause: 'SQLITE_CORRUPT',
        });
        await damaged.insertEvent(eventFixture(ws));
        await expect(damaged.ping()).rejects.toMatchObject({ code: 'UNAVAILABLE', cause: { code: 'SQLITE_CORRUPT' } });
      } finally {
        await damaged.close();
      }
    });

    it('writes nothing of its WAL into a file found damaged when it closes last, leaving the file as it found it', async () => {
      const campaign = await damagedCampaign();
      await other.close();
      await store.close();
      const damaged = new SqliteStore({ filename: file });
      await expect(damaged.getCampaign(ws, campaign.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', cause: { code: 'SQLITE_CORRUPT' } });
      await damaged.insertEvent(eventFixture(ws));
      const found = readFileSync(file);

      await damaged.close();
      expect(readFileSync(file).equals(found)).toBe(true);
      expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
    });
  });
});
