import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout } from 'node:timers/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { EXIT, runCli } from '../../src/cli/commands.js';
import { createStore } from '../../src/app.js';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { loadConfig } from '../../src/config.js';
import { EXPORT_TABLES, type ExportRows, type ExportTable } from '../../src/domain/ports.js';
import { copyStore, CountMismatch } from '../../src/domain/store-copy.js';
import { databaseFile, prepareWorkspace, seedFinishedJobs } from '../../bench/lib/store.js';
import { cliProcess, cliProcessActedOn, cliProcessWritingTo } from '../support/cli.js';
import { eventFixture } from '../support/fixtures.js';
import { graphql, startGateway, waitFor } from '../support/gateway.js';
import { createTestDatabase, readmeGrants, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { rest } from '../support/transports.js';

async function cli(dataDir: string, ...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { env: { DATA_DIR: dataDir }, stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

/** The exit code and the `--json` error of a failed run: what a script tells refusals apart by. */
async function jsonError(dataDir: string, ...argv: string[]) {
  const { code, stdout, stderr } = await cli(dataDir, ...argv, '--json');
  expect(stdout).toBe('');
  return { exit: code, ...JSON.parse(stderr.split('\n').filter((line) => line.startsWith('{"error"')).join('')).error };
}

const EVENTS = `query Events($first: Int, $after: String) {
  securityEvents(first: $first, after: $after) { edges { node { id type occurredAt jobId } } pageInfo { endCursor hasNextPage } }
}`;

/** Every event the key's workspace shows, newest first, read `first` at a time through the cursors. */
async function allEvents(baseUrl: string, key: string, first: number) {
  const pages: { ids: string[]; endCursor: string | null }[] = [];
  let after: string | null = null;
  do {
    const response = await graphql(baseUrl, key, EVENTS, { first, after });
    expect(response.body.errors).toBeUndefined();
    const connection = response.body.data.securityEvents;
    pages.push({ ids: connection.edges.map((edge: { node: { id: string } }) => edge.node.id), endCursor: connection.pageInfo.endCursor });
    after = connection.pageInfo.hasNextPage ? connection.pageInfo.endCursor : null;
  } while (after !== null);
  return pages;
}

const finished = (baseUrl: string, key: string, jobId: string) =>
  waitFor(async () => {
    const { job } = await rest.job(baseUrl, key, jobId);
    return job?.status === 'SUCCEEDED' || job?.status === 'FAILED' ? job : undefined;
  });

/** Modes do not bind root: as root, the CLI whose access they are to refuse runs as nobody, whom they bind. */
const LOCKED_OUT = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;

/** Whether a statement in the database of `url` waits on a lock (asked on a connection of its own, with its own snapshot). */
/** Whether a statement has waited on a lock in the database, for longer than `forMs` when given. */
const waitingOnLock = (url: string, forMs = 0) =>
  withAdmin(async (client) => {
    const { rows } = await client.query(
      `SELECT count(*)::int AS waiting FROM pg_stat_activity
       WHERE wait_event_type = 'Lock' AND datname = current_database() AND clock_timestamp() - query_start > $1 * interval '1 millisecond'`,
      [forMs],
    );
    return rows[0].waiting > 0;
  }, url);

const tableCounts = (url: string) =>
  withAdmin(async (client) => {
    const counts: Record<string, number> = {};
    for (const table of EXPORT_TABLES) counts[table] = Number((await client.query(`SELECT count(*) FROM ${table}`)).rows[0].count);
    return counts;
  }, url);

describe.skipIf(skipWithoutPostgres)('store copy', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** A target database, and a file holding its URL, as an operator keeps a password out of the shell's history. */
  async function target() {
    const database = await createTestDatabase();
    cleanups.push(database.drop);
    const dir = mkdtempSync(join(tmpdir(), 'cgw-copy-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const urlFile = join(dir, 'database-url');
    writeFileSync(urlFile, `${database.url}\n`, { mode: 0o600 });
    return { url: database.url, urlFile };
  }

  /** A gateway on a new embedded store, with a workspace, finished jobs and an idempotency key. */
  async function sourceGateway() {
    const gw = await startGateway();
    const dataDir = gw.config.dataDir;
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const ws = await gw.workspace('acme');
    const args = { campaignId: ws.campaign.id, name: 'Copy', tagNames: ['promo'] };
    const first = await rest.duplicate(gw.baseUrl, ws.key, args, { idempotencyKey: 'idem-1' });
    const second = await rest.duplicate(gw.baseUrl, ws.key, { ...args, name: 'Second copy' });
    expect([first.status, second.status]).toEqual([202, 202]);
    for (const jobId of [first.jobId!, second.jobId!]) expect(await finished(gw.baseUrl, ws.key, jobId)).toMatchObject({ status: 'SUCCEEDED' });
    return { gw, dataDir, ws, args, jobId: first.jobId! };
  }

  it('copies a stopped embedded store into PostgreSQL, where a gateway serves it as it was', async () => {
    const { gw, dataDir, ws, args, jobId } = await sourceGateway();
    const eventsBefore = await allEvents(gw.baseUrl, ws.key, 3);
    const jobBefore = (await graphql(gw.baseUrl, ws.key, '{ duplicationJob(id: "' + jobId + '") { status resultCampaignId attempts } }')).body.data.duplicationJob;
    await gw.app.close();
    const { url, urlFile } = await target();

    const copied = await cli(dataDir, 'store', 'copy', '--to', urlFile, '--json');
    expect(copied.code, copied.stderr).toBe(EXIT.ok);
    const summary = JSON.parse(copied.stdout);
    const database = new URL(url).pathname.slice(1);
    expect(summary).toMatchObject({ target: `the PostgreSQL database ${database} on 127.0.0.1:5432`, runningJobs: 0 });
    expect(summary.copied).toMatchObject({ workspaces: 1, api_keys: 1, idempotency_keys: 1, jobs: 2 });
    expect(summary.copied.campaigns).toBe(3);
    expect(summary.orphaned).toEqual({});
    expect(await tableCounts(url)).toEqual(summary.copied);
    // Progress per table on stderr; never the URL's password.
    expect(copied.stderr).toMatch(/\n {2}"acme": api_keys 1, tags 3, campaigns 3, jobs 2, security_events 5, idempotency_keys 1\n/);
    const { password, username } = new URL(url);
    expect(copied.stdout + copied.stderr).not.toContain(`${username}:${password}@`);

    const pg = await startGateway({ DATABASE_URL: url });
    cleanups.push(() => pg.close());
    // The key made before the copy authenticates, and every event reads the same, page by page, cursors included.
    expect(await allEvents(pg.baseUrl, ws.key, 3)).toEqual(eventsBefore);
    expect((await graphql(pg.baseUrl, ws.key, '{ duplicationJob(id: "' + jobId + '") { status resultCampaignId attempts } }')).body.data.duplicationJob).toEqual(jobBefore);
    expect(jobBefore).toMatchObject({ status: 'SUCCEEDED', resultCampaignId: expect.any(String) });
    // The idempotency key answers with its job; a new duplication is accepted and runs.
    expect(await rest.duplicate(pg.baseUrl, ws.key, args, { idempotencyKey: 'idem-1' })).toMatchObject({ status: 202, jobId });
    const next = await rest.duplicate(pg.baseUrl, ws.key, { ...args, name: 'After the move' }, { idempotencyKey: 'idem-2' });
    expect(next.status).toBe(202);
    expect(await finished(pg.baseUrl, ws.key, next.jobId!)).toMatchObject({ status: 'SUCCEEDED' });
    const [newest] = (await allEvents(pg.baseUrl, ws.key, 50))[0].ids;
    expect(eventsBefore.flatMap((page) => page.ids)).not.toContain(newest);
  });

  it('refuses while a gateway runs on the source, and copies nothing', async () => {
    const { gw, dataDir } = await sourceGateway();
    cleanups.push(() => gw.app.close());
    const { url, urlFile } = await target();
    const refused = await cli(dataDir, 'store', 'copy', '--to', urlFile);
    expect(refused).toMatchObject({ code: EXIT.failed, stdout: '' });
    expect(refused.stderr).toMatch(/^campaign-gateway: the embedded store .*gateway\.db is in use by a running gateway \(it holds .*gateway\.lock\): stop it first, .* Nothing was copied\.\n$/);
    const tables = await withAdmin((client) => client.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"), url);
    expect(Number(tables.rows[0].count)).toBe(0);
  });

  it('refuses a command line without --to before looking at the store, and --to naming the store being copied', async () => {
    const missing = await cli(join(tmpdir(), 'cgw-copy-no-such-dir'), 'store', 'copy');
    expect(missing).toEqual({ code: EXIT.usage, stdout: '', stderr: 'campaign-gateway: --to <PostgreSQL URL, a file holding it, or a directory> is required (see --help)\n' });

    const { gw, dataDir } = await sourceGateway();
    await gw.app.close();
    // By another path too: a link to it.
    const links = mkdtempSync(join(tmpdir(), 'cgw-copy-link-'));
    cleanups.push(() => rmSync(links, { recursive: true, force: true }));
    symlinkSync(dataDir, join(links, 'data'));
    for (const to of [dataDir, join(links, 'data')]) {
      expect(await cli(dataDir, 'store', 'copy', '--to', to)).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: --to ${to} is the store being copied (${join(dataDir, 'gateway.db')}): give an empty directory or a PostgreSQL database. Nothing was copied.\n`,
      });
    }
  });

  it('refuses a --to that names no target as BAD_USER_INPUT, and one that cannot be reached as UNAVAILABLE, under --json', async () => {
    const { gw, dataDir } = await sourceGateway();
    await gw.app.close();
    const files = mkdtempSync(join(tmpdir(), 'cgw-copy-to-'));
    cleanups.push(() => rmSync(files, { recursive: true, force: true }));
    const noUrl = join(files, 'no-url');
    writeFileSync(noUrl, 'hunter2\n');
    const missing = join(files, 'missing');
    expect(await jsonError(dataDir, 'store', 'copy', '--to', missing)).toEqual({
      exit: EXIT.failed,
      code: 'BAD_USER_INPUT',
      message: `--to ${missing}: no such file or directory (give a postgres:// URL, a file holding one, or a DATA_DIR)`,
    });
    expect(await jsonError(dataDir, 'store', 'copy', '--to', noUrl)).toEqual({ exit: EXIT.failed, code: 'BAD_USER_INPUT', message: `--to ${noUrl}: the file holds no postgres:// URL` });
    expect(await jsonError(dataDir, 'store', 'copy', '--to', dataDir)).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT' });
    expect(await jsonError(dataDir, 'store', 'copy', '--to', 'postgres://gateway:gateway@127.0.0.1:1/gateway')).toEqual({
      exit: EXIT.failed,
      code: 'UNAVAILABLE',
      message: expect.stringMatching(/^the PostgreSQL database gateway on 127\.0\.0\.1:1: could not connect to the PostgreSQL database in --to: .*Nothing was copied\.$/),
    });
  });

  /** A new embedded store of one workspace, the CLI's own when it runs as someone else. */
  async function embeddedSource(name = 'acme') {
    const dataDir = mkdtempSync(join(tmpdir(), 'cgw-copy-source-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    await prepareWorkspace(dataDir, name);
    if (LOCKED_OUT) for (const path of [dataDir, ...readdirSync(dataDir).map((file) => join(dataDir, file))]) chownSync(path, LOCKED_OUT.uid, LOCKED_OUT.gid);
    return dataDir;
  }

  /** `path` given `mode` (0o200: not to be read; 0o600: not to be entered; 0o555: not to be written in) until the test ends. */
  function lockOut(path: string, mode: number) {
    chmodSync(path, mode);
    cleanups.push(() => chmodSync(path, 0o700));
    return path;
  }

  it.each<{ what: string; arrange: () => Promise<{ to: string; env?: Record<string, string>; user?: { uid: number; gid: number } }>; code: string; message: (to: string) => string | RegExp }>([
    {
      what: 'a file holding the URL that it may not read',
      arrange: async () => {
        const { urlFile } = await target();
        chmodSync(join(urlFile, '..'), 0o755);
        return { to: lockOut(urlFile, 0o200), user: LOCKED_OUT };
      },
      code: 'BAD_USER_INPUT',
      message: (to) => `--to ${to}: cannot read the file: permission denied to this process (uid ${LOCKED_OUT?.uid ?? process.getuid!()}). Nothing was copied.`,
    },
    {
      what: 'a file in a directory that it may not enter',
      arrange: async () => {
        const { urlFile } = await target();
        lockOut(join(urlFile, '..'), 0o600);
        return { to: urlFile, user: LOCKED_OUT };
      },
      code: 'BAD_USER_INPUT',
      message: (to) => new RegExp(`^--to ${to}: cannot look it up \\(a directory of its path may not be entered\\): permission denied to this process \\(uid \\d+\\)\\. Nothing was copied\\.$`),
    },
    ...[
      ['enter', 0o600],
      ['write in', 0o555],
    ].map(([may, mode]) => ({
      what: `a directory that it may not ${may}`,
      arrange: async () => {
        const into = mkdtempSync(join(tmpdir(), 'cgw-copy-into-'));
        cleanups.push(() => rmSync(into, { recursive: true, force: true }));
        return { to: lockOut(into, mode as number), user: LOCKED_OUT };
      },
      code: 'BAD_USER_INPUT',
      message: (to: string) => new RegExp(`^--to ${to}: cannot make an embedded store in this directory: permission denied to this process \\(uid \\d+\\)\\. Nothing was copied\\.$`),
    })),
    ...[
      ['a password PostgreSQL refuses', (url: URL) => (url.password = 'wrong'), /PostgreSQL refused the user name or password in --to \(28P01\)/],
      ['a database that does not exist', (url: URL) => (url.pathname = `/cgw_none_${randomUUID().slice(0, 8)}`), /database "cgw_none_\w+" does not exist \(3D000\)/],
    ].map(([what, change, said]) => ({
      what: `a URL with ${what}`,
      arrange: async () => {
        const url = new URL((await target()).url);
        (change as (url: URL) => void)(url);
        return { to: url.toString() };
      },
      code: 'BAD_USER_INPUT',
      message: () => new RegExp(`^the PostgreSQL database \\S+ on 127\\.0\\.0\\.1:\\d+: .*${(said as RegExp).source}\\. Nothing was copied\\.$`),
    })),
    {
      what: 'a source that a running gateway holds',
      arrange: async () => {
        const { urlFile } = await target();
        const source = await embeddedSource();
        const gw = await startGateway({ DATA_DIR: source });
        cleanups.push(() => gw.close());
        return { to: urlFile, env: { DATA_DIR: source } };
      },
      code: 'UNAVAILABLE',
      message: () =>
        /^the embedded store \S+\/gateway\.db is in use by a running gateway \(it holds \S+\/gateway\.lock\): stop it first, so that the copy misses nothing it writes, then try again\. Nothing was copied\.$/,
    },
    {
      what: 'a target directory that a running gateway holds',
      arrange: async () => {
        const into = mkdtempSync(join(tmpdir(), 'cgw-copy-into-'));
        cleanups.push(() => rmSync(into, { recursive: true, force: true }));
        const gw = await startGateway({ DATA_DIR: into });
        cleanups.push(() => gw.close());
        return { to: into };
      },
      code: 'UNAVAILABLE',
      message: (to) => `the embedded store ${to}/gateway.db is in use (${to}/gateway.lock is held): stop what uses it, then try again. Nothing was copied.`,
    },
  ])('refuses $what as $code under --json, in the CLI’s own process', async ({ arrange, code, message }) => {
    const { to, env = { DATA_DIR: await embeddedSource() }, user } = await arrange();
    const refused = await cliProcess(['store', 'copy', '--to', to, '--json'], env, user);
    expect(refused).toMatchObject({ code: EXIT.failed, stdout: '' });
    const error = JSON.parse(refused.stderr.split('\n').find((line) => line.startsWith('{"error"')) ?? refused.stderr).error;
    expect(error).toEqual({ code, message: typeof message(to) === 'string' ? message(to) : expect.stringMatching(message(to)) });
    // The file, or the URL, holds a password: never its text.
    expect(refused.stderr).not.toContain('postgres://');
  });

  it('warns that a PostgreSQL source may still be in use before it opens the target', async () => {
    const source = await createTestDatabase();
    cleanups.push(source.drop);
    const config = loadConfig({ DATABASE_URL: source.url });
    await (await createStore(config, { olderSchema: 'upgrade' })).close();
    const unreachable = 'postgres://gateway:gateway@127.0.0.1:1/gateway';
    let stderr = '';
    const code = await runCli(['store', 'copy', '--to', unreachable], { env: { DATABASE_URL: source.url }, stdout: () => undefined, stderr: (text) => (stderr += text) });
    expect(code).toBe(EXIT.failed);
    expect(stderr).toMatch(/^The source is a PostgreSQL database: the copy cannot tell whether a gateway still uses it; stop every one first\.\ncampaign-gateway: the PostgreSQL database gateway on 127\.0\.0\.1:1: .*Nothing was copied\.\n$/);
  });

  it('refuses a target that holds a workspace, naming it, and changes nothing there', async () => {
    const { gw, dataDir } = await sourceGateway();
    await gw.app.close();
    const { url } = await target();
    expect((await cli(dataDir, 'store', 'copy', '--to', url)).code).toBe(EXIT.ok);
    const before = await tableCounts(url);
    const again = await cli(dataDir, 'store', 'copy', '--to', url);
    expect(again).toMatchObject({ code: EXIT.failed, stdout: '' });
    expect(again.stderr).toMatch(/already holds 1 workspace: "acme" \(id [^)]+\): a copy goes only into a store without workspaces, never into or over one\. Nothing was copied\.\n$/);
    expect(await jsonError(dataDir, 'store', 'copy', '--to', url)).toMatchObject({ exit: EXIT.failed, code: 'ALREADY_EXISTS' });
    expect(await tableCounts(url)).toEqual(before);
  });

  it('refuses, writing nothing, as the runtime role of the README, which may not write everything a copy does', async () => {
    const { gw, dataDir } = await sourceGateway();
    await gw.app.close();
    const runtime = `cgw_rt_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
    cleanups.push(async () => {
      await withAdmin((client) => client.query(`DROP ROLE IF EXISTS ${runtime}`));
    });
    const { url } = await target();
    // The tables made by their owner, as a first start makes them; the runtime role granted what the README says.
    await (await createStore({ ...gw.config, databaseUrl: url }, { olderSchema: 'upgrade' })).close();
    const database = new URL(url).pathname.slice(1);
    const owner = decodeURIComponent(new URL(url).username);
    await withAdmin((client) => client.query(readmeGrants({ runtime, owner, schema: 'public', database, password: 'runtime' })), url);
    const runtimeUrl = new URL(url);
    runtimeUrl.username = runtime;
    runtimeUrl.password = 'runtime';

    const refused = await cli(dataDir, 'store', 'copy', '--to', runtimeUrl.toString());
    expect(refused).toMatchObject({ code: EXIT.failed, stdout: '' });
    expect(refused.stderr).toMatch(
      /: the role in --to may not write every row a copy writes \(it lacks [^)]*UPDATE on sequence public\.security_events_seq_seq[^)]*\): run the copy as the role that owns the tables\. Nothing was copied\.\n$/,
    );
    expect(await jsonError(dataDir, 'store', 'copy', '--to', runtimeUrl.toString())).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT' });
    expect(Object.values(await tableCounts(url)).every((count) => count === 0)).toBe(true);
  });

  /**
   * An embedded store of a small workspace without jobs, whose line says the copy is under way, then one of 20,000
   * jobs and 40,000 events, of many pages: a copy that stops at one of them holds part of the store. How far the copy
   * gets before the test acts is not left to the machine's speed: see whileCopyWaitsOn.
   */
  async function twoWorkspaces() {
    const dataDir = mkdtempSync(join(tmpdir(), 'cgw-copy-large-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    await prepareWorkspace(dataDir, 'a-small');
    seedFinishedJobs(dataDir, await prepareWorkspace(dataDir, 'b-large'), 0, 20_000);
    return dataDir;
  }

  /**
   * `table` of the target `url` locked before a copy starts, so that the copy waits on it when it comes to the
   * table, however fast the machine and however late the test acts. The function it returns does `during` once the
   * copy waits, then releases the lock.
   */
  async function whileCopyWaitsOn(url: string, table: ExportTable) {
    await (await createStore({ ...loadConfig({}), databaseUrl: url }, { olderSchema: 'upgrade' })).close();
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    cleanups.push(() => locker.end());
    await locker.query(`BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    const { pid } = (await locker.query('SELECT pg_backend_pid() AS pid')).rows[0];
    return async (during: (locker: { pid: number }) => Promise<void>) => {
      try {
        await waitFor(() => waitingOnLock(url));
        await during({ pid });
      } finally {
        await locker.query('COMMIT');
      }
    };
  }

  /**
   * `signal` sent to `child` (or to its whole process group), then its line that it stops awaited (or its end, should
   * it never say so).
   */
  async function signalled(child: ChildProcess, signal: NodeJS.Signals, toGroup = false) {
    let stderr = '';
    child.stderr!.on('data', (text: string) => (stderr += text));
    if (toGroup) process.kill(-child.pid!, signal);
    else child.kill(signal);
    await waitFor(async () => stderr.includes(`${signal}: stopping after`) || child.exitCode !== null || child.signalCode !== null);
  }

  it('says what ended the connection when the target database goes away mid-copy', async () => {
    const dataDir = await twoWorkspaces();
    const { url } = await target();
    const database = new URL(url).pathname.slice(1);
    // "a-small" has no jobs: the copy waits at the first page of "b-large"'s, mid-copy, when the database goes away.
    const held = await whileCopyWaitsOn(url, 'jobs');
    const failed = await cliProcessActedOn(['store', 'copy', '--to', url], { DATA_DIR: dataDir }, /\n {2}"a-small": /, () =>
      held((locker) =>
        withAdmin(async (client) => {
          await client.query(`ALTER DATABASE ${database} ALLOW_CONNECTIONS false`);
          await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid NOT IN (pg_backend_pid(), $2)', [database, locker.pid]);
        }),
      ),
    );
    expect(failed.code, failed.stderr).toBe(EXIT.failed);
    // The server's words and code, not the gateway's "Service unavailable"; each sentence starts with a capital.
    expect(failed.stderr).toMatch(
      new RegExp(`\\ncampaign-gateway: the copy stopped: [^\\n]*\\((57P01|55000|57P03)\\)\\. The PostgreSQL database ${database} on \\S+ holds part of the store, on which no gateway may start: drop the database`),
    );
    expect(failed.stderr).not.toContain('Service unavailable');
  }, 60_000);

  it.each([
    ['SIGINT', 130, 'node'],
    ['SIGTERM', 143, 'node'],
    // npm's own process signalled: its script hands the signal on, so the copy does not go on behind npm's exit.
    ['SIGTERM', 143, 'npm'],
    // A terminal's Ctrl-C: the copy gets it from the terminal and again from npm, and takes the two for one.
    ['SIGINT', 130, 'npm in its own process group'],
  ] as const)('stops on %s after the page it writes, saying what the target holds and how to start again (exit %i, run by %s)', async (signal, exit, via) => {
    const dataDir = await twoWorkspaces();
    const { url } = await target();

    // Told while it waits to write the first page of "b-large"'s jobs ("a-small" has none): that page, and no other.
    const held = await whileCopyWaitsOn(url, 'jobs');
    const stopped = await cliProcessActedOn(['store', 'copy', '--to', url], { DATA_DIR: dataDir }, /\n {2}"a-small": /, (child) => held(() => signalled(child, signal, via === 'npm in its own process group')), via);
    expect(stopped.code, stopped.stderr).toBe(exit);
    const database = new URL(url).pathname.slice(1);
    expect(stopped.stderr).toContain(`\n${signal}: stopping after the page being written…\n`);
    expect(stopped.stderr).toMatch(
      new RegExp(`\\ncampaign-gateway: the copy stopped on ${signal}, after the page it was writing\\. The PostgreSQL database ${database} on [^ ]+ holds part of the store, on which no gateway may start: drop the database`),
    );
    const counts = await tableCounts(url);
    expect(counts.workspaces).toBe(2);
    expect(counts.jobs).toBeLessThan(20_000);
    const source = new Database(databaseFile(dataDir), { readonly: true });
    expect(source.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(20_000);
    source.close();
  }, 60_000);

  it.each([
    // Sooner, it would be taken for the first one again.
    ['the same signal a second or more after the first', 'SIGINT', 1_000, 130],
    // A supervisor's SIGTERM after a Ctrl-C is no echo of it, however soon it comes.
    ['a different signal right after the first', 'SIGTERM', 0, 143],
  ] as const)('ends at once on %s, the target still marked', async (_case, second, afterMs, exit) => {
    const dataDir = await twoWorkspaces();
    const { url } = await target();
    const held = await whileCopyWaitsOn(url, 'jobs');
    const ended = await cliProcessActedOn(['store', 'copy', '--to', url], { DATA_DIR: dataDir }, /\n {2}"a-small": /, (child) =>
      held(async () => {
        await signalled(child, 'SIGINT');
        // The copy still waits on the lock: only the second signal can end it now.
        await setTimeout(afterMs);
        child.kill(second);
        await waitFor(async () => child.exitCode !== null || child.signalCode !== null);
      }),
    );
    expect(ended.code, ended.stderr).toBe(exit);
    expect(ended.stderr).toContain('\nSIGINT: stopping after the page being written…\n');
    expect(ended.stderr).not.toContain('the copy stopped');
    expect(await jsonError(dataDir, 'store', 'copy', '--to', url)).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT', message: expect.stringContaining(' holds part of a store') });
  }, 60_000);

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('stops on %s while counting the stores, leaving the target marked and saying how to start again (exit %i)', async (signal, exit) => {
    // One workspace and no idempotency key: the copy never writes to that table, only counts it.
    const dataDir = await embeddedSource();
    const { url } = await target();
    const database = new URL(url).pathname.slice(1);
    // Told while the count of idempotency_keys waits.
    const held = await whileCopyWaitsOn(url, 'idempotency_keys');
    const stopped = await cliProcessActedOn(['store', 'copy', '--to', url], { DATA_DIR: dataDir }, /\n {2}"acme": /, (child) => held(() => signalled(child, signal)));
    expect(stopped.code, stopped.stderr).toBe(exit);
    expect(stopped.stderr).toContain("\nEvery row written: counting each table's rows in both stores…\n");
    expect(stopped.stderr).toContain(`\n${signal}: stopping after the table being counted…\n`);
    expect(stopped.stderr).toMatch(
      new RegExp(
        `\\ncampaign-gateway: the copy stopped on ${signal}, while counting the rows of each table in both stores\\. The PostgreSQL database ${database} on \\S+ holds every row, not yet counted against the source, on which no gateway may start: drop the database .*then run the copy again\\.\\n$`,
      ),
    );
    // Still marked: neither a gateway nor another copy takes it.
    await expect(startGateway({ DATABASE_URL: url })).rejects.toThrow(/holds part of a store: a store copy into it started at /);
    expect(await jsonError(dataDir, 'store', 'copy', '--to', url)).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT', message: expect.stringContaining(' holds part of a store') });
  }, 60_000);

  it('leaves behind the rows of an erased workspace, saying how many, and counts only the rows of workspaces', async () => {
    const { gw, dataDir, ws } = await sourceGateway();
    await gw.app.close();
    // An event a request wrote while its workspace was being erased: events have no foreign key, so it outlived it.
    const db = new Database(join(dataDir, 'gateway.db'));
    const stray = eventFixture('erased-workspace', { apiKeyId: ws.keyId });
    db.prepare("INSERT INTO security_events (id, workspace_id, type, occurred_at, details) VALUES (?, ?, ?, ?, '{}')").run(stray.id, stray.workspaceId, stray.type, stray.occurredAt.getTime());
    db.close();
    const { url } = await target();
    const copied = await cli(dataDir, 'store', 'copy', '--to', url, '--json');
    expect(copied.code, copied.stderr).toBe(EXIT.ok);
    const summary = JSON.parse(copied.stdout);
    expect(summary.orphaned).toEqual({ security_events: 1 });
    expect(await tableCounts(url)).toEqual(summary.copied);
    const events = await withAdmin((client) => client.query('SELECT count(*) FROM security_events WHERE id = $1', [stray.id]), url);
    expect(Number(events.rows[0].count)).toBe(0);

    const into = mkdtempSync(join(tmpdir(), 'cgw-copy-into-'));
    cleanups.push(() => rmSync(into, { recursive: true, force: true }));
    const text = await cli(dataDir, 'store', 'copy', '--to', into);
    expect(text.code, text.stderr).toBe(EXIT.ok);
    expect(text.stdout).toContain('\nNot copied, rows of erased workspaces (their workspace_id names no workspace): security_events 1.\n');
  });

  it('fails loudly when the stores count different rows of workspaces after the copy', async () => {
    const { gw } = await sourceGateway();
    await gw.app.close();
    const { url } = await target();
    const source = await createStore(gw.config, { olderSchema: 'refuse' });
    cleanups.push(() => source.close());
    const real = await createStore({ ...gw.config, databaseUrl: url }, { olderSchema: 'upgrade' });
    cleanups.push(() => real.close());
    // A target that loses the first event of every page it is given: no real store can be made to.
    const losing = new Proxy(real, {
      get(store, name) {
        if (name === 'importRows') return (table: ExportTable, rows: ExportRows[ExportTable][]) => store.importRows(table, table === 'security_events' ? rows.slice(1) : rows);
        const value = Reflect.get(store, name);
        return typeof value === 'function' ? value.bind(store) : value;
      },
    });
    const events = (await source.countRows('security_events')).ofWorkspaces;
    const copy = copyStore(source, losing, () => undefined);
    await expect(copy).rejects.toThrow(CountMismatch);
    await expect(copy).rejects.toThrow(`security_events: ${events} in the source, ${events - 1} in the target`);
  });

  it.each(['PostgreSQL', 'directory'] as const)(
    'leaves a %s target that stopped half-way marked, so that no gateway starts on it and no copy goes into it',
    async (kind) => {
      const { gw, dataDir } = await sourceGateway();
      await gw.app.close();
      let env: Record<string, string>;
      if (kind === 'PostgreSQL') {
        env = { DATABASE_URL: (await target()).url };
      } else {
        env = { DATA_DIR: mkdtempSync(join(tmpdir(), 'cgw-copy-into-')) };
        cleanups.push(() => rmSync(env.DATA_DIR, { recursive: true, force: true }));
      }
      const targetConfig = loadConfig(env);
      const source = await createStore(gw.config, { olderSchema: 'refuse' });
      cleanups.push(() => source.close());
      const real = await createStore(targetConfig, { olderSchema: 'upgrade' });
      // A target whose connection ends at the first page of events, as a database that went away mid-copy.
      const failing = new Proxy(real, {
        get(store, name) {
          if (name === 'importRows') {
            return <T extends ExportTable>(table: T, rows: ExportRows[T][]) => (table === 'security_events' ? Promise.reject(new Error('connection ended')) : store.importRows(table, rows));
          }
          const value = Reflect.get(store, name);
          return typeof value === 'function' ? value.bind(store) : value;
        },
      });
      await expect(copyStore(source, failing, () => undefined)).rejects.toThrow('connection ended');
      await real.close();

      const refusal = /holds part of a store: a store copy into it started at \S+ and did not finish, so no gateway may start on it\. Start on the store it was copied from, or /;
      await expect(startGateway(env)).rejects.toThrow(refusal);
      const listed = await runCli(['workspaces', 'list'], { env, stdout: () => undefined, stderr: (text) => expect(text).toMatch(refusal) });
      expect(listed).toBe(EXIT.failed);
      const again = await cli(dataDir, 'store', 'copy', '--to', kind === 'PostgreSQL' ? env.DATABASE_URL : env.DATA_DIR);
      expect(again).toMatchObject({ code: EXIT.failed, stdout: '' });
      expect(again.stderr).toMatch(/ holds part of a store \(a copy into it started at \S+ and did not finish\), on which no gateway may start: .* Nothing was copied\.\n$/);
      expect(await jsonError(dataDir, 'store', 'copy', '--to', kind === 'PostgreSQL' ? env.DATABASE_URL : env.DATA_DIR)).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT', message: expect.stringContaining(' holds part of a store') });
    },
    60_000,
  );

  it('counts a table whatever statement timeout the pool has, as a count of a very large store outlasts it', async () => {
    const { url } = await target();
    // A pooler in transaction mode takes the role's statement_timeout, here 250 ms: long enough for the statements that
    // open the count's transaction on a busy machine (1 ms cancelled its BEGIN), and the count waits on a lock past it.
    const timeoutMs = 250;
    const bounded = new URL(url);
    bounded.searchParams.set('options', `-c statement_timeout=${timeoutMs}ms`);
    const store = await createStore({ ...loadConfig({}), databaseUrl: url }, { olderSchema: 'upgrade' });
    await store.close();
    const pooled = new PostgresStore({ connectionString: bounded.toString(), poolMode: 'transaction', poolSize: 1 });
    cleanups.push(() => pooled.close());
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    cleanups.push(() => locker.end());
    await locker.query('BEGIN; LOCK TABLE security_events IN ACCESS EXCLUSIVE MODE');
    let settled = false;
    const counting = pooled.countRows('security_events').finally(() => (settled = true));
    counting.catch(() => undefined);
    await waitFor(async () => {
      if (settled) return true;
      // Not on the locker's connection: its transaction would see one snapshot of pg_stat_activity.
      return waitingOnLock(url, 2 * timeoutMs);
    });
    await locker.query('COMMIT');
    expect(await counting).toEqual({ ofWorkspaces: 0, orphaned: 0 });
  });

  it('copies into an embedded store in a directory too', async () => {
    const { gw, dataDir, ws, jobId } = await sourceGateway();
    await gw.app.close();
    // A request a stopped gateway never finished: its key reserved, with no job; and a job it was running. A gateway's
    // start frees the one and ends the other's lease; the copy, which leaves its source as it was, must do neither.
    const leftOver = () => {
      const db = new Database(join(dataDir, 'gateway.db'), { readonly: true });
      try {
        return {
          reservations: Number(db.prepare('SELECT count(*) FROM idempotency_keys WHERE job_id IS NULL').pluck().get()),
          lease: db.prepare('SELECT lease_owner AS owner, lease_expires_at AS endsAt FROM jobs WHERE id = ?').get(jobId),
        };
      } finally {
        db.close();
      }
    };
    const leaseEnd = Date.now() + 3_600_000;
    const writable = new Database(join(dataDir, 'gateway.db'));
    writable
      .prepare("INSERT INTO idempotency_keys (workspace_id, key, request_hash, job_id, created_at, expires_at) VALUES (?, 'unfinished', 'hash', NULL, ?, ?)")
      .run(ws.workspace.id, Date.now(), Date.now() + 86_400_000);
    writable.prepare("UPDATE jobs SET status = 'RUNNING', finished_at = NULL, lease_owner = 'killed', lease_expires_at = ? WHERE id = ?").run(leaseEnd, jobId);
    writable.close();
    const before = { reservations: 1, lease: { owner: 'killed', endsAt: leaseEnd } };
    expect(leftOver()).toEqual(before);
    const into = mkdtempSync(join(tmpdir(), 'cgw-copy-into-'));
    cleanups.push(() => rmSync(into, { recursive: true, force: true }));
    const copied = await cli(dataDir, 'store', 'copy', '--to', into, '--json');
    expect(copied.code, copied.stderr).toBe(EXIT.ok);
    expect(JSON.parse(copied.stdout).runningJobs).toBe(1);
    // A finished copy is no longer marked: a gateway opens it.
    await (await createStore({ ...gw.config, dataDir: into }, { olderSchema: 'refuse' })).close();
    const db = new Database(join(into, 'gateway.db'), { readonly: true });
    try {
      for (const table of EXPORT_TABLES) expect(Number(db.prepare(`SELECT count(*) FROM ${table}`).pluck().get())).toBe(JSON.parse(copied.stdout).copied[table]);
    } finally {
      db.close();
    }
    expect(leftOver()).toEqual(before);

    // Every row copied, but the summary lost: exit 3, not a failure a script would retry into a full target.
    const again = mkdtempSync(join(tmpdir(), 'cgw-copy-lost-'));
    cleanups.push(() => rmSync(again, { recursive: true, force: true }));
    const lost = await cliProcessWritingTo('/dev/full', ['store', 'copy', '--to', again], { DATA_DIR: dataDir });
    expect(lost.code, lost.stderr).toBe(EXIT.outputLost);
    expect(lost.stderr).toMatch(/\ncampaign-gateway: the store was copied, and its counts checked, but the summary could not be written \(ENOSPC[^)]*\)\n$/);
  }, 60_000);
});
