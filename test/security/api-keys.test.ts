import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { AdminService } from '../../src/domain/admin.js';
import { displayPrefix, hashApiKey } from '../../src/domain/keys.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import {
  componentLines,
  flipLastChecksumCharacter,
  graphql,
  http,
  metricSample,
  rawConnection,
  recordingLogger,
  startGateway,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { ManualClock } from '../support/clock.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { countStatements, KEY_BY_HASH } from '../support/statements.js';
import { transports, type Transport } from '../support/transports.js';

/**
 * The real store, counting key lookups by hash and keeping every write of last_used_at it was asked for. A
 * request asks for that write while it authenticates, before it answers, and does not wait for it: once the
 * answer is in, `touchesLanded()` resolves when every such write has been made.
 */
function countingStore(store: GatewayStore): { store: GatewayStore; lookups: () => number; touchesLanded: () => Promise<unknown> } {
  let lookups = 0;
  const touches: Promise<void>[] = [];
  const proxy = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property === 'findApiKeyByHash') {
        return (...args: unknown[]) => {
          lookups += 1;
          return value.apply(target, args);
        };
      }
      if (property === 'touchApiKey') {
        return (...args: Parameters<GatewayStore['touchApiKey']>) => {
          const touch = target.touchApiKey(...args);
          touches.push(touch);
          return touch;
        };
      }
      return value.bind(target);
    },
  });
  return { store: proxy, lookups: () => lookups, touchesLanded: () => Promise.allSettled(touches) };
}


