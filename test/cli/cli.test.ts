import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { POSTGRES_MIGRATIONS } from '../../src/adapters/postgres/migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/adapters/sqlite/migrations.js';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { createStore, type StoreOptions } from '../../src/app.js';
import { EXIT, runCli, type CliIo } from '../../src/cli/commands.js';
import { loadConfig } from '../../src/config.js';
import { AdminService, ROTATION_ATTEMPTS } from '../../src/domain/admin.js';
import { newId } from '../../src/domain/ids.js';
import { hashApiKey } from '../../src/domain/keys.js';
import { systemClock, type Clock } from '../../src/domain/ports.js';
import { graphql, startGateway, waitFor, type TestGateway } from '../support/gateway.js';
import { ManualClock } from '../support/clock.js';
import { cliProcess, cliProcessWithFileSizeLimit, cliProcessWithoutStdout, cliProcessWritingTo } from '../support/cli.js';
import { eventFixture, jobFixture } from '../support/fixtures.js';
import { createTestDatabase, TEST_DATABASE_URL, withAdmin } from '../support/postgres.js';
import { rest } from '../support/transports.js';

const KEY = /cgw_[0-9A-Za-z]{38}/g;

/** The CLI run in this process, with what it prints. */
async function runCaptured(argv: string[], io: Omit<CliIo, 'stdout' | 'stderr'>) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { ...io, stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

describe('the CLI', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-cli-'));
  const clock = new ManualClock(new Date('2026-06-01T00:00:00.000Z'));
  let gw: TestGateway;

  /** The CLI run at the time `at` says, which is the gateway's unless a test needs another, on the gateway's store unless told. */
  const cliAt = (at: Clock, argv: string[], dir = dataDir) => runCaptured(argv, { env: { DATA_DIR: dir }, clock: at });
  const cli = (...argv: string[]) => cliAt(clock, argv);
  const cliJsonAt = async (at: Clock, argv: string[]) => {
    const result = await cliAt(at, [...argv, '--json']);
    expect(result).toMatchObject({ code: EXIT.ok, stderr: '' });
    return JSON.parse(result.stdout);
  };
  const cliJson = (...argv: string[]) => cliJsonAt(clock, argv);

  beforeAll(async () => {
    // The gateway and the CLI share the store, as an operator's would.
    gw = await startGateway({ DATA_DIR: dataDir, TRUST_PROXY: '127.0.0.1' }, { clock });
  });

  afterAll(async () => {
    await gw.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('creates and lists workspaces', async () => {
    const created = await cli('workspaces', 'create', 'acme');
    expect(created.code).toBe(EXIT.ok);
    expect(created.stdout).toMatch(/^Created workspace "acme" \(id [0-9a-f-]{36}\)\.\n$/);
    const listed = await cli('workspaces', 'list');
    expect(listed.stdout).toMatch(/^ID +NAME +CREATED\n[0-9a-f-]{36} +acme +2026-06-01T00:00:00\.000Z\n$/);
    expect(await cliJson('workspaces', 'list')).toEqual([{ id: expect.any(String), name: 'acme', createdAt: '2026-06-01T00:00:00.000Z' }]);
    expect(await cli('workspaces', 'create', 'acme')).toEqual({ code: EXIT.failed, stdout: '', stderr: "campaign-gateway: Workspace 'acme' already exists\n" });
  });

  it('refuses a workspace whose name looks like one that exists, naming it', async () => {
    const existing = async (name: string) => (await cliJson('workspaces', 'create', name)) as { id: string; name: string };
    const cafe = await existing('Caf\u00e9 Lumière');
    const store = await existing('Ｎorthwind');
    const count = async () => (await cliJson('workspaces', 'list')).length;
    const before = await count();
    for (const [lookalike, original] of [
      ['CAFÉ LUMIÈRE', cafe],
      ['café lumière', cafe],
      ['northwind', store],
      ['NORTHWIND', store],
      // Accents folded: a name that differs only in them is one name.
      ['Cafe Lumiere', cafe],
      ['Nörthwind', store],
    ] as const) {
      expect(await cli('workspaces', 'create', lookalike)).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: expect.stringContaining(`looks like workspace '${original.name}' (id ${original.id}): choose a name that cannot be mistaken for it\n`),
      });
    }
    // Kept composed, so the name as typed either way is that workspace.
    expect(await cli('workspaces', 'create', 'Cafe\u0301 Lumière')).toMatchObject({ stderr: "campaign-gateway: Workspace 'Café Lumière' already exists\n" });
    expect(cafe.name).toBe('Caf\u00e9 Lumière');
    const key = await cliJson('keys', 'create', '--workspace', 'Cafe\u0301 Lumière', '--name', 'k', '--permissions', 'campaigns.list');
    expect(key.workspace).toEqual({ id: cafe.id, name: cafe.name });
    expect(await count()).toBe(before);
  });

  it.each([
    ['Latin and Cyrillic', '\u0410cme', 'Latin and Cyrillic'],
    ['Latin and Greek', 'Ac\u03bce 2', 'Latin and Greek'],
    ['Cyrillic and Greek', '\u0410\u03b2\u0432', 'Cyrillic and Greek'],
  ])('refuses a workspace or key name mixing %s letters, which look alike', async (_label, name, scripts) => {
    const workspaceCount = (await cliJson('workspaces', 'list')).length;
    expect(await cli('workspaces', 'create', name)).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: A workspace name must not mix ${scripts} letters, which look alike: '${name}'\n`,
    });
    expect(await cli('keys', 'create', '--workspace', 'acme', '--name', name, '--permissions', 'campaigns.list')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: A key name must not mix ${scripts} letters, which look alike: '${name}'\n`,
    });
    expect((await cliJson('workspaces', 'list')).length).toBe(workspaceCount);
  });

  it('takes a name in one script, with digits, spaces and punctuation of none', async () => {
    for (const name of ['\u041c\u043e\u0441\u043a\u0432\u0430-2', '\u0391\u03b8\u03ae\u03bd\u03b1 & 2.', '\u0939\u093f\u0928\u094d\u0926\u0940 1', '\u6771\u4eac Acme']) {
      expect((await cliJson('workspaces', 'create', name)).name).toBe(name);
    }
    // Devanagari's vowel signs are letters, not accents: a name without one is another name.
    expect((await cliJson('workspaces', 'create', '\u0939\u0928\u094d\u0926 1')).name).toBe('\u0939\u0928\u094d\u0926 1');
  });

  it.each([
    ['a zero-width space', 'ws\u200b', "'ws\\u200B'"],
    ['a soft hyphen', 'wo\u00adrk', "'wo\\u00ADrk'"],
    ['a word joiner', 'a\u2060b', "'a\\u2060b'"],
    ['a byte order mark', 'a\ufeffb', "'a\\uFEFFb'"],
    ['a left-to-right mark', 'a\u200eb', "'a\\u200Eb'"],
    ['a zero-width joiner at the end', 'ws\u200d', "'ws\\u200D'"],
    ['a zero-width non-joiner before a space', 'ws\u200c team', "'ws\\u200C team'"],
  ])('refuses %s in a workspace or key name', async (_label, name, shown) => {
    expect(await cli('workspaces', 'create', name)).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: A workspace name must not hold invisible characters: ${shown}\n`,
    });
    expect(await cli('keys', 'create', '--workspace', 'acme', '--name', name, '--permissions', 'campaigns.list')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: A key name must not hold invisible characters: ${shown}\n`,
    });
  });

  it('keeps the joiners that are part of the text: an emoji sequence, Persian spelling', async () => {
    for (const name of ['\u{1F468}\u200d\u{1F469}\u200d\u{1F467} team', '\u2764\ufe0f\u200d\u{1F525} fans', '\u062a\u06cc\u0645\u200c\u0641\u0631\u0648\u0634']) {
      expect((await cliJson('workspaces', 'create', name)).name).toBe(name);
      expect((await cliJson('keys', 'create', '--workspace', name, '--name', name, '--permissions', 'campaigns.list')).name).toBe(name);
    }
  });

  it('counts a name in characters: 100 emoji are a name, 101 are not', async () => {
    const emoji = (n: number) => '\u{1F680}'.repeat(n);
    expect((await cliJson('workspaces', 'create', emoji(100))).name).toBe(emoji(100));
    expect((await cliJson('keys', 'create', '--workspace', emoji(100), '--name', `${emoji(98)}❤️`, '--permissions', 'campaigns.list')).name).toBe(`${emoji(98)}❤️`);
    expect(await cli('workspaces', 'create', emoji(101))).toMatchObject({ code: EXIT.failed, stderr: 'campaign-gateway: A workspace name is 1 to 100 printable characters\n' });
    expect(await cli('keys', 'create', '--workspace', emoji(100), '--name', emoji(101), '--permissions', 'campaigns.list')).toMatchObject({
      code: EXIT.failed,
      stderr: 'campaign-gateway: A key name is 1 to 100 printable characters\n',
    });
  });

  it('creates a key, shows it once, and the key works against the gateway', async () => {
    const created = await cli('keys', 'create', '--workspace', 'acme', '--name', 'ci deploy', '--permissions', 'campaigns.duplicate, campaigns.list');
    expect(created.code).toBe(EXIT.ok);
    const keys: string[] = created.stdout.match(KEY) ?? [];
    expect(keys).toHaveLength(1);
    expect(created.stdout).toContain('shown only once');
    expect(created.stdout).toContain('Permissions: campaigns.duplicate, campaigns.list');
    expect(created.stdout).toContain('Expires:     never');
    const campaigns = await graphql(gw.baseUrl, keys[0], '{ campaigns { edges { node { id } } } }');
    expect(campaigns.status).toBe(200);
    expect(campaigns.body.errors).toBeUndefined();

    const listed = await cli('keys', 'list', '--workspace', 'acme');
    expect(listed.stdout).not.toMatch(KEY);
    expect(listed.stdout).toContain(`${keys[0].slice(0, 10)}…`);
    expect(listed.stdout.split('\n')[0].split(/ {2,}/)).toEqual(['ID', 'NAME', 'WORKSPACE', 'PERMISSIONS', 'KEY', 'STATUS', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED', 'ALLOWED IPS']);
    // The gateway records a key's use after answering: the listing shows it once that write has landed.
    const listedKey = await waitFor(async () => {
      const [key] = await cliJson('keys', 'list', '--workspace', 'acme');
      return key.lastUsedAt !== null && key;
    });
    expect(listedKey).toMatchObject({
      name: 'ci deploy',
      workspace: { name: 'acme' },
      permissions: ['campaigns.duplicate', 'campaigns.list'],
      prefix: keys[0].slice(0, 10),
      status: 'active',
      createdAt: '2026-06-01T00:00:00.000Z',
      expiresAt: null,
      revokedAt: null,
      allowedCidrs: null,
    });
    expect(JSON.stringify(listedKey)).not.toMatch(KEY);
  });

  it('sets expiry and an IP allowlist', async () => {
    const inThirtyDays = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'temp', '--permissions', 'campaigns.list', '--expires-in', '30d', '--allow-ip', '10.0.0.0/8,::1');
    expect(inThirtyDays).toMatchObject({ expiresAt: '2026-07-01T00:00:00.000Z', allowedCidrs: ['10.0.0.0/8', '::1/128'], key: expect.stringMatching(/^cgw_/) });
    const at = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'until', '--permissions', 'campaigns.list', '--expires-at', '2026-12-31T00:00:00Z');
    expect(at.expiresAt).toBe('2026-12-31T00:00:00.000Z');
    // As other tools write them: Python's isoformat with microseconds (kept to the millisecond), an offset without its colon.
    const written = async (expiresAt: string) =>
      (await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'until', '--permissions', 'campaigns.list', '--expires-at', expiresAt)).expiresAt;
    expect(await written('2027-01-31T00:00:00.123456+00:00')).toBe('2027-01-31T00:00:00.123Z');
    expect(await written('2027-01-31T09:00:00+0900')).toBe('2027-01-31T00:00:00.000Z');
    expect(await written('2027-01-31T09:00:00.5-0130')).toBe('2027-01-31T10:30:00.500Z');

    const query = '{ campaigns { edges { node { id } } } }';
    const from = (ip: string) => ({ headers: { 'x-forwarded-for': ip, 'content-type': 'application/json' } });
    const inside = await rest.job(gw.baseUrl, inThirtyDays.key, 'none', from('10.9.8.7'));
    expect(inside.status).toBe(404);
    const outside = await rest.job(gw.baseUrl, inThirtyDays.key, 'none', from('192.0.2.1'));
    expect(outside.status).toBe(403);
    expect((await graphql(gw.baseUrl, inThirtyDays.key, query)).status).toBe(403);
  });

  it('lists a key as expired from its expiry on, in text and JSON', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'short-lived', '--permissions', 'campaigns.list', '--expires-in', '90s');
    const statusAt = async (at: Clock) => {
      const text = await cliAt(at, ['keys', 'list', '--workspace', 'acme']);
      const row = text.stdout.split('\n').find((line) => line.startsWith(created.id));
      const listed = (await cliJsonAt(at, ['keys', 'list', '--workspace', 'acme'])).find((key: { id: string }) => key.id === created.id);
      return { text: row?.split(/ {2,}/)[5], json: listed.status };
    };
    expect(await statusAt(clock)).toEqual({ text: 'active', json: 'active' });
    // Later for the CLI only: the gateway shares `clock` with the other tests.
    const expiry = new ManualClock(new Date(created.expiresAt));
    expect(await statusAt(expiry)).toEqual({ text: 'expired', json: 'expired' });
  });

  it('revokes a key at once, and says so when it already was', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'leaked', '--permissions', 'campaigns.list');
    expect((await graphql(gw.baseUrl, created.key, '{ campaigns { edges { node { id } } } }')).status).toBe(200);
    const revoked = await cli('keys', 'revoke', created.id);
    expect(revoked).toEqual({ code: EXIT.ok, stderr: '', stdout: `Revoked key "leaked" (id ${created.id}); requests with it are refused from now on.\n` });
    expect((await graphql(gw.baseUrl, created.key, '{ campaigns { edges { node { id } } } }')).status).toBe(401);
    expect((await cli('keys', 'revoke', created.id)).stdout).toMatch(/was already revoked at 2026-06-01T00:00:00.000Z/);
    expect((await cliJson('keys', 'list')).find((key: any) => key.id === created.id).status).toBe('revoked');
  });

  it('deletes a workspace and every row of it only once its name is confirmed, and the running gateway refuses its key at once', async () => {
    const workspace = await cliJson('workspaces', 'create', 'erased customer');
    const key = (await cliJson('keys', 'create', '--workspace', workspace.id, '--name', 'reader', '--permissions', 'campaigns.list,security_events.read')).key;
    const events = async () => (await graphql(gw.baseUrl, key, '{ securityEvents { edges { node { type ip } } } }')).body.data?.securityEvents.edges.map((edge: any) => edge.node);
    // A refusal recorded with the client's address, as the workspace's events keep them.
    expect((await rest.duplicate(gw.baseUrl, key, { campaignId: 'c', name: 'copy' })).status).toBe(403);
    await waitFor(async () => (await events()).length === 2);

    expect(await cli('workspaces', 'delete', workspace.id, '--confirm', 'erased custmer')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: The confirmation 'erased custmer' is not the name of workspace ${workspace.id}: nothing was deleted\n`,
    });
    expect(await events()).toEqual([{ type: 'PERMISSION_DENIED', ip: '127.0.0.1' }, { type: 'API_KEY_CREATED', ip: null }]);

    expect(await cli('workspaces', 'delete', workspace.id, '--confirm', 'erased customer')).toEqual({
      code: EXIT.ok,
      stderr: '',
      stdout: [
        `Deleted workspace "erased customer" (id ${workspace.id}) and every row of it. Rows deleted:`,
        '  idempotency_keys  0',
        '  security_events   2',
        '  jobs              0',
        '  campaigns         0',
        '  tags              0',
        '  api_keys          1',
        '  workspaces        1',
        '',
      ].join('\n'),
    });
    expect((await graphql(gw.baseUrl, key, '{ campaigns { edges { node { id } } } }')).status).toBe(401);
    expect((await cliJson('workspaces', 'list')).map((listed: { id: string }) => listed.id)).not.toContain(workspace.id);
    expect(await cli('workspaces', 'delete', workspace.id, '--confirm', 'erased customer')).toEqual({ code: EXIT.failed, stdout: '', stderr: `campaign-gateway: No workspace '${workspace.id}'\n` });
  });

  it('takes a confirmation with its accents in either Unicode form, and shows what cannot be seen in a name it refuses', async () => {
    const workspace = await cliJson('workspaces', 'create', 'Caf\u00e9 cr\u00e8me');
    expect(await cli('workspaces', 'create', 'q\u0301 shop')).toMatchObject({ code: EXIT.ok });
    expect(await cli('workspaces', 'create', 'q\u0301 shop')).toEqual({ code: EXIT.failed, stdout: '', stderr: "campaign-gateway: Workspace 'q\\u0301 shop' already exists\n" });
    expect(await cli('workspaces', 'delete', 'Caf\u00e9 cr\u00e8me\u200b', '--confirm', 'x')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: "campaign-gateway: No workspace 'Caf\u00e9 cr\u00e8me\\u200B'\n",
    });
    expect(await cli('workspaces', 'delete', workspace.id, '--confirm', 'Cafe\u0301 cre\u0300me')).toMatchObject({
      code: EXIT.ok,
      stdout: expect.stringContaining(`Deleted workspace "Caf\u00e9 cr\u00e8me" (id ${workspace.id})`),
    });
  });

  it('refuses to delete a workspace while one of its jobs runs, and deletes it with the job once the lease has ended', async () => {
    const workspace = await cliJson('workspaces', 'create', 'busy customer');
    // Due long after the gateway's time, so that only the claim below, another instance's, takes it.
    const due = new Date('2027-01-01T00:00:00.000Z');
    const leaseEnd = new Date('2027-01-01T00:01:00.000Z');
    const job = jobFixture(workspace.id, { runAt: due, createdAt: clock.now(), updatedAt: clock.now() });
    await gw.app.store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
    expect((await gw.app.store.claimJobs('another instance', 1, due, leaseEnd)).map((claimed) => claimed.id)).toEqual([job.id]);

    expect(await cli('workspaces', 'delete', 'busy customer', '--confirm', 'busy customer')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr:
        "campaign-gateway: Workspace 'busy customer' has 1 job running, leased until 2027-01-01T00:01:00.000Z: nothing was deleted. " +
        'Try again once it has finished, or after its lease if its worker has stopped\n',
    });
    expect(await gw.app.store.getJob(workspace.id, job.id)).toMatchObject({ status: 'RUNNING' });
    expect(await cliJsonAt(new ManualClock(leaseEnd), ['workspaces', 'delete', 'busy customer', '--confirm', 'busy customer'])).toEqual({
      id: workspace.id,
      name: 'busy customer',
      deleted: { idempotency_keys: 0, security_events: 1, jobs: 1, campaigns: 0, tags: 0, api_keys: 0, workspaces: 1 },
    });
    expect(await gw.app.store.getJob(workspace.id, job.id)).toBeNull();
  });

  it('exports every row of a workspace as JSON Lines, to a new file only its owner reads or to stdout, while the gateway runs', async () => {
    const workspace = await cliJson('workspaces', 'create', 'exported customer');
    const key = (await cliJson('keys', 'create', '--workspace', workspace.id, '--name', 'reader', '--permissions', 'campaigns.list,security_events.read')).key;
    expect((await rest.duplicate(gw.baseUrl, key, { campaignId: 'c', name: 'copy' })).status).toBe(403);
    await waitFor(async () => (await graphql(gw.baseUrl, key, '{ securityEvents { edges { node { type } } } }')).body.data?.securityEvents.edges.length === 2);
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-export-'));
    const file = join(parent, 'export.jsonl');
    try {
      expect(await cli('workspaces', 'export', 'exported customer', '--out', file)).toEqual({
        code: EXIT.ok,
        stderr: '',
        stdout: [
          `Exported workspace "exported customer" (id ${workspace.id}) to ${file}. Rows exported:`,
          '  workspaces        1',
          '  api_keys          1',
          '  tags              0',
          '  campaigns         0',
          '  jobs              0',
          '  security_events   2',
          '  idempotency_keys  0',
          '',
        ].join('\n'),
      });
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const text = readFileSync(file, 'utf8');
      const lines = text.trimEnd().split('\n').map((line) => JSON.parse(line));
      expect(lines.map((line) => [line.table, line.type])).toEqual([
        ['workspaces', undefined],
        ['api_keys', undefined],
        ['security_events', 'API_KEY_CREATED'],
        ['security_events', 'PERMISSION_DENIED'],
      ]);
      expect(lines[0]).toEqual({ table: 'workspaces', id: workspace.id, name: 'exported customer', createdAt: workspace.createdAt });
      expect(Object.keys(lines[1]).sort()).toEqual(
        ['table', 'id', 'workspaceId', 'name', 'prefix', 'permissions', 'allowedCidrs', 'createdAt', 'lastUsedAt', 'expiresAt', 'revokedAt', 'previousSecretValidUntil'].sort(),
      );
      expect(key.startsWith(lines[1].prefix)).toBe(true);
      expect(lines[3]).toMatchObject({ workspaceId: workspace.id, apiKeyId: lines[1].id, ip: '127.0.0.1' });
      expect(text).not.toContain(hashApiKey(key));

      // Never over a file, even its own export.
      expect(await cli('workspaces', 'export', workspace.id, '--out', file)).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: ${file} already exists: an export never overwrites a file\n`,
      });
      expect(readFileSync(file, 'utf8')).toBe(text);
      const unknown = join(parent, 'unknown.jsonl');
      expect(await cli('workspaces', 'export', 'no such customer', '--out', unknown)).toEqual({ code: EXIT.failed, stdout: '', stderr: "campaign-gateway: No workspace 'no such customer'\n" });
      expect(existsSync(unknown)).toBe(false);

      // A row that cannot be read (an event's details changed by hand) stops the export half-way: no file is
      // left that could pass for a whole export.
      const broken = new Database(join(dataDir, 'gateway.db'));
      const [event] = broken.prepare('SELECT id, details FROM security_events WHERE workspace_id = ? AND type = ?').all(workspace.id, 'PERMISSION_DENIED') as { id: string; details: string }[];
      const cut = join(parent, 'cut.jsonl');
      try {
        broken.prepare('UPDATE security_events SET details = ? WHERE id = ?').run('{', event.id);
        const stopped = await cli('workspaces', 'export', workspace.id, '--out', cut);
        expect(stopped).toMatchObject({ code: EXIT.failed, stdout: '' });
        expect(stopped.stderr).toMatch(new RegExp(`^campaign-gateway: the export stopped after 0 rows and ${cut} was deleted: .*JSON`));
        expect(existsSync(cut)).toBe(false);
      } finally {
        broken.prepare('UPDATE security_events SET details = ? WHERE id = ?').run(event.details, event.id);
        broken.close();
      }

      // Without --out, the rows alone on stdout, and what was exported on stderr.
      const piped = await cliProcess(['workspaces', 'export', workspace.id, '--json'], { DATA_DIR: dataDir });
      expect(piped.code).toBe(0);
      expect(piped.stdout).toBe(text);
      expect(JSON.parse(piped.stderr)).toEqual({
        id: workspace.id,
        name: 'exported customer',
        exported: { workspaces: 1, api_keys: 1, tags: 0, campaigns: 0, jobs: 0, security_events: 2, idempotency_keys: 0 },
      });
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('rotates a key, with or without an overlap', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'rotating', '--permissions', 'campaigns.list');
    const rotated = await cli('keys', 'rotate', created.id, '--overlap', '1h');
    expect(rotated.code).toBe(EXIT.ok);
    expect(rotated.stdout).toContain('The previous secret stays valid until 2026-06-01T01:00:00.000Z.');
    const [fresh = ''] = rotated.stdout.match(KEY) ?? [];
    expect(fresh).not.toBe(created.key);
    const list = '{ campaigns { edges { node { id } } } }';
    expect((await graphql(gw.baseUrl, fresh, list)).status).toBe(200);
    expect((await graphql(gw.baseUrl, created.key, list)).status).toBe(200);
    expect((await cliJson('keys', 'list')).find((key: any) => key.id === created.id).previousSecretValidUntil).toBe('2026-06-01T01:00:00.000Z');

    const again = await cli('keys', 'rotate', created.id, '--json');
    expect(again.code).toBe(EXIT.ok);
    expect(JSON.parse(again.stdout)).toMatchObject({ previousSecretValidUntil: null, earlierSecretWasValidUntil: '2026-06-01T01:00:00.000Z' });
    expect((await graphql(gw.baseUrl, created.key, list)).status).toBe(401);
    expect((await graphql(gw.baseUrl, fresh, list)).status).toBe(401);
    const third = await cli('keys', 'rotate', created.id, '--overlap', '1h');
    expect(third.stdout).not.toContain('replaced before it');
    const fourth = await cli('keys', 'rotate', created.id);
    expect(fourth.stdout).toContain(
      'The secret replaced before it, which was to stay valid until 2026-06-01T01:00:00.000Z, no longer works: a key keeps one earlier secret.',
    );
    expect((await graphql(gw.baseUrl, (fourth.stdout.match(KEY) ?? [''])[0], list)).status).toBe(200);
  });

  it('refuses under --json with the code UNAVAILABLE a rotation that other rotations beat every time it tries', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'rotated elsewhere', '--permissions', 'campaigns.list');
    const db = new Database(join(dataDir, 'gateway.db'));
    try {
      // Another process rotates the key whenever this one reads the time, which it does after reading the key.
      const racedClock = { now: () => (db.prepare('UPDATE api_keys SET hash = ? WHERE id = ?').run(hashApiKey(newId()), created.id), clock.now()) };
      const beaten = await cliAt(racedClock, ['keys', 'rotate', created.id, '--overlap', '1h', '--json']);
      expect(beaten).toMatchObject({ code: EXIT.failed, stdout: '' });
      expect(JSON.parse(beaten.stderr)).toEqual({
        error: { code: 'UNAVAILABLE', message: `Key '${created.id}' was rotated by other commands each of the ${ROTATION_ATTEMPTS} times this rotation tried: it changed nothing; try again` },
      });
    } finally {
      db.close();
    }
    expect((await keyEventDetails(created.id)).map((event: { type: string }) => event.type)).toEqual(['API_KEY_CREATED']);
  });

  /** The details of the key lifecycle events of `keyId`, newest first, as a key with security_events.read reads them. */
  async function keyEventDetails(keyId: string) {
    const reader = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'auditor', '--permissions', 'security_events.read');
    const response = await graphql(gw.baseUrl, reader.key, 'query ($key: ID!) { securityEvents(filter: {apiKeyId: $key}) { edges { node { type channel ip details } } } }', {
      key: keyId,
    });
    return response.body.data.securityEvents.edges.map((edge: any) => edge.node);
  }

  it('records in each key event the operator and the reason given, and which earlier overlap a rotation ended', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'audited', '--permissions', 'campaigns.list', '--reason', 'reporting job, ticket OPS-7', '--operator', ' Ops team ');
    const byDesk = { DATA_DIR: dataDir, GATEWAY_OPERATOR: 'security desk' };
    const overlapping = await runCaptured(['keys', 'rotate', created.id, '--overlap', '1h', '--reason', 'yearly rotation', '--json'], { env: byDesk, clock });
    expect(overlapping).toMatchObject({ code: EXIT.ok, stderr: '' });
    const until = JSON.parse(overlapping.stdout).previousSecretValidUntil;
    // The option names the one who ran this command over the default the environment gives.
    expect(await runCaptured(['keys', 'rotate', created.id, '--operator', 'Ops team'], { env: byDesk, clock })).toMatchObject({ code: EXIT.ok, stderr: '' });
    await cliJson('keys', 'revoke', created.id, '--reason', '  leaked in a CI log  ');
    const event = (type: string, details: Record<string, unknown>) => ({ type, channel: null, ip: null, details });
    // Exactly these details: nothing of the OS user or host that ran the CLI, which the workspace's customers read.
    expect(await keyEventDetails(created.id)).toEqual([
      event('API_KEY_REVOKED', { reason: 'leaked in a CI log' }),
      event('API_KEY_ROTATED', { previousValidUntil: null, earlierSecretCutShortFrom: until, operator: 'Ops team' }),
      event('API_KEY_ROTATED', { previousValidUntil: until, reason: 'yearly rotation', operator: 'security desk' }),
      event('API_KEY_CREATED', { permissions: ['campaigns.list'], expiresAt: null, allowedCidrs: null, reason: 'reporting job, ticket OPS-7', operator: 'Ops team' }),
    ]);
  });

  it('counts the length of a reason and an operator in characters, an emoji being one', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'astral', '--permissions', 'campaigns.list', '--reason', '\u{1F511}'.repeat(500), '--operator', '\u{1D4AA}'.repeat(100));
    const [createdEvent] = await keyEventDetails(created.id);
    expect(createdEvent.details).toMatchObject({ reason: '\u{1F511}'.repeat(500), operator: '\u{1D4AA}'.repeat(100) });
    expect(await cli('keys', 'revoke', created.id, '--reason', '\u{1F511}'.repeat(501))).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: 'campaign-gateway: A reason is 1 to 500 printable characters on one line\n',
    });
    expect(await cli('keys', 'revoke', created.id, '--operator', '\u{1D4AA}'.repeat(101))).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: 'campaign-gateway: An operator is 1 to 100 printable characters on one line\n',
    });
  });

  it('refuses an operator from the environment as it refuses one given as an option', async () => {
    const result = await runCaptured(['keys', 'create', '--workspace', 'acme', '--name', 'labelled with a key', '--permissions', 'campaigns.list'], {
      env: { DATA_DIR: dataDir, GATEWAY_OPERATOR: 'cgw_0QkF0xAbCdEfGh' },
      clock,
    });
    expect(result).toEqual({ code: EXIT.failed, stdout: '', stderr: 'campaign-gateway: An operator must not hold an API key\n' });
    // An empty variable is one unset.
    const created = await runCaptured(['keys', 'create', '--workspace', 'acme', '--name', 'unlabelled', '--permissions', 'campaigns.list', '--json'], {
      env: { DATA_DIR: dataDir, GATEWAY_OPERATOR: '' },
      clock,
    });
    expect(created).toMatchObject({ code: EXIT.ok, stderr: '' });
    const [createdEvent] = await keyEventDetails(JSON.parse(created.stdout).id);
    expect(createdEvent.details).not.toHaveProperty('operator');
  });

  it.each([
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--reason', ' '], EXIT.failed, 'A reason is 1 to 500 printable characters on one line'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--reason', 'x'.repeat(501)], EXIT.failed, 'A reason is 1 to 500 printable characters on one line'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--reason', 'two\nlines'], EXIT.failed, 'A reason is 1 to 500 printable characters on one line'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--reason', 'replaces cgw_0QkF0xAbCdEfGh'], EXIT.failed, 'A reason must not hold an API key'],
    [['keys', 'rotate', 'no-such-key', '--reason', '\u202eevil'], EXIT.failed, 'A reason is 1 to 500 printable characters on one line'],
    [['keys', 'revoke', 'no-such-key', '--reason'], EXIT.usage, 'option --reason needs a value (see --help)\n'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--operator', ' '], EXIT.failed, 'An operator is 1 to 100 printable characters on one line'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--operator', 'x'.repeat(101)], EXIT.failed, 'An operator is 1 to 100 printable characters on one line'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--operator', 'cgw_0QkF0xAbCdEfGh'], EXIT.failed, 'An operator must not hold an API key'],
    [['keys', 'rotate', 'no-such-key', '--operator', 'Ops\nteam'], EXIT.failed, 'An operator is 1 to 100 printable characters on one line'],
    [['keys', 'revoke', 'no-such-key', '--operator', '\u202eevil'], EXIT.failed, 'An operator is 1 to 100 printable characters on one line'],
    [['keys', 'list', '--operator', 'Ops team'], EXIT.usage, 'unknown option --operator (see --help)\n'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x'], EXIT.usage, '--permissions is required (see --help)'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', 'forever'], EXIT.failed, "--expires-in must be a number followed by s, m, h, d or w (like 30d), got 'forever'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', '1d', '--expires-at', '2027-01-01'], EXIT.usage, 'give --expires-in or --expires-at, not both'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', '10y'], EXIT.failed, "--expires-in must be a number followed by s, m, h, d or w (like 30d), got '10y'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', '99999999999w'], EXIT.failed, "--expires-in must be at most 36500d (100 years), got '99999999999w'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', '0s'], EXIT.failed, '--expires-in must be longer than 0\n'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', '0'], EXIT.failed, '--expires-in must be longer than 0\n'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', 'tomorrow'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got 'tomorrow'"],
    // Without an offset, the runner's time zone would decide; an impossible date would roll over into the next month.
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2027-06-01T00:00:00'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-06-01T00:00:00'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2027-06-01'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-06-01'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2027-02-30T00:00:00Z'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-02-30T00:00:00Z'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2027-06-01T24:00:00+02:00'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-06-01T24:00:00+02:00'"],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2027-02-29T00:00:00.123456+0900'], EXIT.failed, "--expires-at must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-02-29T00:00:00.123456+0900'"],
    [['jobs', 'list', '--since', '2027-01-01T00:00:00.123456'], EXIT.failed, "--since must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-01-01T00:00:00.123456'"],
    [['jobs', 'list', '--since', '2027-01-01T00:00:00'], EXIT.failed, "--since must be an ISO 8601 time with Z or an offset, like 2027-01-31T00:00:00Z, got '2027-01-01T00:00:00'"],
    // An empty templated variable: refused, never a key any address may use.
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--allow-ip', ''], EXIT.failed, '--allow-ip has no address: leave the option out to allow any address'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--allow-ip', ' , '], EXIT.failed, '--allow-ip has no address: leave the option out to allow any address'],
    // What an argument that was not UTF-8 (a Latin-1 é under LC_ALL=C) becomes.
    [['keys', 'create', '--workspace', 'acme', '--name', 'caf\ufffd', '--permissions', 'campaigns.list'], EXIT.failed, 'A key name holds U+FFFD, which an argument that was not UTF-8 becomes: give it in UTF-8 (check LANG or LC_ALL)'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--reason', 'caf\ufffd'], EXIT.failed, 'A reason holds U+FFFD, which an argument that was not UTF-8 becomes'],
    [['keys', 'revoke', 'no-such-key', '--operator', 'caf\ufffd'], EXIT.failed, 'An operator holds U+FFFD, which an argument that was not UTF-8 becomes'],
    [['workspaces', 'create', 'caf\ufffd'], EXIT.failed, 'A workspace name holds U+FFFD, which an argument that was not UTF-8 becomes'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--key-file', '/nonexistent-dir/key'], EXIT.failed, 'the directory /nonexistent-dir does not exist: make it first; nothing was created'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-at', '2020-01-01T00:00:00Z'], EXIT.failed, 'The expiry must be in the future'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.delete'], EXIT.failed, 'Unknown permission: campaigns.delete (known: campaigns.duplicate, campaigns.list, campaigns.details, security_events.read)'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', ','], EXIT.failed, 'A key needs at least one permission (campaigns.duplicate, campaigns.list, campaigns.details, security_events.read)'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--allow-ip', '10.0.0.0/33'], EXIT.failed, "'10.0.0.0/33' is not an IP address or CIDR range"],
    [['keys', 'create', '--workspace', 'nowhere', '--name', 'x', '--permissions', 'campaigns.list'], EXIT.failed, "No workspace 'nowhere'"],
    [['keys', 'create', '--workspace', 'acme', '--name', '\u0007', '--permissions', 'campaigns.list'], EXIT.failed, 'A key name is 1 to 100 printable characters'],
    [['keys', 'create', '--workspace', 'acme', '--name', '\u200b\u200d', '--permissions', 'campaigns.list'], EXIT.failed, 'A key name is 1 to 100 printable characters'],
    [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--admin'], EXIT.usage, 'unknown option --admin (see --help)\n'],
    [['keys', 'list', '--bogus'], EXIT.usage, 'unknown option --bogus (see --help)\n'],
    [['keys', 'list', '--json=yes'], EXIT.usage, 'option --json takes no value (see --help)\n'],
    [['keys', 'list', '--help=yes'], EXIT.usage, 'option --help takes no value (see --help)\n'],
    [['keys', 'revoke'], EXIT.usage, 'wrong number of arguments (see --help)'],
    [['keys', 'revoke', 'no-such-key'], EXIT.failed, "No key 'no-such-key'"],
    [['keys', 'rotate', 'no-such-key'], EXIT.failed, "No key 'no-such-key'"],
    [['keys', 'rotate', 'no-such-key', '--overlap', '31d'], EXIT.failed, 'The overlap must be between none and 30 days'],
    [['keys', 'rotate', 'no-such-key', '--overlap', 'a while'], EXIT.failed, "--overlap must be a number followed by s, m, h, d or w (like 30d), got 'a while'"],
    [['keys', 'rotate', 'no-such-key', '--overlap'], EXIT.usage, 'option --overlap needs a value (see --help)\n'],
    // Another option where the value should be: parseArgs calls it ambiguous.
    [['keys', 'create', '--workspace', 'acme', '--name', '--permissions', 'campaigns.list'], EXIT.usage, 'option --name needs a value (one starting with a dash is written --name=-…) (see --help)\n'],
    [['keys', 'rotate', 'no-such-key', '--overlap', '--reason', 'x'], EXIT.usage, 'option --overlap needs a value'],
    [['keys', 'list', 'extra'], EXIT.usage, "unexpected argument 'extra' (see --help)"],
    [['keys', 'list', '--workspace', 'nowhere'], EXIT.failed, "No workspace 'nowhere'"],
    [['workspaces', 'create', '   '], EXIT.failed, 'A workspace needs a name'],
    // Taken for the id of the workspace it names, which `--workspace` looks up first.
    [['workspaces', 'create', '01a23156-4d2f-7b3e-9c1a-2b3c4d5e6f70'], EXIT.failed, 'A workspace name must not be shaped like an id (01a23156-4d2f-7b3e-9c1a-2b3c4d5e6f70): commands would take it for one'],
    [['workspaces', 'delete', 'acme'], EXIT.usage, "--confirm <the workspace's name> is required (see --help)"],
    // A name that differs only in case is another customer's, as far as the confirmation goes.
    [['workspaces', 'delete', 'acme', '--confirm', 'Acme'], EXIT.failed, "The confirmation 'Acme' is not the name of workspace "],
    [['workspaces', 'delete', 'nowhere', '--confirm', 'nowhere'], EXIT.failed, "No workspace 'nowhere'"],
    [['frobnicate'], EXIT.usage, "unknown command 'frobnicate' (see --help)"],
    // Only the command's words: not an option that follows the first.
    [['keys', '--bogus'], EXIT.usage, "unknown command 'keys' (see --help)"],
  ])('%j fails with exit code %i and one line, and creates no key', async (argv, code, message) => {
    const result = await cli(...argv);
    expect(result.code).toBe(code);
    expect(result.stdout).toBe('');
    expect(result.stderr.split('\n')).toHaveLength(2);
    expect(result.stderr).toContain(`campaign-gateway: ${message}`);
    expect((await cliJson('keys', 'list', '--workspace', 'acme')).map((key: { name: string }) => key.name)).not.toContain('x');
  });

  it('as a process, exits 1 on an invalid value of a known option and 2 on a wrong command line', async () => {
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'rotated by a process', '--permissions', 'campaigns.list');
    const create = ['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions'];
    // One process per kind of outcome (each loads the whole gateway): the table above has every case in-process.
    const cases: [string[], number][] = [
      [[...create, 'campaigns.list', '--expires-in', '10y'], EXIT.failed],
      [[...create, 'campaigns.list', '--expires-at', 'tomorrow'], EXIT.failed],
      [[...create, 'campaigns.delete'], EXIT.failed],
      [[...create, 'campaigns.list', '--admin'], EXIT.usage],
      // "none", the default overlap, given as such.
      [['keys', 'rotate', created.id, '--overlap', '0'], EXIT.ok],
    ];
    const results = await Promise.all(cases.map(([argv]) => cliProcess(argv, { DATA_DIR: dataDir })));
    expect(results.map(({ code }) => code)).toEqual(cases.map(([, code]) => code));
    for (const { code, stderr } of results) {
      if (code !== EXIT.ok) expect(stderr).toMatch(/^campaign-gateway: [^\n]+\n$/);
    }
    expect(results.at(-1)!.stdout).toContain('The previous secret no longer works.');
    expect((await graphql(gw.baseUrl, created.key, '{ campaigns { edges { node { id } } } }')).status).toBe(401);
    expect((await cliJson('keys', 'list', '--workspace', 'acme')).map((key: { name: string }) => key.name)).not.toContain('x');
  }, 60_000);

  it('prints help, and usage when called with nothing', async () => {
    const help = await cli('--help');
    expect(help.code).toBe(EXIT.ok);
    expect(help.stdout).toMatch(/^Usage: npm run -s cli -- <command>.*\n\s+node dist\/cli\/main\.js <command>/);
    expect((await cli('keys', 'create', '--help')).code).toBe(EXIT.ok);
    const group = await cli('keys', '--help');
    expect(group.code).toBe(EXIT.ok);
    expect(group.stdout).toBe(help.stdout);
    const bare = await cli();
    expect(bare.code).toBe(EXIT.usage);
    expect(bare.stderr).toMatch(/^Usage:/);
  });

  it('stops with one line on invalid configuration', async () => {
    let stderr = '';
    const code = await runCli(['workspaces', 'list'], { env: { DATABASE_URL: 'mysql://db/gateway' }, stdout: () => undefined, stderr: (text) => (stderr += text) });
    expect(code).toBe(EXIT.failed);
    expect(stderr).toBe('campaign-gateway: invalid configuration: DATABASE_URL must start with postgres:// or postgresql://\n');
  });

  it('works on no store a mistyped DATA_DIR would make, except to create the first workspace of a new one', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-new-'));
    const fresh = join(parent, 'data');
    const at = (...argv: string[]) => cliAt(clock, argv, fresh);
    try {
      for (const argv of [['keys', 'list'], ['workspaces', 'list'], ['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list']]) {
        expect(await at(...argv)).toEqual({
          code: EXIT.failed,
          stdout: '',
          stderr: `campaign-gateway: there is no store at ${join(fresh, 'gateway.db')}: check DATA_DIR, or start the gateway (or run 'workspaces create') to make one\n`,
        });
      }
      expect(existsSync(fresh)).toBe(false);
      const created = await at('workspaces', 'create', 'first');
      expect(created).toEqual({
        code: EXIT.ok,
        stdout: expect.stringMatching(/^Created workspace "first" \(id [0-9a-f-]{36}\)\.\n$/),
        // On stderr, under --json too: stdout is the command's answer alone.
        stderr: `(A new store was made at ${join(fresh, 'gateway.db')}.)\n`,
      });
      expect((await at('workspaces', 'list')).code).toBe(EXIT.ok);
      const other = join(parent, 'other');
      const json = await cliAt(clock, ['workspaces', 'create', 'first', '--json'], other);
      expect(json).toMatchObject({ code: EXIT.ok, stderr: `(A new store was made at ${join(other, 'gateway.db')}.)\n` });
      expect(JSON.parse(json.stdout)).toMatchObject({ name: 'first' });
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('lines up the columns of names in any script, by the columns a terminal draws them in', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-width-'));
    const at = (...argv: string[]) => cliAt(clock, argv, join(parent, 'data'));
    try {
      // Each is drawn 6 columns wide: 6 letters, 3 wide ideographs, 3 emoji, a flag (two code points) and 4 letters,
      // 6 letters of which one takes a combining accent it has no composed form with.
      const names = ['plain!', '東京都', '🚀🚀🚀', '🇫🇷ab12', 'sx\u0301-ray'];
      for (const name of names) expect((await at('workspaces', 'create', name)).code).toBe(EXIT.ok);
      const lines = (await at('workspaces', 'list')).stdout.trimEnd().split('\n');
      expect(lines).toHaveLength(names.length + 1);
      expect(lines[0]).toMatch(/^ID {36}NAME {4}CREATED$/);
      for (const line of lines.slice(1)) expect(line).toMatch(/^[0-9a-f-]{36} {2}\S.* {2}2026-06-01T00:00:00\.000Z$/);
      // As wide as the widest, none is padded: counted in UTF-16 units, 東京都 (3) would have been.
      expect(lines.slice(1).map((line) => line.slice(38, line.lastIndexOf('  2026'))).sort()).toEqual([...names].sort());
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('lists jobs newest first and fails those no worker holds, with error CANCELLED and their event, only when confirmed', async () => {
    const workspace = await cliJson('workspaces', 'create', 'restored customer');
    const due = new Date('2027-02-01T00:00:00.000Z');
    const accepted = (ms: number) => new Date(clock.now().getTime() + ms);
    // Due long after the gateway's time, so that only the claim below, another instance's, takes one.
    // The first accepted is the one the claim takes.
    const [held, pending] = [1, 2].map((ms) =>
      jobFixture(workspace.id, { id: newId(accepted(ms).getTime()), runAt: due, createdAt: accepted(ms), updatedAt: accepted(ms), requestId: `req-${ms}` }),
    );
    for (const job of [held, pending]) await gw.app.store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
    await gw.app.store.claimJobs('another instance', 1, due, new Date('2027-02-01T00:01:00.000Z'));

    const listed = await cli('jobs', 'list', '--workspace', 'restored customer');
    expect(listed.stdout.split('\n')[0]).toMatch(/^ID +WORKSPACE +STATUS +CREATED +ATTEMPTS +LEASE ENDS +FINISHED +SOURCE CAMPAIGN +REQUEST ID +ERROR$/);
    expect(listed.stdout.split('\n').slice(1, 3).map((line) => line.split(/ +/).slice(0, 3))).toEqual([
      [pending.id, 'restored', 'customer'],
      [held.id, 'restored', 'customer'],
    ]);
    expect(await cliJson('jobs', 'list', '--workspace', workspace.id, '--status', 'RUNNING')).toMatchObject([
      { id: held.id, status: 'RUNNING', requestId: 'req-1', leaseExpiresAt: '2027-02-01T00:01:00.000Z', workspace: { name: 'restored customer' } },
    ]);
    const newest = await cli('jobs', 'list', '--since', accepted(1).toISOString(), '--limit', '1', '--json');
    expect(JSON.parse(newest.stdout).map((job: { id: string }) => job.id)).toEqual([pending.id]);
    // The same time in microseconds, with an offset without its colon.
    const micro = await cli('jobs', 'list', '--since', accepted(1).toISOString().replace('Z', '999+0000'), '--limit', '1', '--json');
    expect(JSON.parse(micro.stdout).map((job: { id: string }) => job.id)).toEqual([pending.id]);
    // Cut at --limit with more left: said on stderr, so that stdout is still the jobs alone.
    expect(newest).toMatchObject({ code: EXIT.ok, stderr: 'Showing the newest job: more match, raise --limit to see them.\n' });
    expect(await cli('jobs', 'list', '--since', accepted(1).toISOString(), '--limit', '2')).toMatchObject({ code: EXIT.ok, stderr: '' });
    expect(await cli('jobs', 'list', '--status', 'DONE')).toMatchObject({ code: EXIT.failed, stderr: "campaign-gateway: --status must be one of PENDING, RUNNING, SUCCEEDED, FAILED, got 'DONE'\n" });

    expect(await cli('jobs', 'fail', pending.id, '--reason', 'Braze has it')).toMatchObject({ code: EXIT.usage });
    expect(await cli('jobs', 'fail', pending.id, held.id, '--reason', 'Braze has it', '--operator', 'dr', '--confirm')).toEqual({
      code: EXIT.failed,
      stdout:
        `Failed job ${pending.id} (error CANCELLED): it will not run.\n` +
        `Job ${held.id} was not failed: a worker holds it, its lease ends at 2027-02-01T00:01:00.000Z (try again after it).\n`,
      stderr: 'campaign-gateway: 1 of 2 jobs were not failed\n',
    });
    expect(await gw.app.store.getJob(workspace.id, pending.id)).toMatchObject({
      status: 'FAILED',
      error: { code: 'CANCELLED', message: 'Failed by an operator: Braze has it' },
    });
    const [event] = await gw.app.store.listEvents(workspace.id, { jobId: pending.id, types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 10 });
    expect(event.details).toMatchObject({ error: { code: 'CANCELLED' }, reason: 'Braze has it', operator: 'dr', attempts: 0 });
    expect(await gw.app.store.getJob(workspace.id, held.id)).toMatchObject({ status: 'RUNNING' });
    // Its lease over, its worker gone: the job fails too.
    expect(await cliJsonAt(new ManualClock(new Date('2027-02-01T00:02:00.000Z')), ['jobs', 'fail', held.id, '--reason', 'Braze has it', '--confirm'])).toMatchObject([
      { id: held.id, status: 'FAILED', failed: true, error: { code: 'CANCELLED' } },
    ]);
  });

  it('backs the store up while the gateway runs, to a file only its owner reads, which restores as a store', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-cli-backup-'));
    const backup = join(parent, 'backup.db');
    try {
      const ws = (await cliJson('workspaces', 'list'))[0];
      const accepted = await rest.duplicate(gw.baseUrl, (await cliJson('keys', 'create', '--workspace', ws.name, '--name', 'backed up', '--permissions', 'campaigns.duplicate')).key, {
        campaignId: (await gw.app.admin.addCampaign(ws.id, { name: 'to copy', description: null, tagNames: [], body: {} })).id,
        name: 'accepted before the backup',
      });
      expect(accepted.status).toBe(202);

      const done = await cli('store', 'backup', backup);
      expect(done).toMatchObject({ code: EXIT.ok, stderr: '' });
      // The README's order: the old log deleted before the copy is put where it would be read over it.
      expect(done.stdout).toMatch(new RegExp(`^Backed up the store to ${backup} \\(\\d+ bytes\\)\\. To restore it, stop every gateway, delete \\S+-wal and \\S+-shm \\(either may be missing\\), put the copy in place of `));
      expect(statSync(backup).mode & 0o777).toBe(0o600);
      expect(await cli('store', 'backup', backup)).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: ${backup} already exists: a backup never overwrites a file\n`,
      });
      expect(await cli('store', 'backup', join(parent, 'missing', 'backup.db'))).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: the directory ${join(parent, 'missing')} does not exist: make it first; nothing was backed up\n`,
      });
      expect(await cli('store', 'backup', join(backup, 'backup.db'))).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: ${backup} is not a directory (a file is in its path): nothing was backed up\n`,
      });

      const restored = join(parent, 'restored');
      mkdirSync(restored);
      copyFileSync(backup, join(restored, 'gateway.db'));
      const listed = async (dir: string) => JSON.parse((await cliAt(clock, ['keys', 'list', '--json'], dir)).stdout);
      expect(await listed(restored)).toEqual(await listed(dataDir));
      const store = new SqliteStore({ filename: join(restored, 'gateway.db') });
      try {
        expect((await store.getJob(ws.id, accepted.jobId!))?.name).toBe('accepted before the backup');
      } finally {
        await store.close();
      }
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('sends PostgreSQL backups to pg_dump', async () => {
    let stderr = '';
    const code = await runCli(['store', 'backup', '/tmp/never-written.db'], {
      env: { DATABASE_URL: 'postgres://gateway@127.0.0.1:1/gateway' },
      stdout: () => undefined,
      stderr: (text) => (stderr += text),
    });
    expect({ code, stderr }).toEqual({ code: EXIT.failed, stderr: 'campaign-gateway: the store is the PostgreSQL database in DATABASE_URL: back it up with pg_dump\n' });
  });

  it('puts a new secret in a new file only its owner reads with --key-file, made before the key, and never in the output', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-key-file-'));
    const file = join(dir, 'ci.key');
    try {
      const created = await cli('keys', 'create', '--workspace', 'acme', '--name', 'to a file', '--permissions', 'campaigns.list', '--key-file', file);
      expect(created.code).toBe(EXIT.ok);
      expect(created.stdout).toContain(`This key is in ${file}, which only you may read: it is not shown anywhere else.`);
      expect(created.stdout).not.toMatch(KEY);
      const secret = readFileSync(file, 'utf8');
      expect(secret).toMatch(/^cgw_[0-9A-Za-z]{38}\n$/);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const list = '{ campaigns { edges { node { id } } } }';
      expect((await graphql(gw.baseUrl, secret.trim(), list)).status).toBe(200);

      // Refused before anything is changed: the file is there, and no second key is made.
      const keys = async () => (await cliJson('keys', 'list', '--workspace', 'acme')).length;
      const before = await keys();
      expect(await cli('keys', 'create', '--workspace', 'acme', '--name', 'to a file', '--permissions', 'campaigns.list', '--key-file', file)).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: `campaign-gateway: ${file} already exists: --key-file never overwrites a file\n`,
      });
      // A refusal after the file was made takes the file away with it.
      const refused = join(dir, 'refused.key');
      expect(await cli('keys', 'create', '--workspace', 'nowhere', '--name', 'x', '--permissions', 'campaigns.list', '--key-file', refused)).toMatchObject({ code: EXIT.failed });
      expect(existsSync(refused)).toBe(false);
      expect(await keys()).toBe(before);

      const id = (await cliJson('keys', 'list', '--workspace', 'acme')).find((key: { name: string }) => key.name === 'to a file').id;
      const rotatedFile = join(dir, 'rotated.key');
      const rotated = await cli('keys', 'rotate', id, '--key-file', rotatedFile, '--json');
      expect(rotated).toMatchObject({ code: EXIT.ok, stderr: '' });
      const json = JSON.parse(rotated.stdout);
      expect(json).toMatchObject({ id, keyFile: rotatedFile, previousSecretValidUntil: null });
      expect(json).not.toHaveProperty('key');
      expect(rotated.stdout).not.toMatch(KEY);
      expect((await graphql(gw.baseUrl, readFileSync(rotatedFile, 'utf8').trim(), list)).status).toBe(200);
      expect((await graphql(gw.baseUrl, secret.trim(), list)).status).toBe(401);
      expect(await cli('keys', 'rotate', id, '--key-file', rotatedFile)).toMatchObject({ code: EXIT.failed, stderr: `campaign-gateway: ${rotatedFile} already exists: --key-file never overwrites a file\n` });
      expect((await graphql(gw.baseUrl, readFileSync(rotatedFile, 'utf8').trim(), list)).status).toBe(200);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('as a process, says which key it made when stdout cannot take its secret, and exits 3 without a stack trace', async () => {
    const create = ['keys', 'create', '--workspace', 'acme', '--name', 'lost', '--permissions', 'campaigns.list'];
    const [text, json, list] = await Promise.all([
      cliProcessWritingTo('/dev/full', create, { DATA_DIR: dataDir }),
      cliProcessWritingTo('/dev/full', [...create, '--json'], { DATA_DIR: dataDir }),
      cliProcessWritingTo('/dev/full', ['keys', 'list'], { DATA_DIR: dataDir }),
    ]);
    const lost = (await cliJson('keys', 'list', '--workspace', 'acme')).filter((key: { name: string }) => key.name === 'lost').map((key: { id: string }) => key.id);
    expect(lost).toHaveLength(2);
    expect(text.code).toBe(EXIT.outputLost);
    const [id] = /key (\S+) was created/.exec(text.stderr)?.slice(1) ?? [];
    expect(lost).toContain(id);
    expect(text.stderr).toBe(`campaign-gateway: key ${id} was created but its secret could not be written (ENOSPC: no space left on device): revoke it (keys revoke ${id})\n`);
    expect(json.code).toBe(EXIT.outputLost);
    expect(JSON.parse(json.stderr)).toEqual({ error: { code: 'OUTPUT_LOST', message: expect.stringMatching(/^key \S+ was created but its secret could not be written \(ENOSPC[^)]*\): revoke it \(keys revoke \S+\)$/) } });
    // Nothing was changed: a failure, in one line.
    expect(list).toEqual({ code: EXIT.failed, stdout: '', stderr: 'campaign-gateway: the output could not be written (ENOSPC: no space left on device)\n' });
  }, 60_000);

  it('as a process, says where the secret is when --key-file holds it and stdout cannot take the rest: nothing to revoke', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-key-file-'));
    const file = join(dir, 'ci.key');
    try {
      expect((await cli('workspaces', 'create', 'secret in a file')).code).toBe(EXIT.ok);
      const create = ['keys', 'create', '--workspace', 'secret in a file', '--name', 'in a file', '--permissions', 'campaigns.list', '--key-file', file, '--json'];
      const lost = await cliProcessWritingTo('/dev/full', create, { DATA_DIR: dataDir });
      expect(lost.code, lost.stderr).toBe(EXIT.outputLost);
      const [id] = /key (\S+) was created/.exec(lost.stderr)?.slice(1) ?? [];
      expect(JSON.parse(lost.stderr)).toEqual({
        error: { code: 'OUTPUT_LOST', message: `key ${id} was created, its secret is in ${file}, but the output could not be written (ENOSPC: no space left on device)` },
      });
      const secret = readFileSync(file, 'utf8').trim();
      expect((await graphql(gw.baseUrl, secret, '{ campaigns { edges { node { id } } } }')).status).toBe(200);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('as a process, refuses to print a new secret to /dev/null or a closed stdout, changing nothing, and puts it in --key-file there', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-nowhere-'));
    const env = { DATA_DIR: dataDir };
    const list = '{ campaigns { edges { node { id } } } }';
    try {
      const kept = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'kept secret', '--permissions', 'campaigns.list');
      const create = ['keys', 'create', '--workspace', 'acme', '--name', 'to nowhere', '--permissions', 'campaigns.list'];
      const refused = await Promise.all([
        cliProcessWithoutStdout('ignore', create, env),
        cliProcessWithoutStdout('closed', [...create, '--json'], env),
        cliProcessWithoutStdout('ignore', ['keys', 'rotate', kept.id, '--json'], env),
        cliProcessWithoutStdout('closed', ['keys', 'rotate', kept.id, '--overlap', '1h'], env),
      ]);
      const why = (verb: string) =>
        `stdout is /dev/null (or was closed), where the new secret would be lost: give --key-file <new file>, or send stdout where it can be read; nothing was ${verb}`;
      expect(refused).toEqual([
        { code: EXIT.usage, stdout: '', stderr: `campaign-gateway: ${why('created')} (see --help)\n` },
        { code: EXIT.usage, stdout: '', stderr: `${JSON.stringify({ error: { code: 'USAGE', message: why('created') } })}\n` },
        { code: EXIT.usage, stdout: '', stderr: `${JSON.stringify({ error: { code: 'USAGE', message: why('rotated') } })}\n` },
        { code: EXIT.usage, stdout: '', stderr: `campaign-gateway: ${why('rotated')} (see --help)\n` },
      ]);
      const keys = async () => (await cliJson('keys', 'list', '--workspace', 'acme')) as { id: string; name: string; prefix: string; previousSecretValidUntil: string | null }[];
      expect((await keys()).map(({ name }) => name)).not.toContain('to nowhere');
      expect((await keys()).find(({ id }) => id === kept.id)).toMatchObject({ prefix: kept.prefix, previousSecretValidUntil: null });
      expect((await graphql(gw.baseUrl, kept.key, list)).status).toBe(200);

      // With --key-file the secret is kept, stdout on /dev/null or closed.
      const [created, rotated, closed] = await Promise.all([
        cliProcessWritingTo('/dev/null', [...create, '--key-file', join(dir, 'created.key')], env),
        cliProcessWritingTo('/dev/null', ['keys', 'rotate', kept.id, '--key-file', join(dir, 'rotated.key'), '--json'], env),
        cliProcessWithoutStdout('closed', [...create, '--key-file', join(dir, 'closed.key')], env),
      ]);
      expect([created, rotated, closed]).toEqual([
        { code: EXIT.ok, stdout: '', stderr: '' },
        { code: EXIT.ok, stdout: '', stderr: '' },
        { code: EXIT.ok, stdout: '', stderr: '' },
      ]);
      expect((await keys()).filter(({ name }) => name === 'to nowhere')).toHaveLength(2);
      for (const file of ['created.key', 'rotated.key', 'closed.key']) {
        expect((await graphql(gw.baseUrl, readFileSync(join(dir, file), 'utf8').trim(), list)).status).toBe(200);
      }
      expect((await graphql(gw.baseUrl, kept.key, list)).status).toBe(401);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('under --json, writes errors as one JSON line on stderr whose code a script can tell apart', async () => {
    const error = async (argv: string[], env: Record<string, string> = { DATA_DIR: dataDir }) => {
      const result = await runCaptured(argv, { env, clock });
      expect(result.stdout).toBe('');
      expect(result.stderr.split('\n')).toHaveLength(2);
      return { exit: result.code, ...JSON.parse(result.stderr).error };
    };
    expect(await error(['workspaces', 'create', 'acme', '--json'])).toEqual({ exit: EXIT.failed, code: 'ALREADY_EXISTS', message: "Workspace 'acme' already exists" });
    expect(await error(['keys', 'revoke', 'no-such-key', '--json'])).toEqual({ exit: EXIT.failed, code: 'NOT_FOUND', message: "No key 'no-such-key'" });
    const taken = join(dataDir, 'gateway.db');
    expect(await error(['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--key-file', taken, '--json'])).toEqual({
      exit: EXIT.failed,
      code: 'ALREADY_EXISTS',
      message: `${taken} already exists: --key-file never overwrites a file`,
    });
    // An empty templated variable names no file, not the working directory's parent.
    expect(await error(['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--key-file', '', '--json'])).toEqual({
      exit: EXIT.failed,
      code: 'BAD_USER_INPUT',
      message: '--key-file names no file: give it a file name; nothing was created',
    });
    // sysfs takes no new file, root or not: EACCES where it is mounted read-write, EROFS where read-only (containers).
    if (process.platform === 'linux') {
      expect(await error(['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--key-file', '/sys/x.key', '--json'])).toEqual({
        exit: EXIT.failed,
        code: 'BAD_USER_INPUT',
        message: expect.stringMatching(/^cannot create \/sys\/x\.key: (permission denied|the file system is read-only); nothing was created$/),
      });
    }
    expect(await error(['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.delete', '--json'])).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT' });
    expect(await error(['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', '--expires-in', 'soon', '--json'])).toMatchObject({ exit: EXIT.failed, code: 'BAD_USER_INPUT' });
    // --json before the command is --json.
    expect(await error(['--json', 'frobnicate'])).toEqual({ exit: EXIT.usage, code: 'USAGE', message: "unknown command 'frobnicate'" });
    // Moved after the command, --json is where the missing value of the last option should be.
    expect(await error(['--json', 'keys', 'revoke', 'no-such-key', '--reason'])).toEqual({
      exit: EXIT.usage,
      code: 'USAGE',
      message: 'option --reason needs a value (one starting with a dash is written --reason=-…)',
    });
    const down = { DATABASE_URL: 'postgres://gateway:gateway@127.0.0.1:1/gateway' };
    expect(await error(['keys', 'list', '--json'], down)).toEqual({
      exit: EXIT.failed,
      code: 'UNAVAILABLE',
      message: expect.stringMatching(/^could not connect to the PostgreSQL database in DATABASE_URL: /),
    });
    expect(await error(['keys', 'list', '--json'], { DATABASE_URL: 'mysql://db/gateway' })).toMatchObject({ exit: EXIT.failed, code: 'CONFIGURATION' });
  });

  it('refuses a wrong command line with exit 2 before opening the store, whether or not the store can be reached', async () => {
    const down = { DATABASE_URL: 'postgres://gateway:gateway@127.0.0.1:1/gateway' };
    for (const [argv, message] of [
      [['jobs', 'fail', 'some-job', '--reason', 'sent'], '--confirm is required: a failed job is never run again'],
      [['jobs', 'fail', 'some-job', '--confirm'], '--reason is required'],
      [['keys', 'create', '--workspace', 'acme', '--name', 'x'], '--permissions is required'],
      [['workspaces', 'delete', 'acme'], "--confirm <the workspace's name> is required"],
    ] as const) {
      expect(await runCaptured([...argv], { env: down, clock })).toEqual({ code: EXIT.usage, stdout: '', stderr: `campaign-gateway: ${message} (see --help)\n` });
    }
  });

  it('refuses an invalid value before opening the store: the same code and exit whether or not the store can be reached', async () => {
    const down = { DATABASE_URL: 'postgres://gateway:gateway@127.0.0.1:1/gateway' };
    const key = (...options: string[]) => ['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.list', ...options];
    const taken = join(dataDir, 'taken.txt');
    writeFileSync(taken, 'kept');
    const missingDirectory = join(dataDir, 'missing', 'new.txt');
    const underAFile = join(taken, 'new.txt');
    const cases: [string[], Record<string, string>?, string?][] = [
      [['workspaces', 'create', '   ']],
      [['workspaces', 'create', 'caf\ufffd']],
      [['workspaces', 'export', 'acme', '--out', '']],
      [['keys', 'create', '--workspace', 'acme', '--name', '\u0007', '--permissions', 'campaigns.list']],
      [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', 'campaigns.delete']],
      [['keys', 'create', '--workspace', 'acme', '--name', 'x', '--permissions', ',']],
      [key('--expires-in', 'forever')],
      [key('--expires-in', '0')],
      [key('--expires-in', '36501d')],
      [['store', 'backup', '']],
      [['store', 'copy', '--to', '']],
      [key('--expires-at', 'tomorrow')],
      [key('--expires-at', '2020-01-01T00:00:00Z')],
      [key('--allow-ip', '10.0.0.0/33')],
      [key('--allow-ip', ' , ')],
      [key('--reason', ' ')],
      [key('--operator', 'cgw_0QkF0xAbCdEfGh')],
      [key(), { GATEWAY_OPERATOR: 'Ops\nteam' }],
      [key('--key-file', '')],
      [['keys', 'revoke', 'no-such-key', '--reason', 'x'.repeat(501)]],
      [['keys', 'revoke', 'no-such-key', '--operator', '\u202eevil']],
      [['keys', 'rotate', 'no-such-key', '--overlap', 'a while']],
      [['keys', 'rotate', 'no-such-key', '--overlap', '31d']],
      [['keys', 'rotate', 'no-such-key', '--reason', '\u202eevil']],
      [['keys', 'rotate', 'no-such-key', '--key-file', '']],
      [['jobs', 'list', '--status', 'DONE']],
      [['jobs', 'list', '--limit', '0']],
      [['jobs', 'list', '--since', '2027-01-01T00:00:00']],
      [['jobs', 'fail', 'no-such-job', '--confirm', '--reason', '\u202eevil']],
      [['clients', 'unblock', 'not-an-address']],
      [['workspaces', 'export', 'acme', '--out', taken], {}, 'ALREADY_EXISTS'],
      [['workspaces', 'export', 'acme', '--out', missingDirectory]],
      [['workspaces', 'export', 'acme', '--out', underAFile]],
      [key('--key-file', taken), {}, 'ALREADY_EXISTS'],
      [key('--key-file', missingDirectory)],
      [key('--key-file', underAFile)],
      [['keys', 'rotate', 'no-such-key', '--key-file', taken], {}, 'ALREADY_EXISTS'],
      [['keys', 'rotate', 'no-such-key', '--key-file', missingDirectory]],
      [['keys', 'rotate', 'no-such-key', '--key-file', underAFile]],
    ];
    for (const [argv, env = {}, code = 'BAD_USER_INPUT'] of cases) {
      for (const store of [down, { DATA_DIR: dataDir }]) {
        const result = await runCaptured([...argv, '--json'], { env: { ...store, ...env }, clock });
        expect({ argv, store, exit: result.code, code: JSON.parse(result.stderr).error.code }).toEqual({ argv, store, exit: EXIT.failed, code });
      }
    }
    expect(readFileSync(taken, 'utf8')).toBe('kept');
    rmSync(taken);
    expect((await cliJson('keys', 'list', '--workspace', 'acme')).map((key: { name: string }) => key.name)).not.toContain('x');
  });

  it('says the store is busy, not the driver\'s words, when another process holds it locked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-busy-'));
    try {
      expect((await cliAt(clock, ['workspaces', 'create', 'first'], dir)).code).toBe(EXIT.ok);
      const other = new Database(join(dir, 'gateway.db'));
      other.exec('BEGIN IMMEDIATE');
      try {
        for (const json of [false, true]) {
          const result = await cliAt(clock, ['workspaces', 'create', 'second', ...(json ? ['--json'] : [])], dir);
          const message = 'the store is busy: another process has held it locked for longer than 5 s (SQLITE_BUSY); nothing was changed, try again';
          expect(result).toEqual({
            code: EXIT.failed,
            stdout: '',
            stderr: json ? `${JSON.stringify({ error: { code: 'UNAVAILABLE', message } })}\n` : `campaign-gateway: ${message}\n`,
          });
        }
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      expect((await cliAt(clock, ['workspaces', 'list'], dir)).stdout).not.toContain('second');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('prints its version, and the same JSON for a rotated key as for a created one', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(await cli('--version')).toEqual({ code: EXIT.ok, stdout: `${pkg.version}\n`, stderr: '' });
    const created = await cliJson('keys', 'create', '--workspace', 'acme', '--name', 'shaped', '--permissions', 'campaigns.list');
    const rotated = await cliJsonAt(clock, ['keys', 'rotate', created.id, '--overlap', '1h']);
    expect(Object.keys(rotated).sort()).toEqual([...Object.keys(created), 'earlierSecretWasValidUntil'].sort());
    expect(rotated).toMatchObject({ id: created.id, workspace: created.workspace, status: 'active', previousSecretValidUntil: '2026-06-01T01:00:00.000Z' });
    // --json before the command, as after it.
    expect(JSON.parse((await cli('--json', 'keys', 'list', '--workspace', 'acme')).stdout).map((key: { id: string }) => key.id)).toContain(created.id);
  });

  it('runs as printed in the README: npm run cli -- …', async () => {
    const run = promisify(execFile);
    const env = { ...process.env, DATA_DIR: dataDir, NODE_OPTIONS: '' };
    const workspace = await run('npm', ['run', '-s', 'cli', '--', 'workspaces', 'create', 'from-npm'], { env });
    expect(workspace.stdout).toMatch(/^Created workspace "from-npm"/);
    const key = await run('npm', ['run', '-s', 'cli', '--', 'keys', 'create', '--workspace', 'from-npm', '--name', 'ci', '--permissions', 'campaigns.duplicate,campaigns.list'], { env });
    const [secret = ''] = key.stdout.match(KEY) ?? [];
    expect((await graphql(gw.baseUrl, secret, '{ campaigns { edges { node { id } } } }')).body.data.campaigns.edges).toEqual([]);
  }, 60_000);
});

/** A place for a store, where a gateway of any version can make one and the CLI can find it. */
interface StorePlace {
  env: Record<string, string>;
  /** How the store names its database in what it says. */
  database: string;
  /** The schema version as the store keeps it: PRAGMA user_version, or the last row of schema_migrations. */
  version(): Promise<number>;
  remove(): Promise<void>;
}

const sqlitePlace = async (): Promise<StorePlace> => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-version-'));
  const file = join(dir, 'gateway.db');
  return {
    env: { DATA_DIR: dir },
    database: `the SQLite database ${file}`,
    version: async () => sqliteVersion(file),
    remove: async () => rmSync(dir, { recursive: true, force: true }),
  };
};

function sqliteVersion(file: string): number {
  const db = new Database(file, { fileMustExist: true });
  try {
    return Number(db.pragma('user_version', { simple: true }));
  } finally {
    db.close();
  }
}

/**
 * Each store with the schema of the CLI under test (`current`), which a gateway of the version before made with
 * all but the last of its migrations and one of a later version with one more.
 */
const storeKinds = [
  { name: 'SQLite', missing: false, place: sqlitePlace, current: SQLITE_MIGRATIONS, migrations: (list: readonly string[]) => ({ sqlite: list }) },
  {
    name: 'PostgreSQL',
    missing: !TEST_DATABASE_URL,
    place: async (): Promise<StorePlace> => {
      const db = await createTestDatabase();
      return {
        env: { DATABASE_URL: db.url },
        database: 'the PostgreSQL database in DATABASE_URL',
        version: () => withAdmin(async (client) => Number((await client.query('SELECT MAX(version) AS version FROM schema_migrations')).rows[0].version), db.url),
        remove: db.drop,
      };
    },
    current: POSTGRES_MIGRATIONS,
    migrations: (list: readonly string[]): StoreOptions['migrations'] => ({ postgres: list }),
  },
].filter((kind) => !kind.missing || process.env.CI);

/** What a gateway knowing `migrations` does at start: makes the store, or upgrades it to its version. */
async function asGateway<T>(env: Record<string, string>, migrations: StoreOptions['migrations'], work: (admin: AdminService) => Promise<T>): Promise<T> {
  const store = await createStore(loadConfig(env), { olderSchema: 'upgrade', migrations });
  try {
    return await work(new AdminService(store, systemClock));
  } finally {
    await store.close();
  }
}

describe('the CLI on a store with very many workspaces', () => {
  // Past about 120,000 rows, spreading the column's lengths into Math.max overflowed the stack.
  const count = 130_000;
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-cli-many-'));
  const clock = new ManualClock(new Date('2026-06-01T00:00:00.000Z'));
  const cli = (...argv: string[]) => runCaptured(argv, { env: { DATA_DIR: dataDir }, clock });

  beforeAll(async () => {
    const store = new SqliteStore({ filename: join(dataDir, 'gateway.db') });
    await store.migrate();
    await store.close();
    const db = new Database(join(dataDir, 'gateway.db'));
    try {
      const insert = db.prepare('INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)');
      db.transaction(() => {
        for (let index = 0; index < count; index += 1) insert.run(`00000000-0000-7000-8000-${index.toString(16).padStart(12, '0')}`, `ws-${index}`, index);
      })();
    } finally {
      db.close();
    }
  });

  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('lists them all, as a table and as JSON', async () => {
    const listed = await cli('workspaces', 'list');
    expect(listed).toMatchObject({ code: EXIT.ok, stderr: '' });
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(count + 1);
    expect(lines[0]).toMatch(/^ID +NAME +CREATED$/);
    expect(lines.at(-1)).toMatch(new RegExp(`^[0-9a-f-]{36} +ws-${count - 1} +1970-01-01T00:02:09\\.999Z$`));
    const json = await cli('workspaces', 'list', '--json');
    expect(json).toMatchObject({ code: EXIT.ok, stderr: '' });
    expect(JSON.parse(json.stdout)).toHaveLength(count);
  }, 60_000);
});

describe.each(storeKinds)('the CLI on a $name store of another version', (kind) => {
  const older = kind.migrations(kind.current.slice(0, -1));
  const cli = (place: StorePlace, ...argv: string[]) => runCaptured(argv, { env: place.env, migrations: kind.migrations(kind.current) });
  let place: StorePlace;

  beforeEach(async () => {
    place = await kind.place();
  });

  afterEach(() => place.remove());

  it('refuses a store the version before left, with one line, and leaves it for that version', async () => {
    await asGateway(place.env, older, (admin) => admin.createWorkspace('before'));

    const refusal = `campaign-gateway: ${place.database} is at schema version ${kind.current.length - 1} and this version needs ${kind.current.length}: back it up, then start this version's gateway, which upgrades it (see "Upgrading" in the README). It was left as it is\n`;
    for (const argv of [['keys', 'create', '--workspace', 'before', '--name', 'x', '--permissions', 'campaigns.list'], ['keys', 'list'], ['workspaces', 'create', 'during']]) {
      expect(await cli(place, ...argv)).toEqual({ code: EXIT.failed, stdout: '', stderr: refusal });
    }

    expect(await place.version()).toBe(kind.current.length - 1);
    const [workspaces, keys] = await asGateway(place.env, older, (admin) => Promise.all([admin.listWorkspaces(), admin.listKeys()]));
    expect(workspaces.map((workspace) => workspace.name)).toEqual(['before']);
    expect(keys).toEqual([]);
    expect(await place.version()).toBe(kind.current.length - 1);

    // As the line says: once this version's gateway has started on it, the CLI works on it.
    await asGateway(place.env, kind.migrations(kind.current), async () => undefined);
    expect(await place.version()).toBe(kind.current.length);
    expect(await cli(place, 'workspaces', 'list')).toMatchObject({ code: EXIT.ok, stderr: '' });
  });

  it('refuses a store a later version migrated, as the gateway does', async () => {
    await asGateway(place.env, kind.migrations([...kind.current, 'CREATE TABLE later_version (id integer)']), async () => undefined);
    const listed = await cli(place, 'keys', 'list');
    expect(listed).toMatchObject({ code: EXIT.failed, stdout: '' });
    expect(listed.stderr).toBe(
      `campaign-gateway: ${place.database} has schema version ${kind.current.length + 1}, newer than this gateway's ${kind.current.length}: ` +
        'a newer campaign-gateway has updated it. Run that version, or restore the backup taken before the upgrade; downgrading is not supported\n',
    );
    expect(await place.version()).toBe(kind.current.length + 1);
  });

  it('makes a new store, at its version, with workspaces create', async () => {
    const created = await cli(place, 'workspaces', 'create', 'first');
    expect(created.code).toBe(EXIT.ok);
    expect(created.stdout).toMatch(/^Created workspace "first"/);
    expect(await place.version()).toBe(kind.current.length);
    expect(JSON.parse((await cli(place, 'workspaces', 'list', '--json')).stdout).map((workspace: { name: string }) => workspace.name)).toEqual(['first']);
  });
});

