import { parse } from 'csv-parse/sync';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { generateApiKey } from '../../src/domain/keys.js';
import { ManualClock } from '../support/clock.js';
import {
  bearer,
  graphql,
  http,
  recordingLogger,
  startGateway,
  storeFailingOn,
  storeHeldOn,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { STORES } from '../support/stores.js';
import { transports, type Outcome, type Transport } from '../support/transports.js';

const EVENTS = `query ($filter: SecurityEventFilter) {
  securityEvents(filter: $filter, first: 50) { edges { node { type apiKey { id name } channel ip details } } }
}`;

/** Refusal events a key may record a second: a window passes within a test that needs one. */
const BUDGET = 3;

describe.each(STORES)('a known key refused, on $name', ({ skip, open }) => {
  const clock = new ManualClock();
  const logs = recordingLogger();
  let failing = false;
  /** While set, the store's writes of events wait for it. */
  let held: Promise<void> | undefined;
  let gw: TestGateway;
  let ws: TestWorkspace;
  let drop: () => Promise<void>;

  const xff = { 'x-forwarded-for': '192.0.2.7' };
  const duplicate = (client: Transport, key: string) => client.duplicate(gw.baseUrl, key, { campaignId: ws.campaign.id, name: 'Copy' }, { headers: xff });
  /** What a caller can see of a refusal: all of it but the request id and the date. */
  const answer = (outcome: Outcome) => ({
    status: outcome.status,
    body: outcome.response.text,
    type: outcome.response.headers['content-type'],
    challenge: outcome.response.headers['www-authenticate'],
  });
  /** The key's events as `reader` lists them with securityEvents. */
  const eventsOf = async (keyId: string, reader = ws.key, types?: string[]) => {
    const response = await graphql(gw.baseUrl, reader, EVENTS, { filter: { apiKeyId: keyId, types } });
    expect(response.body.errors).toBeUndefined();
    return response.body.data.securityEvents.edges.map((edge: any) => edge.node);
  };
  const rejections = (keyId: string) => eventsOf(keyId, ws.key, ['API_KEY_REJECTED']);
  /** The key's API_KEY_REJECTED events once there are `count`: the 401 is answered without waiting for them. */
  const rejectionsOnce = (keyId: string, count: number) =>
    waitFor(async () => {
      const events = await rejections(keyId);
      return events.length >= count && events;
    });
  const logLines = () => logs.lines.map((line) => JSON.parse(line));

  beforeAll(async () => {
    if (skip) return;
    const opened = await open();
    drop = opened.drop;
    const failingStore = storeFailingOn(opened.store, ['insertEvent'], () => failing, () => dependencyUnavailable(new Error('connection lost')));
    const store = storeHeldOn(failingStore, ['insertEvent'], () => held);
    gw = await startGateway(
      { TRUST_PROXY: '127.0.0.1', DUPLICATE_RATE_LIMIT: '10000', AUTH_FAILURE_LIMIT: '10000' },
      { store, clock, logger: logs.logger, refusalEventLimiter: new RateLimiterMemory({ points: BUDGET, duration: 1 }) },
    );
    ws = await gw.workspace('rejections');
  });

  afterAll(async () => {
    await gw?.close();
    await drop?.();
  });

  describe.skipIf(skip).each(transports)('over $name', (client) => {
    it('records a revoked key as API_KEY_REJECTED, answers it as an unknown key, and logs its id on the 401', async () => {
      const { key, keyId } = await ws.addKey(['campaigns.duplicate'], `revoked over ${client.name}`);
      await gw.app.admin.revokeKey(keyId);
      const refused = await duplicate(client, key);
      const unknown = await duplicate(client, generateApiKey());
      expect(refused).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect(answer(refused)).toEqual(answer(unknown));
      expect(await rejectionsOnce(keyId, 1)).toEqual([
        { type: 'API_KEY_REJECTED', apiKey: { id: keyId, name: `revoked over ${client.name}` }, channel: client.name, ip: '192.0.2.7', details: { reason: 'revoked', requestId: expect.any(String) } },
      ]);
      const completed = (id: unknown) => logLines().find((line) => line.msg === 'request completed' && line.reqId === id);
      expect(completed(refused.response.headers['x-request-id'])).toMatchObject({ res: { statusCode: 401 }, apiKeyId: keyId, apiKeyRejected: 'revoked' });
      expect(completed(unknown.response.headers['x-request-id'])).not.toHaveProperty('apiKeyId');
    });

    it('records the secret a rotation without overlap replaced as rotated_out, answers it as an unknown key, and logs its id on the 401', async () => {
      const { key: replaced, keyId } = await ws.addKey(['campaigns.duplicate'], `rotated at once over ${client.name}`);
      const { key: current, previousValidUntil } = await gw.app.admin.rotateKey(keyId);
      expect(previousValidUntil).toBeNull();
      const refused = await duplicate(client, replaced);
      const unknown = await duplicate(client, generateApiKey());
      expect(refused).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect(answer(refused)).toEqual(answer(unknown));
      expect((await duplicate(client, current)).code).toBeNull();
      expect(await rejectionsOnce(keyId, 1)).toEqual([
        {
          type: 'API_KEY_REJECTED',
          apiKey: { id: keyId, name: `rotated at once over ${client.name}` },
          channel: client.name,
          ip: '192.0.2.7',
          details: { reason: 'rotated_out', secret: 'previous', requestId: expect.any(String) },
        },
      ]);
      const completed = logLines().find((line) => line.msg === 'request completed' && line.reqId === refused.response.headers['x-request-id']);
      expect(completed).toMatchObject({ res: { statusCode: 401 }, apiKeyId: keyId, apiKeyRejected: 'rotated_out' });
    });

    it('records an expired key', async () => {
      const created = await gw.app.admin.createKey({
        workspace: ws.workspace.id,
        name: `expiring over ${client.name}`,
        permissions: ['campaigns.duplicate'],
        expiresAt: new Date(clock.now().getTime() + 3600_000),
      });
      clock.advance(3600_000);
      expect(await duplicate(client, created.key)).toMatchObject({ status: 401 });
      expect((await rejectionsOnce(created.record.id, 1)).map((event: any) => event.details)).toEqual([{ reason: 'expired', requestId: expect.any(String) }]);
    });

    it("tells a rotated key's secrets apart in its request events, and records the previous one past its overlap", async () => {
      const { key: previous, keyId } = await ws.addKey(['campaigns.duplicate'], `rotated over ${client.name}`);
      const { key: current } = await gw.app.admin.rotateKey(keyId, 3600_000);
      expect((await duplicate(client, previous)).code).toBeNull();
      expect((await duplicate(client, current)).code).toBeNull();
      const requested = await eventsOf(keyId, ws.key, ['CAMPAIGN_DUPLICATION_REQUESTED']);
      expect(requested.map((event: any) => event.details.secret ?? 'current')).toEqual(['current', 'previous']);

      clock.advance(3600_000);
      expect(await duplicate(client, previous)).toMatchObject({ status: 401 });
      await rejectionsOnce(keyId, 1);
      // Its own key, without security_events.read, sees its requests but not what an old secret of it was refused.
      const own = await eventsOf(keyId, current, ['CAMPAIGN_DUPLICATION_REQUESTED', 'API_KEY_REJECTED']);
      expect(own.map((event: any) => event.type)).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
      await gw.app.admin.revokeKey(keyId);
      expect(await duplicate(client, current)).toMatchObject({ status: 401 });
      await rejectionsOnce(keyId, 2);
      expect(await duplicate(client, previous)).toMatchObject({ status: 401 });
      expect((await rejectionsOnce(keyId, 3)).map((event: any) => event.details)).toEqual([
        { reason: 'revoked', secret: 'previous', requestId: expect.any(String) },
        { reason: 'revoked', requestId: expect.any(String) },
        { reason: 'rotated_out', secret: 'previous', requestId: expect.any(String) },
      ]);
    });

    it('says which secret a refused permission was asked with during an overlap', async () => {
      const { key: previous, keyId } = await ws.addKey(['campaigns.list'], `narrow over ${client.name}`);
      const { key: current } = await gw.app.admin.rotateKey(keyId, 3600_000);
      expect(await duplicate(client, previous)).toMatchObject({ code: 'FORBIDDEN' });
      expect(await duplicate(client, current)).toMatchObject({ code: 'FORBIDDEN' });
      expect((await eventsOf(keyId, ws.key, ['PERMISSION_DENIED'])).map((event: any) => event.details)).toEqual([
        { permission: 'campaigns.duplicate', requestId: expect.any(String) },
        { permission: 'campaigns.duplicate', secret: 'previous', requestId: expect.any(String) },
      ]);
    });
  });

  it.skipIf(skip)('records at most its budget for a revoked key sent again and again, and counts the rest in the next event', async () => {
    const [client] = transports;
    const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'revoked and spammed');
    await gw.app.admin.revokeKey(keyId);
    let refusals = 0;
    // Until a window has passed with refusals left unrecorded in the one before.
    await waitFor(async () => {
      expect((await duplicate(client, key)).status).toBe(401);
      refusals += 1;
      return (await rejections(keyId)).some((event: any) => event.details.unrecordedBefore !== undefined);
    });
    const unrecordedIn = (events: any[]) => events.reduce((sum: number, event: any) => sum + Number(event.details.unrecordedBefore ?? 0), 0);
    // The last refusals' events may still be on their way.
    const recorded = await waitFor(async () => {
      const events = await rejections(keyId);
      return events.length + unrecordedIn(events) === refusals && events;
    });
    expect(unrecordedIn(recorded)).toBeGreaterThan(0);
    const counting = recorded.find((event: any) => event.details.unrecordedBefore !== undefined);
    expect(counting.details).toEqual({ reason: 'revoked', unrecordedBefore: expect.any(Number), requestId: expect.any(String) });
  });

  it.skipIf(skip)('answers the same 401 when the store cannot take the event, logs that once, and counts the refusal in the next event', async () => {
    const [, client] = transports;
    const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'revoked during an outage');
    await gw.app.admin.revokeKey(keyId);
    const unknown = await duplicate(client, generateApiKey());
    const service = () => logLines().filter((line) => line.component === 'service');
    failing = true;
    let refused: Outcome;
    try {
      refused = await duplicate(client, key);
      // The 401 does not wait for the event's write: the store fails it until it has been tried.
      await waitFor(async () => service().length > 0);
    } finally {
      failing = false;
    }
    expect(answer(refused)).toEqual(answer(unknown));
    expect(await rejections(keyId)).toEqual([]);
    expect(service()).toEqual([
      expect.objectContaining({ level: 40, msg: 'could not record a rejected API key as an API_KEY_REJECTED event', apiKeyId: keyId, cause: expect.objectContaining({ message: 'connection lost' }) }),
    ]);
    expect(await duplicate(client, key)).toMatchObject({ status: 401 });
    expect((await rejectionsOnce(keyId, 1)).map((event: any) => event.details)).toEqual([{ reason: 'revoked', unrecordedBefore: 1, requestId: expect.any(String) }]);
    await waitFor(async () => service().length > 1);
    expect(service().slice(1)).toEqual([expect.objectContaining({ level: 30, msg: 'rejected API keys are recorded as events again' })]);
  });

  it.skipIf(skip)("answers the 401 without waiting for the event's write", async () => {
    const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'revoked, its event held');
    await gw.app.admin.revokeKey(keyId);
    let release!: () => void;
    held = new Promise((resolve) => (release = resolve));
    try {
      expect(await duplicate(transports[0], key)).toMatchObject({ status: 401 });
      expect(await rejections(keyId)).toEqual([]);
    } finally {
      held = undefined;
      release();
    }
    expect((await rejectionsOnce(keyId, 1)).map((event: any) => event.details.reason)).toEqual(['revoked']);
  });

  it.skipIf(skip)('lists API_KEY_REJECTED in the CSV download by a readable name', async () => {
    const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'revoked, downloaded');
    await gw.app.admin.revokeKey(keyId);
    expect((await duplicate(transports[0], key)).status).toBe(401);
    await rejectionsOnce(keyId, 1);
    const response = await http(gw.baseUrl, 'GET', '/security_events/download?start=2029-12-01&end=2030-12-01', { headers: bearer(ws.key) });
    expect(response.status).toBe(200);
    const rows: Record<string, string>[] = parse(response.text, { columns: true });
    const row = rows.find((candidate) => {
      const properties = JSON.parse(candidate.JsonProperties);
      return properties.api_key_id === keyId && properties.event_type === 'API_KEY_REJECTED';
    });
    expect(row?.EventName).toBe('Rejected Revoked, Expired or Rotated-out API Key');
    expect(JSON.parse(row!.JsonProperties)).toMatchObject({ channel: 'REST', ip: '192.0.2.7', details: { reason: 'revoked' } });
  });
});