describe('API keys', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let lookups: () => number;
  let touchesLanded: () => Promise<unknown>;
  const clock = new ManualClock();
  const logs = recordingLogger();
  const storeDir = mkdtempSync(join(tmpdir(), 'cgw-keys-'));

  const xff = (ip: string) => ({ 'x-forwarded-for': ip });
  const duplicate = (client: Transport, key: string, extra: Record<string, string> = {}) =>
    client.duplicate(gw.baseUrl, key, { campaignId: ws.campaign.id, name: 'Copy' }, { headers: extra });

  beforeAll(async () => {
    const env = { DATA_DIR: storeDir, TRUST_PROXY: '127.0.0.1', DUPLICATE_RATE_LIMIT: '10000', AUTH_FAILURE_LIMIT: '10000' };
    const counting = countingStore(await createStore(loadConfig(env), { olderSchema: 'upgrade' }));
    lookups = counting.lookups;
    touchesLanded = counting.touchesLanded;
    gw = await startGateway(env, { store: counting.store, clock, logger: logs.logger });
    ws = await gw.workspace('keys');
  });

  afterAll(async () => {
    await gw.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  describe.each(transports)('over $name', (client) => {
    it('refuses a key with a bad checksum without looking it up', async () => {
      const before = lookups();
      const refused = await duplicate(client, flipLastChecksumCharacter(ws.key));
      expect(refused).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect(lookups()).toBe(before);
      const accepted = await duplicate(client, ws.key);
      expect(accepted.code).toBeNull();
      expect(lookups()).toBe(before + 1);
    });

    it('refuses an expired key from the moment it expires', async () => {
      const created = await gw.app.admin.createKey({
        workspace: ws.workspace.id,
        name: 'short-lived',
        permissions: ['campaigns.duplicate'],
        expiresAt: new Date(clock.now().getTime() + 3600_000),
      });
      expect((await duplicate(client, created.key)).status).toBeLessThan(300);
      clock.advance(3600_000);
      expect(await duplicate(client, created.key)).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
    });

    it('refuses a revoked key on the very next request, and records the revocation', async () => {
      const { key, keyId } = await ws.addKey(['campaigns.duplicate']);
      expect((await duplicate(client, key)).status).toBeLessThan(300);
      const { alreadyRevoked } = await gw.app.admin.revokeKey(keyId);
      expect(alreadyRevoked).toBe(false);
      expect(await duplicate(client, key)).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect((await client.job(gw.baseUrl, key, '00000000-0000-0000-0000-000000000000')).status).toBe(401);
      expect((await gw.app.admin.revokeKey(keyId)).alreadyRevoked).toBe(true);
      const events = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId, types: ['API_KEY_CREATED', 'API_KEY_REVOKED', 'CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 10 });
      expect(events.map((event) => event.type)).toEqual(['API_KEY_REVOKED', 'CAMPAIGN_DUPLICATION_REQUESTED', 'API_KEY_CREATED']);
    });

    it('rotates a key: the new secret works at once, the old one only for the overlap', async () => {
      const { key: original, keyId } = await ws.addKey(['campaigns.duplicate'], 'rotating');
      const withOverlap = await gw.app.admin.rotateKey(keyId, 3600_000);
      expect(withOverlap.previousValidUntil).toEqual(new Date(clock.now().getTime() + 3600_000));
      const old = await duplicate(client, original);
      const fresh = await duplicate(client, withOverlap.key);
      expect([old.code, fresh.code]).toEqual([null, null]);
      expect((await gw.app.store.getJob(ws.workspace.id, fresh.jobId!))?.apiKeyId).toBe(keyId);
      expect((await gw.app.store.getJob(ws.workspace.id, old.jobId!))?.apiKeyId).toBe(keyId);
      clock.advance(3600_000);
      expect(await duplicate(client, original)).toMatchObject({ status: 401 });
      expect((await duplicate(client, withOverlap.key)).code).toBeNull();

      const immediate = await gw.app.admin.rotateKey(keyId);
      expect(immediate.previousValidUntil).toBeNull();
      expect(await duplicate(client, withOverlap.key)).toMatchObject({ status: 401 });
      expect((await duplicate(client, immediate.key)).code).toBeNull();
      const events = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId, types: ['API_KEY_ROTATED', 'API_KEY_CREATED'] }, { first: 10 });
      expect(events.map((event) => [event.type, event.details.previousValidUntil ?? null])).toEqual([
        ['API_KEY_ROTATED', null],
        ['API_KEY_ROTATED', withOverlap.previousValidUntil!.toISOString()],
        ['API_KEY_CREATED', null],
      ]);

      await gw.app.admin.revokeKey(keyId);
      await expect(gw.app.admin.rotateKey(keyId)).rejects.toThrow(/revoked/);
    });

    it('does not report a rotation when a revocation lands between looking the key up and rotating it', async () => {
      const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'revoked mid-rotation');
      // Another operator revokes the key after this rotation has found it unrevoked.
      const racing = new Proxy(gw.app.store, {
        get(target, property) {
          const value = Reflect.get(target, property, target);
          if (property !== 'rotateApiKey') return typeof value === 'function' ? value.bind(target) : value;
          return async (...args: Parameters<GatewayStore['rotateApiKey']>) => {
            await gw.app.admin.revokeKey(keyId);
            return target.rotateApiKey(...args);
          };
        },
      });
      await expect(new AdminService(racing, clock).rotateKey(keyId, 3600_000)).rejects.toThrow(`Key '${keyId}' is revoked; create a new one`);

      expect(await gw.app.store.findApiKey(keyId)).toMatchObject({ hash: hashApiKey(key), previousHash: null, revokedAt: clock.now() });
      expect(await duplicate(client, key)).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      // The 401 does not wait for its API_KEY_REJECTED event (nothing in its timing may tell a revoked key from an unknown one).
      const events = await waitFor(async () => {
        const listed = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId }, { first: 10 });
        return listed.length === 3 && listed;
      });
      expect(events.map((event) => event.type)).toEqual(['API_KEY_REJECTED', 'API_KEY_REVOKED', 'API_KEY_CREATED']);
    });

    it('answers 403 to a key used from outside its IPv4/IPv6 allowlist', async () => {
      const created = await gw.app.admin.createKey({
        workspace: ws.workspace.id,
        name: 'office only',
        permissions: ['campaigns.duplicate'],
        allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'],
      });
      // The last entry a proxy in front appended with its port, '127.0.0.1:3333', is that proxy, not the caller.
      for (const inside of ['10.1.2.3', '2001:db8:0:1::7', '10.1.2.3, 127.0.0.1:3333']) expect((await duplicate(client, created.key, xff(inside))).code).toBeNull();
      for (const outside of ['192.0.2.1', '2001:db9::1', '::ffff:11.0.0.1']) {
        expect(await duplicate(client, created.key, xff(outside))).toMatchObject({ status: 403, code: 'FORBIDDEN' });
      }
      // Without X-Forwarded-For the caller is 127.0.0.1: outside too.
      expect(await duplicate(client, created.key)).toMatchObject({ status: 403, code: 'FORBIDDEN' });
      // A load balancer appends the address it saw; what the client wrote before it is not believed.
      expect(await duplicate(client, created.key, xff('10.1.2.3, 192.0.2.9'))).toMatchObject({ status: 403, code: 'FORBIDDEN' });
      const denied = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: created.record.id, types: ['PERMISSION_DENIED'] }, { first: 20 });
      expect(denied).toHaveLength(5);
      expect(denied[0]).toMatchObject({ ip: '192.0.2.9', details: { reason: 'ip_not_allowed' } });
      expect(denied[1]).toMatchObject({ ip: '127.0.0.1', details: { reason: 'ip_not_allowed' } });
      expect(denied.map((event) => event.ip)).toContain('2001:db9::1');
    });

    it('refuses an empty allowlist rather than open the key to every address', async () => {
      const before = (await gw.app.admin.listKeys(ws.workspace)).length;
      await expect(
        gw.app.admin.createKey({ workspace: ws.workspace.id, name: 'empty list', permissions: ['campaigns.duplicate'], allowedCidrs: [] }),
      ).rejects.toMatchObject({ code: 'BAD_USER_INPUT', message: 'An IP allowlist needs at least one address or range: leave it out to allow any address' });
      expect(await gw.app.admin.listKeys(ws.workspace)).toHaveLength(before);
    });
  });

  /**
   * A duplication over a raw socket whose headers are checked, then `between()` runs and a second passes before
   * the rest of its body (latin1: one byte a character) arrives.
   */
  const slowBody = async (key: string, between: () => Promise<unknown>, body = JSON.stringify({ campaign_id: ws.campaign.id, name: 'Slow copy' }), headers = '', path = '/campaigns/duplicate') => {
    const connection = rawConnection(gw.baseUrl);
    const checked = lookups();
    connection.send(
      `POST ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer ${key}\r\n${headers}` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    );
    await waitFor(async () => lookups() > checked);
    await between();
    clock.advance(1000);
    connection.send(body.slice(10));
    const { head, body: answer } = await connection.answer;
    return { status: Number(head.split(' ')[1]), quotaHeaders: /^x-ratelimit-/im.test(head), body: answer };
  };
  /** REST duplications refused for their key, as /metrics counts them. */
  const unauthenticated = async () =>
    metricSample((await http(gw.baseUrl, 'GET', '/metrics')).text, 'gateway_duplications_total', { channel: 'REST', outcome: 'unauthenticated' });

  it('checks a REST key again when the body comes long after the headers: a key revoked meanwhile is refused', async () => {
    const kept = await ws.addKey(['campaigns.duplicate'], 'slow but kept');
    expect(await slowBody(kept.key, async () => undefined)).toMatchObject({ status: 202, quotaHeaders: true });

    const revoked = await ws.addKey(['campaigns.duplicate'], 'revoked while its body comes');
    const before = await unauthenticated();
    const refused = await slowBody(revoked.key, () => gw.app.admin.revokeKey(revoked.keyId));
    expect(refused).toMatchObject({ status: 401, quotaHeaders: false });
    expect(await unauthenticated()).toBe(before! + 1);
    expect(JSON.parse(refused.body)).toEqual({ message: 'Invalid API key', code: 'UNAUTHENTICATED' });
    const requested = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: revoked.keyId, types: ['CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 5 });
    expect(requested).toEqual([]);
  });

  it('checks a GraphQL key again when the body comes long after the headers: a key revoked meanwhile is refused', async () => {
    const mutation = (name: string) =>
      JSON.stringify({ query: `mutation { duplicateCampaign(input: {campaignId: "${ws.campaign.id}", name: "${name}"}) { job { id } } }` });
    const kept = await ws.addKey(['campaigns.duplicate'], 'slow GraphQL but kept');
    const accepted = await slowBody(kept.key, async () => undefined, mutation('Slow GraphQL copy'), '', '/graphql');
    expect(accepted.status).toBe(200);
    expect(JSON.parse(accepted.body).data.duplicateCampaign.job.id).toEqual(expect.any(String));

    const revoked = await ws.addKey(['campaigns.duplicate'], 'revoked while its GraphQL body comes');
    const refused = await slowBody(revoked.key, () => gw.app.admin.revokeKey(revoked.keyId), mutation('Never copied'), '', '/graphql');
    expect(refused).toMatchObject({ status: 401, quotaHeaders: false });
    expect(JSON.parse(refused.body)).toEqual({ errors: [{ message: 'Invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] });
    const requested = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: revoked.keyId, types: ['CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 5 });
    expect(requested).toEqual([]);
  });

  it.each([
    { name: 'malformed JSON', body: '{"campaign_id": "c", "name": ', headers: '' },
    { name: 'bytes that are not UTF-8', body: '{"campaign_id": "c", "name": "Caf\xe9"}', headers: '' },
    { name: 'two Idempotency-Key headers', body: '{"campaign_id": "c", "name": "Slow copy"}', headers: 'Idempotency-Key: a\r\nIdempotency-Key: b\r\n' },
  ])('shows no quota to a key revoked while its late body came, refused for $name', async ({ body, headers }) => {
    const kept = await ws.addKey(['campaigns.duplicate'], 'slow, refused, kept');
    expect(await slowBody(kept.key, async () => undefined, body, headers)).toMatchObject({ status: 400, quotaHeaders: true });

    const revoked = await ws.addKey(['campaigns.duplicate'], 'slow, refused, revoked');
    const before = await unauthenticated();
    expect(await slowBody(revoked.key, () => gw.app.admin.revokeKey(revoked.keyId), body, headers)).toMatchObject({ status: 400, quotaHeaders: false });
    // Refused for its body, which the service never saw: not a duplication refused for its key.
    expect(await unauthenticated()).toBe(before);
  });

  it('records what a key was created with in API_KEY_CREATED, as securityEvents shows it', async () => {
    const expiresAt = new Date(clock.now().getTime() + 86_400_000);
    const restricted = await gw.app.admin.createKey({
      workspace: ws.workspace.id,
      name: 'audited',
      permissions: ['campaigns.duplicate', 'campaigns.list'],
      allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'],
      expiresAt,
    });
    const plain = await gw.app.admin.createKey({ workspace: ws.workspace.id, name: 'audited plain', permissions: ['campaigns.list'] });
    const created = async (keyId: string) => {
      const response = await graphql(
        gw.baseUrl,
        ws.key,
        'query ($key: ID!) { securityEvents(filter: {apiKeyId: $key, types: [API_KEY_CREATED]}) { edges { node { type apiKey { id name } channel ip jobId campaignId details } } } }',
        { key: keyId },
      );
      return response.body.data.securityEvents.edges.map((edge: any) => edge.node);
    };
    const event = (id: string, name: string, details: Record<string, unknown>) => ({
      type: 'API_KEY_CREATED',
      apiKey: { id, name },
      channel: null,
      ip: null,
      jobId: null,
      campaignId: null,
      details,
    });
    expect(await created(restricted.record.id)).toEqual([
      event(restricted.record.id, 'audited', {
        permissions: ['campaigns.duplicate', 'campaigns.list'],
        allowedCidrs: ['10.0.0.0/8', '2001:db8::/32'],
        expiresAt: expiresAt.toISOString(),
      }),
    ]);
    expect(await created(plain.record.id)).toEqual([
      event(plain.record.id, 'audited plain', { permissions: ['campaigns.list'], allowedCidrs: null, expiresAt: null }),
    ]);
  });

  it('records when a key was last used, at most once a minute', async () => {
    const { key, keyId } = await ws.addKey(['campaigns.list']);
    const lastUsed = async () => (await gw.app.store.findApiKey(keyId))!.lastUsedAt;
    expect(await lastUsed()).toBeNull();
    /** Lists campaigns with the key, then reads last_used_at once any write of it the request caused has landed. */
    const listThenLastUsed = async () => {
      expect((await graphql(gw.baseUrl, key, '{ campaigns { edges { node { id } } } }')).status).toBe(200);
      await touchesLanded();
      return lastUsed();
    };
    const first = await listThenLastUsed();
    expect(first).toEqual(clock.now());
    clock.advance(30_000);
    expect(await listThenLastUsed()).toEqual(first);
    clock.advance(31_000);
    expect(await listThenLastUsed()).toEqual(clock.now());
  });

  it("reads no other key again when one's last use is written, and refuses what the key CLI changes from the next request", async () => {
    const keyLoads = countStatements(gw.app.store, KEY_BY_HASH);
    const [rest] = transports;
    const status = async (key: string) => (await duplicate(rest, key)).status;
    const [revoked, rotated, narrowed, expired] = await Promise.all([1, 2, 3, 4].map(() => ws.addKey(['campaigns.duplicate'])));
    const keys = [revoked, rotated, narrowed, expired];
    for (const { key } of keys) expect(await status(key)).toBe(202);
    await touchesLanded();
    const loaded = keyLoads();
    clock.advance(61_000);
    // Each request writes its key's last use.
    for (const { key } of keys) {
      expect(await status(key)).toBe(202);
      await touchesLanded();
    }
    for (const { key } of keys) expect(await status(key)).toBe(202);
    expect(keyLoads()).toBe(loaded);

    const file = join(storeDir, 'gateway.db');
    const cli = new SqliteStore({ filename: file });
    try {
      const admin = new AdminService(cli, clock);
      await admin.revokeKey(revoked.keyId);
      expect(await status(revoked.key)).toBe(401);
      const replacement = await admin.rotateKey(rotated.keyId);
      expect(await status(rotated.key)).toBe(401);
      expect(await status(replacement.key)).toBe(202);
    } finally {
      await cli.close();
    }
    // No command changes a key's permissions or expiry; changed in the database, they apply as well.
    const db = new Database(file);
    try {
      db.prepare("UPDATE api_keys SET permissions = '[]' WHERE id = ?").run(narrowed.keyId);
      db.prepare('UPDATE api_keys SET expires_at = ? WHERE id = ?').run(clock.now().getTime(), expired.keyId);
    } finally {
      db.close();
    }
    expect(await status(narrowed.key)).toBe(403);
    expect(await status(expired.key)).toBe(401);
  });

  it('keeps no key anywhere in the database files or the log', async () => {
    // Keys created, added, revoked and rotated with and without overlap, each used on both transports, accepted and refused.
    const use = async (key: string, headers: Record<string, string> = {}) => {
      for (const client of transports) await duplicate(client, key, headers);
    };
    const limited = await gw.app.admin.createKey({
      workspace: ws.workspace.id,
      name: 'leak check limited',
      permissions: ['campaigns.duplicate', 'campaigns.list'],
      allowedCidrs: ['10.0.0.0/8'],
      expiresAt: new Date(clock.now().getTime() + 3600_000),
    });
    const listOnly = await ws.addKey(['campaigns.list'], 'leak check list only');
    const revoked = await ws.addKey(['campaigns.duplicate'], 'leak check revoked');
    const rotating = await ws.addKey(['campaigns.duplicate'], 'leak check rotating');
    await use(ws.key);
    // A valid key pasted by its caller where the store, the events or the upstream would keep it.
    for (const client of transports) {
      const misplaced = [
        client.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: `Copy ${ws.key}` }),
        client.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'Copy', description: `see ${ws.key}` }),
        client.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'Copy' }, { idempotencyKey: ws.key }),
      ];
      for (const outcome of await Promise.all(misplaced)) expect(outcome.code).toBe('BAD_USER_INPUT');
      const traced = await client.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'Copy' }, { headers: { 'x-request-id': ws.key } });
      expect(traced.jobId).not.toBeNull();
      expect(traced.response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    }
    await use(flipLastChecksumCharacter(ws.key));
    await use(limited.key, xff('10.1.2.3'));
    await use(limited.key, xff('192.0.2.1'));
    await use(listOnly.key);
    await graphql(gw.baseUrl, listOnly.key, '{ campaigns { edges { node { id } } } }');
    await use(revoked.key);
    await gw.app.admin.revokeKey(revoked.keyId);
    await use(revoked.key);
    const overlapping = await gw.app.admin.rotateKey(rotating.keyId, 3600_000);
    await use(rotating.key);
    await use(overlapping.key);
    const replaced = await gw.app.admin.rotateKey(rotating.keyId);
    await use(overlapping.key);
    await use(replaced.key);
    clock.advance(3600_000);
    await use(limited.key, xff('10.1.2.3'));
    await touchesLanded();
    const issued = [ws.key, limited.key, listOnly.key, revoked.key, rotating.key, overlapping.key, replaced.key];
    // Not a key, but all of one secret bar its last character.
    const sent = [...issued, flipLastChecksumCharacter(ws.key)];

    const db = new Database(join(storeDir, 'gateway.db'), { readonly: true });
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((row) => row.name);
    expect(tables).toEqual(expect.arrayContaining(['api_keys', 'security_events', 'jobs', 'campaigns', 'workspaces', 'idempotency_keys']));
    const dump = tables.map((table) => JSON.stringify(db.prepare(`SELECT * FROM "${table}"`).all())).join('\n');
    db.close();
    const files = readdirSync(storeDir).map((file) => readFileSync(join(storeDir, file)).toString('latin1'));
    // The keys are there, by their display prefix: the search below looks where they are kept.
    for (const key of [ws.key, limited.key, listOnly.key, revoked.key, replaced.key]) expect(dump).toContain(displayPrefix(key));
    for (const key of sent) {
      const secret = key.slice(10);
      for (const haystack of [dump, ...files, logs.lines.join('')]) {
        expect(haystack).not.toContain(key);
        expect(haystack).not.toContain(secret);
      }
    }
    expect(logs.lines.length).toBeGreaterThan(0);
  });
});