describe('store backup of a store the version before left', () => {
  const older = { sqlite: SQLITE_MIGRATIONS.slice(0, -1) };
  let place: StorePlace;

  beforeEach(async () => {
    place = await sqlitePlace();
  });

  afterEach(() => place.remove());

  it('copies it at its version, leaving it at that version too, and both open under the gateway that made it', async () => {
    await asGateway(place.env, older, (admin) => admin.createWorkspace('before the upgrade'));
    const backup = join(place.env.DATA_DIR, 'backup.db');

    const done = await runCaptured(['store', 'backup', backup], { env: place.env });
    expect(done).toMatchObject({ code: EXIT.ok, stderr: '' });

    expect(await place.version()).toBe(SQLITE_MIGRATIONS.length - 1);
    expect(sqliteVersion(backup)).toBe(SQLITE_MIGRATIONS.length - 1);
    const names = async (env: Record<string, string>) =>
      (await asGateway(env, older, (admin) => admin.listWorkspaces())).map((workspace) => workspace.name);
    const restored = join(place.env.DATA_DIR, 'restored');
    mkdirSync(restored);
    copyFileSync(backup, join(restored, 'gateway.db'));
    expect(await names({ DATA_DIR: restored })).toEqual(['before the upgrade']);
    expect(await names(place.env)).toEqual(['before the upgrade']);
    expect(sqliteVersion(join(restored, 'gateway.db'))).toBe(SQLITE_MIGRATIONS.length - 1);
  });

  it.each([
    ['holds no gateway store', (file: string) => new Database(file).exec('CREATE TABLE notes (text TEXT)').close(), 'holds no campaign-gateway store: nothing was backed up'],
    ['is no database', (file: string) => writeFileSync(file, 'not a database, but long enough to have a header: '.repeat(4)), 'is not a readable SQLite database (file is not a database): nothing was backed up'],
  ])('refuses a file that %s, with one line, and writes no backup', async (_, make, message) => {
    const file = join(place.env.DATA_DIR, 'gateway.db');
    make(file);
    const backup = join(place.env.DATA_DIR, 'backup.db');
    expect(await runCaptured(['store', 'backup', backup], { env: place.env })).toEqual({ code: EXIT.failed, stdout: '', stderr: `campaign-gateway: ${file} ${message}\n` });
    expect(existsSync(backup)).toBe(false);
  });

  it('refuses a restored backup with the old -wal beside it, and leaves both as they were', async () => {
    const file = join(place.env.DATA_DIR, 'gateway.db');
    const restoredCopy = new Database(file);
    restoredCopy.exec("CREATE TABLE workspaces (id TEXT); INSERT INTO workspaces VALUES ('restored')");
    restoredCopy.close();
    const staleLog = Buffer.alloc(4096, 7);
    writeFileSync(`${file}-wal`, staleLog);
    const copyBefore = readFileSync(file);
    const backup = join(place.env.DATA_DIR, 'backup.db');

    expect(await runCaptured(['store', 'backup', backup], { env: place.env })).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: ${file} is not in WAL mode, as a restored backup is not, but ${file}-wal beside it holds the log of the database it replaced, which would damage it: delete ${file}-wal and ${file}-shm, then start again\n`,
    });
    expect(existsSync(backup)).toBe(false);
    expect(readFileSync(file).equals(copyBefore)).toBe(true);
    expect(readFileSync(`${file}-wal`).equals(staleLog)).toBe(true);
  });
});

describe('store backup that cannot write its whole copy', () => {
  let place: StorePlace;

  beforeEach(async () => {
    place = await sqlitePlace();
  });

  afterEach(() => place.remove());

  it('names the target and what happened, removes what it wrote, and leaves the store and what was there as they were', async () => {
    // A store of some 2 MB, whose copy cannot fit under a limit of 256 KiB on the files the CLI writes.
    await asGateway(place.env, undefined, async (admin) => {
      const workspace = await admin.createWorkspace('large');
      for (let i = 0; i < 200; i += 1) await admin.addCampaign(workspace.id, { name: `campaign ${i}`, description: null, tagNames: [], body: { text: `${i} `.repeat(2_000) } });
    });
    const file = join(place.env.DATA_DIR, 'gateway.db');
    expect(statSync(file).size).toBeGreaterThan(1024 * 1024);
    const storeBefore = readFileSync(file);
    const backup = join(place.env.DATA_DIR, 'backup.db');
    // Not the backup's: a file named as SQLite names a database's shared memory, there before it.
    writeFileSync(`${backup}-shm`, 'kept');

    expect(await cliProcessWithFileSizeLimit(256, ['store', 'backup', backup], place.env)).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr:
        `campaign-gateway: the backup target ${backup} could not be written (SQLITE_IOERR_WRITE: disk I/O error): ` +
        'the partial copy was removed; nothing of the store was changed\n',
    });
    expect(existsSync(backup)).toBe(false);
    expect(existsSync(`${backup}-journal`)).toBe(false);
    expect(existsSync(`${backup}-wal`)).toBe(false);
    expect(readFileSync(`${backup}-shm`, 'utf8')).toBe('kept');
    expect(readFileSync(file).equals(storeBefore)).toBe(true);

    // Nothing is left in the way of the next try.
    expect(await cliProcess(['store', 'backup', backup], place.env)).toMatchObject({ code: 0, stderr: '' });
    expect(sqliteVersion(backup)).toBe(SQLITE_MIGRATIONS.length);
  });
});

describe.skipIf(!TEST_DATABASE_URL && !process.env.CI)('jobs fail on PostgreSQL, whose job queue keeps the database’s time', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;

  beforeAll(async () => {
    database = await createTestDatabase();
  });

  afterAll(() => database?.drop());

  it('answers every id, an unknown one too, and gives a held job’s lease end whatever the CLI’s clock says', async () => {
    const env = { DATABASE_URL: database.url };
    const store = await createStore(loadConfig(env), { olderSchema: 'upgrade' });
    const [held, pending] = await (async () => {
      try {
        const workspace = await new AdminService(store, systemClock).createWorkspace('restored on PostgreSQL');
        const jobs = [jobFixture(workspace.id), jobFixture(workspace.id)];
        for (const job of jobs) await store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
        const now = new Date();
        const [claimed] = await store.claimJobs('another instance', 1, now, new Date(now.getTime() + 3_600_000));
        return [await store.findJob(claimed.id), await store.findJob(jobs.find((job) => job.id !== claimed.id)!.id)];
      } finally {
        await store.close();
      }
    })();
    // A CLI whose clock is past the lease end, which the database has not reached.
    const ahead = new ManualClock(new Date(held!.leaseExpiresAt!.getTime() + 86_400_000));
    const unknown = newId();
    const failing = ['jobs', 'fail', held!.id, unknown, pending!.id, '--reason', 'Braze has it', '--confirm'];
    expect(await runCaptured(failing, { env, clock: ahead })).toEqual({
      code: EXIT.failed,
      stdout:
        `Job ${held!.id} was not failed: a worker holds it, its lease ends at ${held!.leaseExpiresAt!.toISOString()} (try again after it).\n` +
        `Job ${unknown} was not failed: not found.\n` +
        `Failed job ${pending!.id} (error CANCELLED): it will not run.\n`,
      stderr: 'campaign-gateway: 2 of 3 jobs were not failed\n',
    });
    const json = await runCaptured([...failing, '--json'], { env, clock: ahead });
    expect(json).toMatchObject({ code: EXIT.failed, stderr: '{"error":{"code":"FAILED","message":"3 of 3 jobs were not failed"}}\n' });
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ id: held!.id, status: 'RUNNING', found: true, failed: false }),
      { id: unknown, found: false, failed: false },
      expect.objectContaining({ id: pending!.id, status: 'FAILED', found: true, failed: false }),
    ]);
  });

  it('says what it changed when the database fails after the change, not that nothing was changed', async () => {
    const env = { DATABASE_URL: database.url };
    const store = await createStore(loadConfig(env), { olderSchema: 'upgrade' });
    const jobs = await (async () => {
      try {
        const workspace = await new AdminService(store, systemClock).createWorkspace('failing after a change');
        const made = [jobFixture(workspace.id), jobFixture(workspace.id)];
        for (const job of made) await store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
        return made;
      } finally {
        await store.close();
      }
    })();
    // The database refuses to change the second job, once the first is failed.
    await withAdmin(async (client) => {
      await client.query("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the database'; END $$");
      await client.query(`CREATE TRIGGER refuse BEFORE UPDATE ON jobs FOR EACH ROW WHEN (OLD.id = '${jobs[1].id}') EXECUTE FUNCTION refuse()`);
    }, database.url);
    const failing = await runCaptured(['jobs', 'fail', jobs[0].id, jobs[1].id, '--reason', 'Braze has it', '--confirm'], { env });
    expect(failing).toMatchObject({ code: EXIT.outputLost, stdout: '' });
    expect(failing.stderr).toMatch(/^campaign-gateway: 1 of 2 jobs were failed but the output could not be written \(it stopped: .*refused by the database.*\): jobs list shows them\n$/);

    // Reading the workspace fails from the moment a key is made or rotated: the key's output needs no read after it.
    await withAdmin(async (client) => {
      await client.query("CREATE FUNCTION hide() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE workspaces RENAME TO workspaces_hidden; RETURN NULL; END $$");
      await client.query('CREATE TRIGGER hide AFTER INSERT OR UPDATE ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION hide()');
    }, database.url);
    const show = () => withAdmin((client) => client.query('ALTER TABLE workspaces_hidden RENAME TO workspaces'), database.url);
    const created = await runCaptured(['keys', 'create', '--workspace', 'failing after a change', '--name', 'ci', '--permissions', 'campaigns.list', '--json'], { env });
    expect(created, created.stderr).toMatchObject({ code: EXIT.ok, stderr: '' });
    const key = JSON.parse(created.stdout);
    expect(key).toMatchObject({ key: expect.stringMatching(KEY), workspace: { name: 'failing after a change' } });
    await show();
    const rotated = await runCaptured(['keys', 'rotate', key.id, '--json'], { env });
    expect(rotated, rotated.stderr).toMatchObject({ code: EXIT.ok, stderr: '' });
    expect(JSON.parse(rotated.stdout)).toMatchObject({ id: key.id, key: expect.stringMatching(KEY), workspace: { name: 'failing after a change' } });
    await show();
  });
});
