import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { SqliteStore } from '../../src/adapters/sqlite/store.js';
import type { SqliteWriter } from '../../src/adapters/sqlite/writer.js';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { bearer, http, json, metricSample, recordingLogger, startGateway, storeHeldOn, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { damageTable } from '../support/store-checks.js';
import { rest, transports, type DuplicateArgs } from '../support/transports.js';

/** 12 KiB as UTF-8, in the job row and again in its event: neither fits in a page, so each needs new pages. */
const LONG_DESCRIPTION = '€'.repeat(4096);

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
  err?: { message: string; code?: string };
  cause?: { message: string; code?: string };
}

/** The embedded store whose disk fills up, or whose file disappears, under a running gateway. */
describe('the embedded store when its storage fails', () => {
  let gateway: TestGateway | undefined;
  /** Places a test moves the data directory or a copy of the file to, next to the gateway's own. */
  let elsewhere: string[] = [];

  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
    for (const path of elsewhere) rmSync(path, { recursive: true, force: true });
    elsewhere = [];
  });

  /** A gateway on the default SQLite store, wrapped as a test needs, with its log kept. */
  async function start(wrapStore?: (store: GatewayStore) => GatewayStore, env: Record<string, string> = {}) {
    const { logger, lines } = recordingLogger();
    // A lease of a second: a job whose outcome could not be recorded is claimed again soon after the disk recovers.
    const started = await startGateway({ JOB_LEASE_SECONDS: '1', DUPLICATE_RATE_LIMIT: '1000', ...env }, { logger }, { wrapStore });
    gateway = started;
    const logs = () => lines.map((line) => JSON.parse(line) as LogLine);
    elsewhere = [`${started.dataDir}-away`, `${started.dataDir}.backup`];
    return { gateway: started, sqlite: started.app.store as SqliteStore, logs, tenant: await started.workspace() };
  }

  const duplicate = (target: TestGateway, tenant: TestWorkspace, args: DuplicateArgs) =>
    rest.duplicate(target.baseUrl, tenant.key, { campaignId: tenant.campaign.id, ...args });
  const jobStatus = async (target: TestGateway, tenant: TestWorkspace, jobId: string) => (await rest.job(target.baseUrl, tenant.key, jobId)).job?.status;
  const readiness = async (target: TestGateway) => {
    const response = await http(target.baseUrl, 'GET', '/readyz');
    return { status: response.status, body: response.body };
  };

  const liveness = async (target: TestGateway) => {
    const response = await http(target.baseUrl, 'GET', '/healthz');
    return { status: response.status, body: response.body };
  };
  const live = { status: 200, body: { status: 'ok' } };
  /** What /healthz answers once the store is in a state only a restart of the process ends. */
  const needsRestart = (reason: RegExp) => ({ status: 503, body: { status: 'failing', message: expect.stringMatching(reason) } });

  /** What /readyz answers while the store is down for the storage error `code`, the quota being up. */
  const storeDown = (code: string) => ({
    status: 503,
    body: {
      status: 'not ready',
      message: `store: not reachable or failing (${code})`,
      checks: { store: { status: 'down', message: `not reachable or failing (${code})` }, quota: { status: 'up', backend: 'memory' } },
    },
  });

  /**
   * Both transports answer 503 with Retry-After and nothing of the cause; the outage's first refusal is logged as
   * a warning naming the cause, the next only in a reminder a minute later.
   */
  async function expectRefused(target: TestGateway, tenant: TestWorkspace, logs: () => LogLine[], cause: RegExp, args: DuplicateArgs = {}) {
    for (const [index, transport] of transports.entries()) {
      const refused = await transport.duplicate(target.baseUrl, tenant.key, { campaignId: tenant.campaign.id, name: `refused over ${transport.name}`, ...args });
      expect(refused).toMatchObject({ status: 503, code: 'SERVICE_UNAVAILABLE', message: 'Service unavailable', jobId: null });
      expect(refused.response.headers['retry-after']).toBe('5');
      expect(refused.response.text).not.toMatch(cause);
      const lines = logs().filter((line) => line.reqId === refused.response.headers['x-request-id'] && line.level >= 40);
      const first = [expect.objectContaining({ level: 40, msg: 'a dependency is unavailable', cause: expect.objectContaining({ message: expect.stringMatching(cause) }) })];
      expect(lines).toEqual(index === 0 ? first : []);
    }
  }

  it('refuses writes with 503 on a full disk, reports the store down, and recovers by itself once there is room', async () => {
    let outcomeHeld!: () => void;
    const outcomeReached = new Promise<void>((resolve) => (outcomeHeld = resolve));
    let releaseOutcome!: () => void;
    let holdOutcome: Promise<void> | undefined = new Promise<void>((resolve) => (releaseOutcome = resolve));
    const { gateway, sqlite, logs, tenant } = await start((store) =>
      storeHeldOn(store, ['finishJob'], () => {
        outcomeHeld();
        return holdOutcome;
      }),
    );
    expect(await readiness(gateway)).toEqual({ status: 200, body: { status: 'ready', checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } } } });

    // Accepted while there is room; its copy, of a campaign with a body of 64 KiB, is to be written once the disk is full.
    const large = await gateway.app.admin.addCampaign(tenant.workspace.id, { name: 'large', description: null, tagNames: [], body: { html: 'x'.repeat(65_536) } });
    const early = await duplicate(gateway, tenant, { campaignId: large.id, name: 'accepted before the disk filled' });
    expect(early.status).toBe(202);
    await outcomeReached;
    await sqlite.holdSize(true);

    await expectRefused(gateway, tenant, logs, /disk is full/, { description: LONG_DESCRIPTION });
    expect(await readiness(gateway)).toEqual(storeDown('SQLITE_FULL'));
    expect(await liveness(gateway)).toEqual(live);

    // The worker cannot record the early job's copy either: one warning for the outage, and the job goes back to the
    // queue without spending an attempt, to be run again once there is room.
    holdOutcome = undefined;
    releaseOutcome();
    const workerWarning = await waitFor(async () =>
      logs().find((line) => line.msg === 'the store is unavailable; jobs go back to the queue without spending an attempt'),
    );
    expect(workerWarning).toMatchObject({ level: 40, cause: { code: 'SQLITE_FULL' } });
    // The warning comes before the writer thread commits the job's return to the queue.
    expect(await waitFor(async () => (await jobStatus(gateway, tenant, early.jobId!)) === 'PENDING' || null)).toBe(true);

    await sqlite.holdSize(false);
    expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
    const accepted = await Promise.all(
      transports.map((transport) => transport.duplicate(gateway.baseUrl, tenant.key, { campaignId: tenant.campaign.id, name: 'after the disk recovered', description: LONG_DESCRIPTION })),
    );
    expect(accepted.map((outcome) => outcome.status)).toEqual([202, 200]);
    for (const jobId of [early.jobId!, ...accepted.map((outcome) => outcome.jobId!)]) {
      await waitFor(async () => (await jobStatus(gateway, tenant, jobId)) === 'SUCCEEDED');
    }
    expect(logs().filter((line) => line.level >= 50)).toEqual([]);
  });

  // chattr +i needs root (CAP_LINUX_IMMUTABLE) and a file system that keeps the flag: /var/tmp is on disk, /tmp may be tmpfs.
  it.skipIf(process.getuid?.() !== 0 && !process.env.CI)(
    'reports the store down when its storage stops taking writes though no request writes, and up once it takes them again',
    async () => {
      const dataDir = mkdtempSync(join('/var/tmp', 'cgw-immutable-'));
      const { gateway, logs } = await start(undefined, { DATA_DIR: dataDir });
      elsewhere.push(dataDir);
      const storeUp = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_dependency_up', { dependency: 'store' });
      expect((await readiness(gateway)).status).toBe(200);
      expect(await storeUp()).toBe(1);

      // Immutable, the directory, the database and its WAL refuse every write with EPERM, as storage remounted read-only
      // refuses them with EROFS. Not the -shm: SQLite maps it into memory, and ext4 ends a process that writes to a
      // mapped page of an immutable file with SIGBUS.
      const paths = [dataDir, ...['gateway.db', 'gateway.db-wal'].map((name) => join(dataDir, name))];
      execFileSync('chattr', ['+i', ...paths]);
      try {
        expect(await readiness(gateway)).toEqual(storeDown('SQLITE_IOERR_WRITE'));
        expect(await storeUp()).toBe(0);
      } finally {
        execFileSync('chattr', ['-i', ...paths]);
      }

      expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
      expect(await storeUp()).toBe(1);
      // Its recovery is logged once the check has passed for a minute (CHECK_SETTLE_MS).
      expect(logs().filter((line) => line.msg.startsWith('dependency check'))).toEqual([
        expect.objectContaining({ level: 40, msg: 'dependency check failed', cause: expect.objectContaining({ code: 'SQLITE_IOERR_WRITE' }) }),
      ]);
    },
  );

  it('refuses writes with 503 once its data directory is removed, instead of accepting jobs into a file no restart finds', async () => {
    let claims = 0;
    const { gateway, logs, tenant } = await start((store) => storeHeldOn(store, ['claimJobs'], () => void (claims += 1)));
    const before = await duplicate(gateway, tenant, { name: 'before the directory was removed' });
    await waitFor(async () => (await jobStatus(gateway, tenant, before.jobId!)) === 'SUCCEEDED');
    const file = join(gateway.dataDir, 'gateway.db');
    const backup = `${gateway.dataDir}.backup`;
    copyFileSync(file, backup);

    rmSync(gateway.dataDir, { recursive: true });
    await expectRefused(gateway, tenant, logs, /no longer at/);
    expect(await readiness(gateway)).toMatchObject({
      status: 503,
      body: { status: 'not ready', checks: { store: { status: 'down', message: 'not reachable or failing (ENOENT)' } } },
    });
    // The directory may come back (a volume remounted): a restart would make an empty store in its place.
    expect(await liveness(gateway)).toEqual(live);
    // The worker keeps polling, and says once that the store is unavailable, not at every claim that fails.
    const claimsSoFar = claims;
    await waitFor(async () => claims >= claimsSoFar + 3);
    expect(logs().filter((line) => line.msg === 'claiming jobs failed; retrying')).toEqual([
      expect.objectContaining({ level: 40, cause: expect.objectContaining({ code: 'ENOENT' }) }),
    ]);

    // A copy put back at the path is another file: the store still refuses, until it is restarted on that file.
    mkdirSync(gateway.dataDir);
    copyFileSync(backup, file);
    expect(await readiness(gateway)).toMatchObject({ status: 503, body: { checks: { store: { status: 'down', message: 'not reachable or failing (ESTALE)' } } } });
    expect((await duplicate(gateway, tenant, { name: 'into the copy' })).status).toBe(503);
    expect(await liveness(gateway)).toEqual(needsRestart(/^store: another file is at the database path: only a new process opens it; restart the process$/));
    expect(logs().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('answers a poll it cannot read 503 over GraphQL too, without data, and 200 when another root field it could read was answered', async () => {
    const unreadable = (store: GatewayStore): GatewayStore =>
      new Proxy(store, {
        get: (target, property) =>
          property === 'listEvents'
            ? () => Promise.reject(dependencyUnavailable(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' })))
            : Reflect.get(target, property, target),
      });
    const { gateway: target, tenant } = await start(unreadable);
    const post = (query: string) => http(target.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(tenant.key) }, body: JSON.stringify({ query }) });
    const unavailable = [expect.objectContaining({ path: ['securityEvents'], extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }) })];

    const poll = await post('{ securityEvents(first: 5) { edges { node { type } } } }');
    expect(poll.status).toBe(503);
    expect(poll.headers['retry-after']).toBe('5');
    expect(poll.body).toEqual({ errors: unavailable });

    const mixed = await post('{ campaigns(first: 1) { edges { node { id } } } securityEvents(first: 5) { edges { node { type } } } }');
    expect(mixed.status).toBe(200);
    expect(mixed.headers['retry-after']).toBeUndefined();
    expect(mixed.body).toEqual({ data: { campaigns: { edges: [{ node: { id: tenant.campaign.id } }] }, securityEvents: null }, errors: unavailable });
  });

  it('serves again once the file it opened is back at its path', async () => {
    const { gateway, tenant } = await start();
    expect((await duplicate(gateway, tenant, { name: 'before the directory moved' })).status).toBe(202);
    const away = `${gateway.dataDir}-away`;
    renameSync(gateway.dataDir, away);
    expect((await duplicate(gateway, tenant, { name: 'while the directory is away' })).status).toBe(503);
    expect((await readiness(gateway)).status).toBe(503);

    renameSync(away, gateway.dataDir);
    expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
    const after = await duplicate(gateway, tenant, { name: 'after the directory came back' });
    expect(after.status).toBe(202);
    await waitFor(async () => (await jobStatus(gateway, tenant, after.jobId!)) === 'SUCCEEDED');
  });

  it('answers 503 while another process holds the database longer than it waits, and serves again after', async () => {
    // No worker: each of its claims would wait the 5 s busy timeout on the one writer thread, ahead of the requests.
    const { gateway, logs, tenant } = await start(undefined, { WORKER_CONCURRENCY: '0' });
    expect((await duplicate(gateway, tenant, { name: 'before the lock' })).status).toBe(202);
    // An operator's sqlite3 shell, or a backup tool, holding the write lock past the store's 5 s busy timeout.
    const holder = new Database(join(gateway.dataDir, 'gateway.db'));
    try {
      holder.exec('BEGIN IMMEDIATE');
      await expectRefused(gateway, tenant, logs, /database is locked/);
      expect(await liveness(gateway)).toEqual(live);
    } finally {
      if (holder.inTransaction) holder.exec('ROLLBACK');
      holder.close();
    }
    expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
    expect((await duplicate(gateway, tenant, { name: 'after the lock' })).status).toBe(202);
  }, 30_000);
  it('fails liveness once its file is found damaged, which only a restart on a repaired file ends', async () => {
    const { gateway, sqlite, tenant } = await start(undefined, { WORKER_CONCURRENCY: '0' });
    damageTable(join(gateway.dataDir, 'gateway.db'), 'campaigns');
    expect(await liveness(gateway)).toEqual(live);

    await expect(sqlite.listCampaigns(tenant.workspace.id, { first: 1 })).rejects.toMatchObject({ code: 'UNAVAILABLE', cause: { code: 'SQLITE_CORRUPT' } });
    expect(await readiness(gateway)).toEqual(storeDown('SQLITE_CORRUPT'));
    expect(await liveness(gateway)).toEqual(
      needsRestart(/^store: the database file is damaged \(SQLITE_CORRUPT\): check it or restore it; restart the process$/),
    );
  });

  it('fails liveness once its writer thread died young and was not replaced, and not while a replaced one serves', async () => {
    const { gateway, sqlite, tenant } = await start();
    const writer = () => (sqlite as unknown as { writer: SqliteWriter }).writer;
    /** A message the thread cannot handle: it dies, as a bug in it would. */
    const killThread = async () => {
      const { thread } = writer() as unknown as { thread: Worker };
      const exited = new Promise((resolve) => thread.once('exit', resolve));
      thread.postMessage({});
      await exited;
    };
    // A frozen clock: a thread started from now on dies at the instant it started, however slowly it starts.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      await killThread();
      // The first thread may have lived a second already, and been replaced; the replacement cannot have.
      if (writer().dead === null) {
        expect(await liveness(gateway)).toEqual(live);
        await killThread();
      }
      expect(writer().dead).not.toBeNull();
      expect((await duplicate(gateway, tenant, { name: 'after the writer died' })).status).toBe(500);
      expect((await readiness(gateway)).status).toBe(503);
      expect(await liveness(gateway)).toEqual(
        needsRestart(/^store: The SQLite writer stopped: .+, and a thread that dies within a second of starting is not replaced; restart the process$/),
      );
    } finally {
      vi.useRealTimers();
    }
  });
});