describe('the budget of refusal events', () => {
  const clock = new ManualClock();
  // A window no test outlasts, read and reset by the tests themselves.
  const limiter = new RateLimiterMemory({ points: BUDGET, duration: 3600 });
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: '10000', AUTH_FAILURE_LIMIT: '10000' }, { clock, refusalEventLimiter: limiter });
    ws = await gw.workspace('refusal budget');
  });

  afterAll(() => gw?.close());

  const duplicate = (key: string) => transports[0].duplicate(gw.baseUrl, key, { campaignId: ws.campaign.id, name: 'Copy' });
  const refusals = async (keyId: string) => {
    const response = await graphql(gw.baseUrl, ws.key, EVENTS, { filter: { apiKeyId: keyId, types: ['PERMISSION_DENIED', 'API_KEY_REJECTED'] } });
    return response.body.data.securityEvents.edges.map((edge: any) => ({ type: edge.node.type, ...edge.node.details }));
  };
  /** Refusal events the limiter has counted for the key, whichever secret they were for. */
  const taken = async (keyId: string) =>
    ((await limiter.get(keyId))?.consumedPoints ?? 0) + ((await limiter.get(`${keyId}:previous`))?.consumedPoints ?? 0);

  it("shares one budget between a secret's PERMISSION_DENIED and API_KEY_REJECTED", async () => {
    const { key, keyId } = await ws.addKey(['campaigns.list'], 'denied, then revoked');
    for (let refusal = 0; refusal < BUDGET; refusal++) expect(await duplicate(key)).toMatchObject({ code: 'FORBIDDEN' });
    await gw.app.admin.revokeKey(keyId);
    expect(await duplicate(key)).toMatchObject({ status: 401 });
    await waitFor(async () => (await taken(keyId)) === BUDGET + 1);
    // The next window: the rejection the spent budget left unrecorded is counted in the next one.
    await limiter.delete(keyId);
    expect(await duplicate(key)).toMatchObject({ status: 401 });
    const events = await waitFor(async () => {
      const recorded = await refusals(keyId);
      return recorded.length === BUDGET + 1 && recorded;
    });
    expect(events.map((event: any) => [event.type, event.unrecordedBefore])).toEqual([
      ['API_KEY_REJECTED', 1],
      ...Array.from({ length: BUDGET }, () => ['PERMISSION_DENIED', undefined]),
    ]);
  });

  it("leaves the current secret's refusals recorded while a rotated-out secret is sent again and again", async () => {
    const { key: previous, keyId } = await ws.addKey(['campaigns.list'], 'rotated, old secret looped');
    const { key: current } = await gw.app.admin.rotateKey(keyId, 60_000);
    clock.advance(60_000);
    for (let refusal = 0; refusal <= BUDGET; refusal++) expect(await duplicate(previous)).toMatchObject({ status: 401 });
    await waitFor(async () => (await taken(keyId)) === BUDGET + 1);

    expect(await duplicate(current)).toMatchObject({ code: 'FORBIDDEN' });
    const events = await refusals(keyId);
    expect(events[0]).toEqual({ type: 'PERMISSION_DENIED', permission: 'campaigns.duplicate', requestId: expect.any(String) });
    expect(events.slice(1)).toEqual(Array.from({ length: BUDGET }, () => ({ type: 'API_KEY_REJECTED', reason: 'rotated_out', secret: 'previous', requestId: expect.any(String) })));
  });
});