describe.skipIf(skipWithoutPostgres)("a key's last use that PostgreSQL will not write", () => {
  const clock = new ManualClock();
  const logs = recordingLogger();
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  let gw: TestGateway;
  let ws: TestWorkspace;
  let touchesLanded: () => Promise<unknown>;

  beforeAll(async () => {
    schema = await createTestSchema();
    const store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    const counting = countingStore(store);
    touchesLanded = counting.touchesLanded;
    gw = await startGateway({ WORKER_CONCURRENCY: '0' }, { store: counting.store, clock, logger: logs.logger });
    ws = await gw.workspace('unwritable');
  });

  afterAll(async () => {
    await gw?.close();
    await schema?.drop();
  });

  it('is tried once a minute per key, not at every request, and logged when it starts failing, once a minute, and when it works again', async () => {
    const table = `${schema.schema}.api_keys`;
    const attempts = `${schema.schema}.last_use_attempts`;
    // Each write tried draws a number, which the refusal does not roll back, then is refused.
    await withAdmin((client) =>
      client.query(`
        CREATE SEQUENCE ${attempts};
        CREATE FUNCTION ${schema.schema}.refuse_last_use() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN PERFORM nextval('${attempts}'); RAISE EXCEPTION 'last use refused'; END $$;
        CREATE TRIGGER refuse_last_use BEFORE UPDATE OF last_used_at ON ${table}
          FOR EACH ROW EXECUTE FUNCTION ${schema.schema}.refuse_last_use();`),
    );
    const tried = () =>
      withAdmin(async (client) => {
        const { rows } = await client.query(`SELECT last_value, is_called FROM ${attempts}`);
        return rows[0].is_called ? Number(rows[0].last_value) : 0;
      });
    const second = await ws.addKey(['campaigns.list']);
    const use = async (key: string, times: number) => {
      for (let request = 0; request < times; request++) {
        expect((await graphql(gw.baseUrl, key, '{ viewer { workspaceId } }')).status).toBe(200);
      }
      await touchesLanded();
    };
    const lastUse = () => componentLines(logs.lines, 'service');

    await use(ws.key, 5);
    await use(second.key, 5);
    expect(await tried()).toBe(2);
    expect(lastUse()).toEqual([
      expect.objectContaining({ level: 40, msg: "could not record the API key's last use", keyId: ws.keyId, err: expect.objectContaining({ message: 'last use refused' }) }),
    ]);

    clock.advance(30_000);
    await use(ws.key, 3);
    expect(await tried()).toBe(2);
    clock.advance(30_000);
    await use(ws.key, 3);
    await use(second.key, 3);
    expect(await tried()).toBe(4);
    expect(lastUse().slice(1)).toEqual([
      expect.objectContaining({ level: 40, msg: "API keys' last use still cannot be recorded", failures: 3, cause: expect.objectContaining({ message: 'last use refused' }) }),
    ]);

    await withAdmin((client) => client.query(`DROP TRIGGER refuse_last_use ON ${table}`));
    clock.advance(60_000);
    await use(ws.key, 3);
    expect((await gw.app.store.findApiKey(ws.keyId))!.lastUsedAt).toEqual(clock.now());
    expect(lastUse().slice(2)).toEqual([expect.objectContaining({ level: 30, msg: "API keys' last use is recorded again", failures: 4 })]);
  });
});
