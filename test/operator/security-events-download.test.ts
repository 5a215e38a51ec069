import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { parse } from 'csv-parse/sync';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createStore, SECURITY_EVENT_DOWNLOADS_PER_MINUTE } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { AdminService } from '../../src/domain/admin.js';
import { DOWNLOAD_REPLACEABLE_AFTER_MS } from '../../src/domain/download-slots.js';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import type { GatewayStore, ListOptions } from '../../src/domain/ports.js';
import { DOWNLOAD_BATCH_SIZE } from '../../src/domain/service.js';
import type { NewSecurityEvent, SecurityEventFilter } from '../../src/domain/types.js';
import { EVENT_NAMES, type DownloadClientLimits } from '../../src/http/security-events-download.js';
import {
  bearer,
  createTestWorkspace,
  graphql,
  http,
  json,
  metricSample as sample,
  recordingLogger,
  startGateway,
  storeFailingOn,
  storeHeldOn,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { ManualClock } from '../support/clock.js';
import { LogSink } from '../support/log-sink.js';
import { spawnGateway, type GatewayProcess } from '../support/process.js';
import { STORES } from '../support/stores.js';

const COLUMNS = ['CreatedAt', 'EmailAtTimeOfEvent', 'CurrentEmail', 'EventName', 'OtherAccount', 'JsonProperties'];

const rowsOf = (text: string): Record<string, string>[] => parse(text, { columns: true, skip_empty_lines: true });

const download = (gateway: TestGateway, key: string | null, query: string) =>
  http(gateway.baseUrl, 'GET', `/security_events/download${query}`, { headers: key ? bearer(key) : {} });

const event = (team: TestWorkspace, occurredAt: string, fields: Partial<NewSecurityEvent> = {}): NewSecurityEvent => ({
  id: randomUUID(),
  workspaceId: team.workspace.id,
  type: 'CAMPAIGN_DUPLICATION_REQUESTED',
  occurredAt: new Date(occurredAt),
  apiKeyId: team.keyId,
  apiKeyName: 'admin',
  channel: 'REST',
  ip: '127.0.0.1',
  jobId: null,
  campaignId: null,
  details: {},
  ...fields,
});

describe('GET /security_events/download', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gateway = await startGateway();
    ws = await gateway.workspace();
  });
  afterAll(() => gateway?.close());

  it("streams Braze's columns for a real duplication, with readable event names and the event as JSON", async () => {
    const name = 'Spring "sale", part 2';
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: ws.campaign.id, name, description: 'line one\nline two' }),
    });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id;
    await waitFor(async () => (await http(gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(ws.key) })).body.status === 'succeeded');

    const start = new Date(Date.now() - 3_600_000).toISOString();
    const end = new Date(Date.now() + 60_000).toISOString();
    const response = await download(gateway, ws.key, `?start=${start}&end=${end}`);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(response.headers['content-disposition']).toMatch(/^attachment; filename="security_events_.+\.csv"$/);
    expect(response.text.split('\n')[0]).toBe(COLUMNS.join(','));

    const rows = rowsOf(response.text).filter((row) => JSON.parse(row.JsonProperties).job_id === jobId);
    expect(rows.map((row) => row.EventName)).toEqual(['Duplicated Campaign via API', 'Requested Campaign Duplication via API']);
    const [done, requested] = rows;
    expect(JSON.parse(done.JsonProperties)).toMatchObject({
      event_type: 'CAMPAIGN_DUPLICATED',
      api_key_id: ws.keyId,
      api_key_name: expect.any(String),
      channel: 'REST',
      ip: '127.0.0.1',
      job_id: jobId,
      campaign_id: ws.campaign.id,
      result_campaign_id: expect.any(String),
      details: { name },
    });
    expect(JSON.parse(requested.JsonProperties).details).toMatchObject({ name, description: 'line one\nline two' });
    expect(new Date(done.CreatedAt).toISOString()).toBe(done.CreatedAt);
    expect([done.EmailAtTimeOfEvent, done.CurrentEmail, done.OtherAccount]).toEqual(['', '', '']);
  });

  it('includes start, excludes end, and pages through more events than one batch, newest first, each once', async () => {
    const team = await gateway.workspace(undefined, undefined, new Date('2021-02-28T00:00:00Z'));
    const other = await gateway.workspace(undefined, undefined, new Date('2021-02-28T00:00:00Z'));
    const count = DOWNLOAD_BATCH_SIZE * 2 + 500;
    const base = Date.parse('2021-03-01T00:00:00Z');
    const events = [
      event(team, '2021-02-28T23:59:59.999Z', { campaignId: 'before' }),
      ...Array.from({ length: count }, (_, index) => event(team, new Date(base + index * 1000).toISOString(), { campaignId: `c${index}` })),
      event(team, new Date(base + count * 1000).toISOString(), { campaignId: 'at-end' }),
      event(other, '2021-03-01T00:10:00Z', { campaignId: 'other-workspace' }),
    ];
    // Sent together, committed together: one commit instead of thousands.
    await Promise.all(events.map((item) => gateway.app.store.insertEvent(item)));

    const endIso = new Date(base + count * 1000).toISOString();
    const response = await download(gateway, team.key, `?start=2021-03-01&end=${endIso}`);
    expect(response.status).toBe(200);
    const campaigns = rowsOf(response.text).map((row) => JSON.parse(row.JsonProperties).campaign_id);
    expect(campaigns).toEqual(Array.from({ length: count }, (_, index) => `c${count - 1 - index}`));
  });

  it("starts with the header's own bytes, without a byte-order mark, as tools that parse Braze's download expect", async () => {
    const response = await request(`${gateway.baseUrl}/security_events/download?start=2024-05-01&end=2024-06-01`, { headers: bearer(ws.key) });
    const bytes = Buffer.from(await response.body.arrayBuffer());
    expect(bytes.subarray(0, 10).toString('latin1')).toBe('CreatedAt,');
  });

  it("names the file after the range, as the README's example shows", async () => {
    const response = await download(gateway, ws.key, '?start=2024-05-01&end=2024-06-01T00:00:00Z');
    expect(response.status).toBe(200);
    const header = 'attachment; filename="security_events_2024-05-01T00-00-00-000Z_2024-06-01T00-00-00-000Z.csv"';
    expect(response.headers['content-disposition']).toBe(header);
    expect(readFileSync(new URL('../../README.md', import.meta.url), 'utf8').replace(/\s+/g, ' ')).toContain(`\`Content-Disposition: ${header}\``);
  });

  it("the README's list of event names is every name a row can carry", () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const list = /`EventName` is readable \(([^)]*)\)/.exec(readme.replace(/\s+/g, ' '))?.[1] ?? '';
    expect([...list.matchAll(/`([^`]+)`/g)].map((match) => match[1]).sort()).toEqual(Object.values(EVENT_NAMES).sort());
  });

  it('has no HEAD, which would read the whole range for nothing', async () => {
    const response = await http(gateway.baseUrl, 'HEAD', '/security_events/download?start=2024-01-01&end=2024-02-01', { headers: bearer(ws.key) });
    expect(response.status).toBe(404);
  });

  it('takes date-times to the minute, with any time zone', async () => {
    const team = await gateway.workspace(undefined, undefined, new Date('2020-06-01T00:00:00Z'));
    for (const [at, campaignId] of [['2020-06-01T09:59:59Z', 'before'], ['2020-06-01T10:00:00Z', 'inside'], ['2020-06-01T10:01:00Z', 'at-end']]) {
      await gateway.app.store.insertEvent(event(team, at, { campaignId }));
    }
    const response = await download(gateway, team.key, `?start=2020-06-01T10:00Z&end=${encodeURIComponent('2020-06-01T12:01+02:00')}`);
    expect(response.status).toBe(200);
    expect(rowsOf(response.text).map((row) => JSON.parse(row.JsonProperties).campaign_id)).toEqual(['inside']);
  });

  it('answers an empty range with the header alone', async () => {
    const response = await download(gateway, ws.key, '?start=1999-01-01&end=1999-02-01');
    expect(response.status).toBe(200);
    expect(response.text).toBe(`${COLUMNS.join(',')}\n`);
  });

  it('takes a range of exactly 366 days, the longest', async () => {
    // 2024 is a leap year: 366 days to the first of 2025.
    const response = await download(gateway, ws.key, '?start=2024-01-01&end=2025-01-01');
    expect(response.status).toBe(200);
    expect(response.text).toBe(`${COLUMNS.join(',')}\n`);
  });

  it.each([
    ['', ["'start' is required", "'end' is required"]],
    ['?start=2024-01-01', ["'end' is required"]],
    ['?start=yesterday&end=2024-01-01', ["'start' must be an ISO 8601 date"]],
    ['?start=2024-01-01T10:00:00&end=2024-01-02', ["'start' must be an ISO 8601 date (2024-05-01) or date-time with a time zone"]],
    ['?start=2024-02-30&end=2024-03-02', ["'start' must be an ISO 8601 date"]],
    ['?start=2024-01-01&end=2024-01-01&x=1', ["'end' must be after start: both come to 2024-01-01T00:00:00.000Z, as each is taken to the millisecond, a finer fraction rounded up to the next"]],
    ['?start=2024-02-01&end=2024-01-01', ["'end' must be after start"]],
    ['?start=2023-01-01&end=2024-06-01', ["'end' must be at most 366 days after start"]],
    ['?start=2024-01-01&end=2025-01-01T00:00:00.001Z', ["'end' must be at most 366 days after start"]],
    ['?start=2024-01-01&start=2024-01-02&end=2024-02-01', ["'start' must be an ISO 8601 date"]],
  ])('refuses the range %s with a 400 that says why', async (query, problems) => {
    const response = await download(gateway, ws.key, query);
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect(response.body.message).toBe('Invalid date range');
    expect(response.body.errors).toHaveLength(problems.length);
    problems.forEach((problem, index) => expect(response.body.errors[index]).toContain(problem));
  });

  it('is recorded as a SECURITY_EVENTS_DOWNLOADED event, which the workspace sees as any other and the download itself does not list', async () => {
    const team = await gateway.workspace();
    const reader = await team.addKey(['security_events.read'], 'auditor');
    const start = new Date(Date.now() - 3_600_000).toISOString();
    const end = new Date(Date.now() + 3_600_000).toISOString();
    const query = `?start=${start}&end=${encodeURIComponent(end)}`;
    const first = await http(gateway.baseUrl, 'GET', `/security_events/download${query}`, { headers: { ...bearer(reader.key), 'x-request-id': 'audit-7' } });
    expect(first.status).toBe(200);
    expect(rowsOf(first.text).map((row) => row.EventName)).not.toContain('Downloaded Security Events');

    // Another key of the workspace with security_events.read sees it, as it sees every event.
    const listed = await graphql(
      gateway.baseUrl,
      team.key,
      '{ securityEvents(filter: {types: [SECURITY_EVENTS_DOWNLOADED]}) { edges { node { type apiKey { id name } channel ip details } } } }',
    );
    expect(listed.body.data.securityEvents.edges).toEqual([
      {
        node: {
          type: 'SECURITY_EVENTS_DOWNLOADED',
          apiKey: { id: reader.keyId, name: 'auditor' },
          channel: 'REST',
          ip: '127.0.0.1',
          details: { start, end, requestId: 'audit-7' },
        },
      },
    ]);

    const second = await download(gateway, reader.key, query);
    const [row] = rowsOf(second.text).filter((candidate) => candidate.EventName === 'Downloaded Security Events');
    expect(JSON.parse(row.JsonProperties)).toMatchObject({
      event_type: 'SECURITY_EVENTS_DOWNLOADED',
      api_key_id: reader.keyId,
      channel: 'REST',
      ip: '127.0.0.1',
      details: { start, end, requestId: 'audit-7' },
    });
  });

  it("writes a newer version's events of a type it has no name for as they are stored, which securityEvents leaves out of its pages without an error", async () => {
    const team = await gateway.workspace(undefined, undefined, new Date('2022-03-31T00:00:00Z'));
    // As a newer version sharing the store in a rolling upgrade writes them.
    const newer = (occurredAt: string) => event(team, occurredAt, { type: 'CAMPAIGN_ARCHIVED' as NewSecurityEvent['type'], campaignId: occurredAt });
    for (const item of [
      event(team, '2022-04-01T00:00:00Z', { campaignId: 'oldest' }),
      newer('2022-04-01T00:01:00Z'),
      newer('2022-04-01T00:02:00Z'),
      event(team, '2022-04-01T00:03:00Z', { type: 'PERMISSION_DENIED', campaignId: 'known' }),
      newer('2022-04-01T00:04:00Z'),
    ]) {
      await gateway.app.store.insertEvent(item);
    }

    const response = await download(gateway, team.key, '?start=2022-04-01&end=2022-04-02');
    expect(response.status).toBe(200);
    expect(rowsOf(response.text).map((row) => [row.EventName, JSON.parse(row.JsonProperties).event_type])).toEqual([
      ['CAMPAIGN_ARCHIVED', 'CAMPAIGN_ARCHIVED'],
      ['Denied API Key Permission', 'PERMISSION_DENIED'],
      ['CAMPAIGN_ARCHIVED', 'CAMPAIGN_ARCHIVED'],
      ['CAMPAIGN_ARCHIVED', 'CAMPAIGN_ARCHIVED'],
      ['Requested Campaign Duplication via API', 'CAMPAIGN_DUPLICATION_REQUESTED'],
    ]);

    // Pages of one, in the window of the events above (the key's creation and the download are outside it): the two
    // unknown events between the known ones end no listing early.
    const seen: unknown[] = [];
    let after: string | null = null;
    do {
      const page = await graphql(
        gateway.baseUrl,
        team.key,
        'query ($after: String) { securityEvents(first: 1, after: $after, filter: {since: "2022-04-01T00:00:00Z", until: "2022-04-02T00:00:00Z"}) { edges { node { type campaignId } } pageInfo { hasNextPage endCursor } } }',
        { after },
      );
      expect(page.body.errors).toBeUndefined();
      seen.push(...page.body.data.securityEvents.edges.map((edge: { node: unknown }) => edge.node));
      after = page.body.data.securityEvents.pageInfo.hasNextPage ? page.body.data.securityEvents.pageInfo.endCursor : null;
    } while (after !== null);
    expect(seen).toEqual([
      { type: 'PERMISSION_DENIED', campaignId: 'known' },
      { type: 'CAMPAIGN_DUPLICATION_REQUESTED', campaignId: 'oldest' },
    ]);
  });

  it("says to URL-encode an offset's + when one sent unencoded arrived as a space, and only then", async () => {
    const hint = "; a + in a query string is read as a space: URL-encode the offset's + as %2B (2024-05-01T12:00:00%2B01:00)";
    const invalid = "must be an ISO 8601 date (2024-05-01) or date-time with a time zone (2024-05-01T12:00:00Z)";
    const unencoded = await download(gateway, ws.key, '?start=2024-01-01T10:00:00.5+01:00&end=2024-02-01T00:00+05:30');
    expect(unencoded.status).toBe(400);
    expect(unencoded.body.errors).toEqual([`'start' ${invalid}${hint}`, `'end' ${invalid}${hint}`]);
    // A space that stands for no +, or one whose + would not make a date-time either, gets no such hint.
    const spaced = await download(gateway, ws.key, `?start=${encodeURIComponent('2024-01-01 10:00:00Z')}&end=2024-02-01T00:00:00+25:00`);
    expect(spaced.body.errors).toEqual([`'start' ${invalid}`, `'end' ${invalid}`]);
    const encoded = await download(gateway, ws.key, '?start=2024-01-01T10:00:00%2B01:00&end=2024-02-01');
    expect(encoded.status).toBe(200);
  });

  it('needs a valid key (401) and security_events.read (403, before the range is looked at, and recorded)', async () => {
    expect((await download(gateway, null, '?start=2024-01-01&end=2024-02-01')).status).toBe(401);
    expect((await download(gateway, 'cgw_not-a-key', '?start=2024-01-01&end=2024-02-01')).status).toBe(401);

    const { key, keyId } = await ws.addKey(['campaigns.duplicate']);
    const refused = await download(gateway, key, '?start=garbage');
    expect(refused.status).toBe(403);
    expect(refused.body).toEqual({ message: 'Access Denied', code: 'FORBIDDEN' });

    const events = await graphql(gateway.baseUrl, ws.key, 'query($id: ID!) { securityEvents(filter: {apiKeyId: $id, types: [PERMISSION_DENIED]}) { edges { node { details } } } }', { id: keyId });
    expect(events.body.data.securityEvents.edges.map((edge: any) => edge.node.details)).toEqual([
      { permission: 'security_events.read', requestId: refused.headers['x-request-id'] },
    ]);
  });

  it("bounds a key's downloads in a minute: past the budget one is refused with 429 and Retry-After and records nothing, and another key is not held back", async () => {
    const recorded = async (keyId: string) =>
      (await gateway.app.store.listEvents(ws.workspace.id, { types: ['SECURITY_EVENTS_DOWNLOADED'], apiKeyId: keyId }, { first: 100 })).length;
    const [looping, other] = [await ws.addKey(['security_events.read'], 'looping reader'), await ws.addKey(['security_events.read'], 'other reader')];
    for (let made = 0; made < SECURITY_EVENT_DOWNLOADS_PER_MINUTE; made++) {
      expect((await download(gateway, looping.key, '?start=1999-01-01&end=1999-02-01')).status).toBe(200);
    }
    expect(await recorded(looping.keyId)).toBe(SECURITY_EVENT_DOWNLOADS_PER_MINUTE);

    const refused = await download(gateway, looping.key, '?start=1999-01-01&end=1999-02-01');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(60);
    expect(refused.body).toEqual({ message: 'This API key has made too many security event downloads recently; try again later', code: 'RATE_LIMITED' });
    expect(await recorded(looping.keyId)).toBe(SECURITY_EVENT_DOWNLOADS_PER_MINUTE);

    expect((await download(gateway, other.key, '?start=1999-01-01&end=1999-02-01')).status).toBe(200);
    expect(await recorded(other.keyId)).toBe(1);
  });
});

describe('a download that cannot be recorded', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let failing = false;

  beforeAll(async () => {
    const outage = () => dependencyUnavailable(Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' }));
    gateway = await startGateway({}, {}, { wrapStore: (store) => storeFailingOn(store, ['insertEvent'], () => failing, outage) });
    ws = await gateway.workspace();
  });

  afterAll(() => gateway?.close());

  it('is refused with 503 and Retry-After, sending no event, and gives its slot back', async () => {
    failing = true;
    const refused = await download(gateway, ws.key, '?start=2024-01-01&end=2024-02-01');
    failing = false;
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.body).toEqual({ message: 'Service unavailable', code: 'UNAVAILABLE' });
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
    expect((await download(gateway, ws.key, '?start=2024-01-01&end=2024-02-01')).status).toBe(200);
  });
});

/** January 2019 holds the large events of `seedLargeEvents`; January 1999 holds nothing. */
const LARGE_RANGE = '?start=2019-01-01&end=2019-02-01';
/** When the workspaces that get those events are made: before them. */
const BEFORE_LARGE_EVENTS = new Date('2018-12-31T00:00:00Z');
const EMPTY_RANGE = '?start=1999-01-01&end=1999-02-01';
const LARGE_EVENTS = 2500;

/**
 * 2,500 events with 4,000-character descriptions, about 10 MB of CSV: more than the socket buffers between the
 * gateway and a client that reads nothing take, so such a client's download stays in progress.
 */
async function seedLargeEvents(store: GatewayStore, ws: TestWorkspace, base = Date.parse('2019-01-01T00:00:00Z')): Promise<void> {
  await Promise.all(
    Array.from({ length: LARGE_EVENTS }, (_, index) =>
      store.insertEvent({
        id: randomUUID(),
        workspaceId: ws.workspace.id,
        type: 'CAMPAIGN_DUPLICATION_REQUESTED',
        occurredAt: new Date(base + index * 1000),
        apiKeyId: ws.keyId,
        apiKeyName: 'admin',
        channel: 'REST',
        ip: '127.0.0.1',
        jobId: null,
        campaignId: `c${index}`,
        details: { name: `copy ${index}`, description: 'd'.repeat(4000), tagNames: ['promo'] },
      }),
    ),
  );
}

/** Downloads opened by a client that reads nothing of them, hung up after each test. */
const unreadBodies: Readable[] = [];

/** A download whose client reads nothing: it stays in progress, held back by the client, until `body.destroy()`. */
async function unreadDownload(gateway: TestGateway, key: string) {
  const response = await request(`${gateway.baseUrl}/security_events/download${LARGE_RANGE}`, { headers: bearer(key) });
  unreadBodies.push(response.body);
  return response;
}

/** Waits until a download of the workspace is taken again, after a refusal. */
const takenAgain = (gateway: TestGateway, key: string) =>
  waitFor(async () => (await download(gateway, key, EMPTY_RANGE)).status === 200);

const downloadsInProgress = async (gateway: TestGateway) =>
  sample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_security_event_downloads_in_progress');

/** Hangs up every download a test left unread, and waits until the gateway has let go of them all. */
async function hangUp(gateway: TestGateway): Promise<void> {
  for (const body of unreadBodies.splice(0)) body.destroy();
  await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
}

describe('downloads in progress at once', () => {
  let dir: string;
  let gateway: TestGateway;
  let a: TestWorkspace;
  let b: TestWorkspace;
  let c: TestWorkspace;
  /** Reads of the empty range's events: the downloads left unread go on reading theirs meanwhile. */
  let emptyRangeReads = 0;
  let failing: 'none' | 'first batch' | 'later batches' = 'none';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-downloads-'));
    const env = { DATA_DIR: dir, DOWNLOAD_CONCURRENCY: '3', DOWNLOAD_CONCURRENCY_PER_WORKSPACE: '2' };
    const store = storeFailingOn(await createStore(loadConfig(env), { olderSchema: 'upgrade' }), ['listEvents'], (...args) => {
      if ((args[1] as SecurityEventFilter).since?.getTime() === Date.parse('1999-01-01')) emptyRangeReads += 1;
      const later = (args[2] as ListOptions).beforeSeq !== undefined;
      return failing === (later ? 'later batches' : 'first batch');
    });
    gateway = await startGateway(env, { store });
    const early = () => gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
    [a, b, c] = [await early(), await early(), await early()];
    await Promise.all([seedLargeEvents(gateway.app.store, a), seedLargeEvents(gateway.app.store, b)]);
  });

  afterEach(async () => {
    failing = 'none';
    await hangUp(gateway);
  });

  afterAll(async () => {
    await gateway?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a workspace's third download with 429 and Retry-After before reading any event, until a client goes away", async () => {
    const [first, second] = [await unreadDownload(gateway, a.key), await unreadDownload(gateway, a.key)];
    expect([first.statusCode, second.statusCode]).toEqual([200, 200]);
    expect(await downloadsInProgress(gateway)).toBe(2);

    const readsBefore = emptyRangeReads;
    const refused = await download(gateway, a.key, EMPTY_RANGE);
    expect(refused.status).toBe(429);
    expect(refused.headers['content-type']).toMatch(/^application\/json/);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.body).toEqual({
      message: 'This workspace already has 2 security event downloads in progress; try again when one has finished',
      code: 'RATE_LIMITED',
    });
    expect(emptyRangeReads).toBe(readsBefore);
    const documented = (await http(gateway.baseUrl, 'GET', '/openapi.json')).body.paths['/security_events/download'].get.responses['429'];
    expect(documented.description).toContain('Too many downloads in progress');
    expect(Object.keys(documented.headers)).toContain('retry-after');
    // Another workspace is not held back by this one's downloads.
    expect((await download(gateway, b.key, EMPTY_RANGE)).status).toBe(200);

    first.body.destroy();
    await takenAgain(gateway, a.key);
  });

  it('takes a download again once one was sent in full, every row of it', async () => {
    const [, second] = [await unreadDownload(gateway, a.key), await unreadDownload(gateway, a.key)];
    expect((await download(gateway, a.key, EMPTY_RANGE)).status).toBe(429);

    const rows = rowsOf(await second.body.text());
    expect(rows).toHaveLength(LARGE_EVENTS);
    expect(JSON.parse(rows[0].JsonProperties).campaign_id).toBe(`c${LARGE_EVENTS - 1}`);
    await takenAgain(gateway, a.key);
  });

  it('bounds the instance as a whole: a workspace with none in progress waits while the instance has its three', async () => {
    const [, , third] = [await unreadDownload(gateway, a.key), await unreadDownload(gateway, a.key), await unreadDownload(gateway, b.key)];
    expect(third.statusCode).toBe(200);

    const refused = await download(gateway, c.key, EMPTY_RANGE);
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.body).toEqual({ message: 'Too many security event downloads are in progress; try again shortly', code: 'RATE_LIMITED' });

    third.body.destroy();
    await takenAgain(gateway, c.key);
  });

  it('gives the slot of a download that failed back, whether it failed before its first row or part-way', async () => {
    // A key of its own: the tests before spent most of the admin key's downloads this minute. Made now, as a.addKey
    // would make it, before the large events: the store finds a range's events by their order of insertion.
    const { key } = await gateway.app.admin.createKey({ workspace: a.workspace.id, name: 'failing downloads', permissions: ['security_events.read'] });
    failing = 'first batch';
    for (let attempt = 0; attempt < 3; attempt++) expect((await download(gateway, key, LARGE_RANGE)).status).toBe(500);
    failing = 'later batches';
    // The answer started as a 200; the gateway cuts it where the store failed.
    for (let attempt = 0; attempt < 3; attempt++) await expect(download(gateway, key, LARGE_RANGE)).rejects.toThrow();
    failing = 'none';
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);

    const [first, second] = [await unreadDownload(gateway, key), await unreadDownload(gateway, key)];
    expect([first.statusCode, second.statusCode]).toEqual([200, 200]);
    expect((await download(gateway, key, EMPTY_RANGE)).body.message).toMatch(/^This workspace already has 2/);
  });
});

/**
 * The real limits (1 KiB/s, 30 s behind it at most, 30 min earned ahead at most) made 1,024 times faster, so that a
 * download of the large events, which fills every socket buffer between gateway and client, takes seconds.
 */
const SCALED_LIMITS = { minimumRate: { bytes: 1024 * 1024, perMs: 1000 }, stallMs: 30, mostWaitEarnedMs: 1800 };

/** A chunked HTTP body as sent, and whether it came to its last chunk. */
function dechunk(raw: Buffer): { body: Buffer; whole: boolean } {
  const parts: Buffer[] = [];
  let at = raw.indexOf('\r\n\r\n') + 4;
  for (;;) {
    const lineEnd = raw.indexOf('\r\n', at);
    const size = lineEnd === -1 ? NaN : parseInt(raw.toString('latin1', at, lineEnd), 16);
    if (Number.isNaN(size) || raw.length < lineEnd + 2 + size + 2) return { body: Buffer.concat(parts), whole: false };
    if (size === 0) return { body: Buffer.concat(parts), whole: true };
    parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
}

/**
 * Downloads the large events on a raw socket that takes data from the kernel at `bytesPerSecond` on average and
 * never faster, so the gateway's socket buffers fill as they would for a slow link. Resolves once the gateway has
 * closed the connection and everything it sent was read.
 */
function readAtRate(gateway: TestGateway, key: string, bytesPerSecond: number): Promise<{ body: Buffer; whole: boolean }> {
  const socket = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
  // Not flowing: the socket stops reading from the kernel once it holds a little.
  socket.pause();
  socket.write(`GET /security_events/download${LARGE_RANGE} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ${key}\r\nConnection: close\r\n\r\n`);
  const started = performance.now();
  const received: Buffer[] = [];
  let taken = 0;
  const pace = setInterval(() => {
    const owed = Math.floor(((performance.now() - started) * bytesPerSecond) / 1000) - taken;
    // Reading nothing asks the socket for more from the kernel, and tells of the end once everything was read.
    const chunk = socket.read(owed > 0 ? Math.min(owed, socket.readableLength) : 0) as Buffer | null;
    if (chunk) {
      received.push(chunk);
      taken += chunk.length;
    }
  }, 10);
  return new Promise((resolve, reject) => {
    socket.once('end', () => {
      clearInterval(pace);
      resolve(dechunk(Buffer.concat(received)));
    });
    socket.once('error', (error) => {
      clearInterval(pace);
      reject(error);
    });
  });
}

/** A gateway asking `limits` of download clients, with one download per workspace, and a workspace of large events. */
async function limitedGateway(limits: Partial<DownloadClientLimits>) {
  const { logger, lines } = recordingLogger();
  const gateway = await startGateway({ DOWNLOAD_CONCURRENCY_PER_WORKSPACE: '1' }, { logger, downloadClientLimits: limits });
  const ws = await gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
  await seedLargeEvents(gateway.app.store, ws);
  return { gateway, ws, lines };
}

/** The one warning logged with `message`, parsed: it names the workspace and the key, and does not hold the key. */
function loggedOnce(lines: string[], message: string, ws: TestWorkspace) {
  const logged = lines.filter((line) => line.includes(message));
  expect(logged).toHaveLength(1);
  expect(logged[0]).not.toContain(ws.key);
  const entry = JSON.parse(logged[0]);
  expect(entry).toMatchObject({ level: 40, reqId: expect.any(String), workspaceId: ws.workspace.id, apiKeyId: ws.keyId });
  return entry;
}

describe("a download refused while the workspace's one slot is held by a download of the same key", () => {
  const REPLACED_MESSAGE = 'security event download ended: its key started another while its client took no data';
  // Moved by the tests: the real clock would have them wait 10 s for each stall.
  const clock = new ManualClock(new Date());
  const serverSockets: Socket[] = [];
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let other: { key: string; keyId: string };
  let lines: string[];

  beforeAll(async () => {
    const recording = recordingLogger();
    lines = recording.lines;
    gateway = await startGateway({ DOWNLOAD_CONCURRENCY_PER_WORKSPACE: '1' }, { logger: recording.logger, clock });
    gateway.app.http.server.on('connection', (socket: Socket) => serverSockets.push(socket));
    ws = await gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
    other = await ws.addKey(['security_events.read'], 'other reader');
    await seedLargeEvents(gateway.app.store, ws);
  });

  afterEach(() => hangUp(gateway));
  afterAll(() => gateway?.close());

  it("takes its slot once that download's client has taken nothing for 10 s, cutting it; another key's download never does", async () => {
    const stalled = await unreadDownload(gateway, ws.key);
    expect(stalled.statusCode).toBe(200);

    await waitFor(async () => {
      clock.advance(DOWNLOAD_REPLACEABLE_AFTER_MS);
      // Asked first, at the same moment: whenever the key's own download would take the slot, the other key's is refused.
      const refused = await download(gateway, other.key, EMPTY_RANGE);
      expect(refused.status).toBe(429);
      expect(refused.headers['retry-after']).toBe('5');
      const attempt = await request(`${gateway.baseUrl}/security_events/download${LARGE_RANGE}`, { headers: bearer(ws.key) });
      if (attempt.statusCode === 200) return unreadBodies.push(attempt.body);
      expect(attempt.statusCode).toBe(429);
      await attempt.body.dump();
      return undefined;
    });

    // The gateway hung up on the stalled one: reading it gets what the sockets held, then an error.
    await expect(stalled.body.text()).rejects.toThrow();
    expect(loggedOnce(lines, REPLACED_MESSAGE, ws).takenBytes).toBeGreaterThan(0);
    // The new download holds the slot: the other key is still refused, and the cut one is counted as cut short.
    expect(await downloadsInProgress(gateway)).toBe(1);
    expect((await download(gateway, other.key, EMPTY_RANGE)).status).toBe(429);
    const metrics = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    expect(sample(metrics, 'gateway_http_requests_total', { method: 'GET', route: '/security_events/download', status_code: '499' })).toBe(1);
  });

  it('never takes the slot of a download whose client is still reading, however long the clock moves between reads', async () => {
    const replaced = () => lines.filter((line) => line.includes(REPLACED_MESSAGE)).length;
    const replacedBefore = replaced();
    const client = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
    // Not flowing: the client takes from the kernel only what the test reads.
    client.pause();
    client.write(`GET /security_events/download${LARGE_RANGE} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ${ws.key}\r\nConnection: close\r\n\r\n`);
    const server = await waitFor(async () => serverSockets.find((socket) => socket.remotePort === client.localPort && socket.bytesWritten > 0));
    // What the gateway's kernel accepted on the connection: the download's client has taken data when this grows.
    const accepted = () => server.bytesWritten - server.writableLength;
    try {
      for (let round = 0; round < 3; round++) {
        const before = accepted();
        clock.advance(DOWNLOAD_REPLACEABLE_AFTER_MS);
        // A little at a time, so that the download is far from its end after every round.
        await waitFor(async () => {
          client.read(Math.min(64 * 1024, client.readableLength));
          return accepted() > before;
        });
        expect(client.readableEnded).toBe(false);
        expect((await download(gateway, ws.key, EMPTY_RANGE)).status).toBe(429);
      }
      expect(replaced()).toBe(replacedBefore);
    } finally {
      client.destroy();
    }
  });
});

for (const store of STORES) {
  describe.skipIf(store.skip)(`GET /security_events/download?after=<event id> on a ${store.name} store`, () => {
    let gateway: TestGateway;
    /** Run before each batch of a download after its first is read, while a test sets it. */
    let beforeLaterBatch: (() => Promise<void>) | undefined;

    beforeAll(async () => {
      const hold = (...args: unknown[]) => ((args[2] as ListOptions).beforeSeq === undefined ? undefined : beforeLaterBatch?.());
      gateway = await store.startGateway({}, {}, { wrapStore: (inner) => storeHeldOn(inner, ['listEvents'], hold) });
    });
    afterAll(() => gateway?.close());

    /** A download's rows, as the campaign ids (or event types, for events without one) of its events. */
    const listed = (text: string) =>
      rowsOf(text).map((row) => {
        const properties = JSON.parse(row.JsonProperties);
        return properties.campaign_id ?? properties.event_type;
      });
    const firstId = (text: string): string => JSON.parse(rowsOf(text)[0].JsonProperties).event_id;
    const recent = (minutesAgo: number) => new Date(Date.now() - minutesAgo * 60_000).toISOString();
    const writeEach = async (events: NewSecurityEvent[]) => {
      for (const item of events) await gateway.app.store.insertEvent(item);
    };

    it('lists every event recorded after it, newest first, each once, whenever it was stamped; the next download lists what was recorded since', async () => {
      const team = await gateway.workspace();
      const from = event(team, recent(10), { campaignId: 'from' });
      // More than two batches, and one stamped before `from`, as an event stamped before a slow commit is.
      const later = Array.from({ length: DOWNLOAD_BATCH_SIZE * 2 + 3 }, (_, index) => event(team, recent(9 - index / 1000), { campaignId: `c${index}` }));
      const lateCommit = event(team, recent(60), { campaignId: 'stamped before from' });
      await writeEach([event(team, recent(11), { campaignId: 'before' }), from, ...later, lateCommit]);

      const first = await download(gateway, team.key, `?after=${from.id}`);
      expect(first.status).toBe(200);
      expect(first.headers['content-disposition']).toBe(`attachment; filename="security_events_after_${from.id}.csv"`);
      expect(listed(first.text)).toEqual(['stamped before from', ...later.map((item) => item.campaignId).reverse()]);

      // Recorded between the two downloads, stamped before everything the first listed: the next lists it, after
      // the first download's own event.
      const between = event(team, recent(120), { campaignId: 'between' });
      await writeEach([between]);
      const second = await download(gateway, team.key, `?after=${firstId(first.text)}`);
      expect(listed(second.text)).toEqual(['between', 'SECURITY_EVENTS_DOWNLOADED']);
      expect(JSON.parse(rowsOf(second.text)[1].JsonProperties).details).toEqual({ after: from.id, requestId: first.headers['x-request-id'] });

      const third = await download(gateway, team.key, `?after=${firstId(second.text)}`);
      expect(listed(third.text)).toEqual(['SECURITY_EVENTS_DOWNLOADED']);
    });

    it('streams every event recorded after it when retention deletes that event once the first batch is read', async () => {
      const team = await gateway.workspace();
      const from = event(team, '2001-01-01T00:00:00Z', { campaignId: 'from' });
      const later = Array.from({ length: DOWNLOAD_BATCH_SIZE * 2 + 3 }, (_, index) => event(team, recent(9 - index / 1000), { campaignId: `c${index}` }));
      await writeEach([from, ...later]);
      let deleted = 0;
      beforeLaterBatch = async () => {
        deleted += (await gateway.app.store.pruneEvents(new Date('2001-01-02T00:00:00Z'), 1000, null)).deleted;
      };
      try {
        const response = await download(gateway, team.key, `?after=${from.id}`);
        expect(response.status).toBe(200);
        expect(listed(response.text)).toEqual(later.map((item) => item.campaignId).reverse());
      } finally {
        beforeLaterBatch = undefined;
      }
      expect(deleted).toBe(1);
      expect(await gateway.app.store.eventSeq(team.workspace.id, from.id)).toBeNull();
    });

    it('applies a range too when one is given, named in the file and the event with the id', async () => {
      const team = await gateway.workspace();
      const from = event(team, '2030-01-01T00:00:10Z', { campaignId: 'from' });
      await writeEach([
        event(team, '2030-01-01T00:00:20Z', { campaignId: 'before from' }),
        from,
        event(team, '2030-01-01T00:00:05Z', { campaignId: 'after, before start' }),
        event(team, '2030-01-01T00:00:15Z', { campaignId: 'after, inside' }),
        event(team, '2030-01-01T00:01:00Z', { campaignId: 'after, at end' }),
      ]);
      const range = 'start=2030-01-01T00:00:06Z&end=2030-01-01T00:01:00Z';
      const response = await download(gateway, team.key, `?${range}&after=${from.id}`);
      expect(response.status).toBe(200);
      expect(listed(response.text)).toEqual(['after, inside']);
      expect(response.headers['content-disposition']).toBe(
        `attachment; filename="security_events_2030-01-01T00-00-06-000Z_2030-01-01T00-01-00-000Z_after_${from.id}.csv"`,
      );
      const [recorded] = await gateway.app.store.listEvents(team.workspace.id, { types: ['SECURITY_EVENTS_DOWNLOADED'] }, { first: 1 });
      expect(recorded.details).toMatchObject({ start: '2030-01-01T00:00:06.000Z', end: '2030-01-01T00:01:00.000Z', after: from.id });

      // Half a range is refused, as without `after`.
      const half = await download(gateway, team.key, `?start=2030-01-01&after=${from.id}`);
      expect(half.status).toBe(400);
      expect(half.body.errors).toEqual([expect.stringContaining("'end' is required")]);
    });

    it("refuses an id that names no event of the workspace (pruned, another workspace's, never one, malformed) with a 400 that says so, and records nothing", async () => {
      const [team, other] = [await gateway.workspace(), await gateway.workspace()];
      const pruned = event(team, '2001-01-01T00:00:00Z', { campaignId: 'pruned' });
      const foreign = event(other, recent(1));
      await writeEach([pruned, event(team, '2001-01-01T00:00:01Z'), foreign]);
      await gateway.app.store.pruneEvents(new Date('2001-01-01T00:00:00.500Z'), 1000, null);
      const gone = {
        message: 'The event this cursor points at is not in this workspace',
        code: 'BAD_USER_INPUT',
        errors: ["'after' names no event of this workspace (deleted once past its retention period, or never this workspace's): start again from the first page"],
      };
      for (const after of [pruned.id, foreign.id, randomUUID(), 'not-an-id', `${pruned.id}&after=${pruned.id}`]) {
        const response = await download(gateway, team.key, `?after=${after}`);
        expect(response.status, after).toBe(400);
        expect(response.body).toEqual(gone);
      }
      expect(await gateway.app.store.listEvents(team.workspace.id, { types: ['SECURITY_EVENTS_DOWNLOADED'] }, { first: 10 })).toEqual([]);
    });
  });
}

describe('a download whose client reads slowly but at the minimum rate', () => {
  let limited: Awaited<ReturnType<typeof limitedGateway>>;

  beforeAll(async () => {
    limited = await limitedGateway(SCALED_LIMITS);
  });

  afterAll(() => limited?.gateway.close());

  it('is sent in full, though the kernel takes it in bursts with long waits between', async () => {
    const { gateway, ws, lines } = limited;
    // 2 KiB/s, scaled: between bursts the kernel waits for it to read a third of a send buffer of up to 4 MiB.
    const { body, whole } = await readAtRate(gateway, ws.key, 2 * SCALED_LIMITS.minimumRate.bytes);
    expect(whole).toBe(true);
    const rows = rowsOf(body.toString('utf8'));
    expect(rows).toHaveLength(LARGE_EVENTS);
    expect(JSON.parse(rows.at(-1)!.JsonProperties).campaign_id).toBe('c0');
    expect(lines.filter((line) => line.includes('security event download ended'))).toEqual([]);
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
  });
});

describe('a download whose client takes no data', () => {
  const STALL_MESSAGE = 'security event download ended: its client took no data';
  // What the kernel takes from a client that reads nothing (megabytes) earns far more waiting than the cap allows.
  const limits = { ...SCALED_LIMITS, minimumRate: { bytes: 64 * 1024, perMs: 1000 }, mostWaitEarnedMs: 300 };
  let limited: Awaited<ReturnType<typeof limitedGateway>>;

  beforeAll(async () => {
    limited = await limitedGateway(limits);
  });

  afterAll(async () => {
    if (limited) await hangUp(limited.gateway);
    await limited?.gateway.close();
  });

  it('is ended once it has waited out what it can have earned, logged once without the key, and its slot is free again', async () => {
    const { gateway, ws, lines } = limited;
    const stalled = await unreadDownload(gateway, ws.key);
    expect(stalled.statusCode).toBe(200);

    await waitFor(async () => lines.some((line) => line.includes(STALL_MESSAGE)));
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
    // The gateway hung up: reading now gets what the sockets held, then an error, never the whole CSV.
    await expect(stalled.body.text()).rejects.toThrow();
    expect((await download(gateway, ws.key, EMPTY_RANGE)).status).toBe(200);

    const entry = loggedOnce(lines, STALL_MESSAGE, ws);
    // Uncapped, what the kernel took would have earned it ten times the waiting it got, and more.
    expect((entry.takenBytes / limits.minimumRate.bytes) * limits.minimumRate.perMs).toBeGreaterThan(10 * (limits.mostWaitEarnedMs + limits.stallMs));
  });
});

describe('a download whose client takes data, but too slowly', () => {
  const SLOW_MESSAGE = 'security event download ended: its client took data too slowly';
  // Far faster than the reader below, which falls behind in its first wait and further in every one after; a stall
  // timeout longer than one such wait, so that it is cut for being behind rather than for one wait.
  const limits = { ...SCALED_LIMITS, minimumRate: { bytes: 64 * 1024 * 1024, perMs: 1000 }, stallMs: 3000 };
  let limited: Awaited<ReturnType<typeof limitedGateway>>;

  beforeAll(async () => {
    limited = await limitedGateway(limits);
  });

  afterAll(() => limited?.gateway.close());

  it('is ended though it never stalls, logged once without the key, and its slot is free again', async () => {
    const { gateway, ws, lines } = limited;
    const { body, whole } = await readAtRate(gateway, ws.key, 1024 * 1024);
    expect(whole).toBe(false);
    expect(body.length).toBeGreaterThan(0);
    await waitFor(async () => lines.some((line) => line.includes(SLOW_MESSAGE)));
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
    expect((await download(gateway, ws.key, EMPTY_RANGE)).status).toBe(200);

    expect(loggedOnce(lines, SLOW_MESSAGE, ws).takenBytes).toBeLessThan(limits.minimumRate.bytes);
    expect(lines.some((line) => line.includes('its client took no data'))).toBe(false);
  });
});

describe('a download its client reads as fast as it is sent', () => {
  // Yesterday's: a gateway that starts on older events may prune them first.
  const base = Math.floor(Date.now() / 1000) * 1000 - 86_400_000;
  const range = `?start=${new Date(base).toISOString()}&end=${new Date(base + LARGE_EVENTS * 1000).toISOString()}`;
  let dir: string;
  let gateway: GatewayProcess | undefined;
  let key: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-download-turns-'));
    const store = await createStore(loadConfig({ DATA_DIR: dir }), { olderSchema: 'upgrade' });
    try {
      const ws = await createTestWorkspace(store, new AdminService(store, { now: () => new Date(base - 60_000) }));
      await seedLargeEvents(store, ws, base);
      key = ws.key;
    } finally {
      await store.close();
    }
    // A process of its own: a client in the gateway's process reads only when the gateway lets its event loop turn,
    // which is the very thing under test.
    gateway = await spawnGateway({ DATA_DIR: dir, LOG_LEVEL: 'warn', SEED_DEMO: 'false', WORKER_CONCURRENCY: '0' }, { ownPort: true });
  });

  afterAll(async () => {
    gateway?.child.kill('SIGTERM');
    await gateway?.exited;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('leaves other requests their turn: a /healthz sent once it has started is answered before it ends', async () => {
    const finished: string[] = [];
    const response = await request(`${gateway!.baseUrl}/security_events/download${range}`, { headers: bearer(key) });
    expect(response.statusCode).toBe(200);
    const health = request(`${gateway!.baseUrl}/healthz`).then(async (answer) => {
      await answer.body.dump();
      finished.push(`healthz ${answer.statusCode}`);
    });
    let lines = 0;
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      for (let offset = chunk.indexOf(10); offset !== -1; offset = chunk.indexOf(10, offset + 1)) lines++;
    }
    finished.push('download');
    await health;
    expect(lines).toBe(LARGE_EVENTS + 1);
    expect(finished).toEqual(['healthz 200', 'download']);
  });
});

describe('a download of 200,000 events', () => {
  it('streams: the live heap grows by a small fraction of the CSV, whatever its size', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', new URL('./fixtures/download-memory.ts', import.meta.url).pathname],
      { env: { ...process.env, EVENTS: '200000' }, maxBuffer: 1024 * 1024 },
    );
    const result = JSON.parse(stdout.trim().split('\n').at(-1) as string);
    expect(result.status).toBe(200);
    expect(result.lines).toBe(200_001);
    // Holding the rows, or the CSV, would grow the heap by more than the CSV's size (about 100 MB here).
    expect(result.bytes).toBeGreaterThan(64 * 1024 * 1024);
    expect(result.peakGrowth * 8).toBeLessThan(result.bytes);
  }, 180_000);
});

describe('a download in the request metrics', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gateway = await startGateway();
    ws = await gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
    await seedLargeEvents(gateway.app.store, ws);
  });
  afterAll(() => gateway?.close());

  /** The downloads counted with `status_code`, by the counter and by the duration histogram. */
  const counted = async (status: string) => {
    const text = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    const labels = { method: 'GET', route: '/security_events/download', status_code: status };
    return [sample(text, 'gateway_http_requests_total', labels) ?? 0, sample(text, 'gateway_http_request_duration_seconds_count', labels) ?? 0];
  };

  it('counts one sent in full once as 200, and one its client abandoned half-way once as 499', async () => {
    const full = await download(gateway, ws.key, LARGE_RANGE);
    expect(full.status).toBe(200);
    expect(rowsOf(full.text)).toHaveLength(LARGE_EVENTS);
    expect(await counted('200')).toEqual([1, 1]);

    const abandoned = await request(`${gateway.baseUrl}/security_events/download${LARGE_RANGE}`, { headers: bearer(ws.key) });
    expect(abandoned.statusCode).toBe(200);
    for await (const chunk of abandoned.body as AsyncIterable<Buffer>) {
      expect(chunk.length).toBeGreaterThan(0);
      // Hangs up after the first chunk of about 10 MB.
      break;
    }
    await waitFor(async () => (await counted('499'))[0] > 0);
    await waitFor(async () => (await downloadsInProgress(gateway)) === 0);
    expect(await counted('499')).toEqual([1, 1]);
    expect(await counted('200')).toEqual([1, 1]);
  });
});

describe('a download whose request goes on to send a body Node cannot parse', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;
  /** Holds back every batch of events after the first until the test is over. */
  let releaseLaterBatches: () => void = () => undefined;
  const laterBatches = new Promise<void>((resolve) => (releaseLaterBatches = resolve));

  beforeAll(async () => {
    const hold = (...args: unknown[]) => ((args[2] as ListOptions).beforeSeq === undefined ? undefined : laterBatches);
    gateway = await startGateway({}, {}, { wrapStore: (store) => storeHeldOn(store, ['listEvents'], hold) });
    ws = await gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
    await seedLargeEvents(gateway.app.store, ws);
  });
  afterAll(async () => {
    releaseLaterBatches();
    await gateway?.close();
  });

  it('is cut, never has an answer written into it, and is counted as cut short', async () => {
    const cutShort = { method: 'GET', route: '/security_events/download', status_code: '499' };
    const socket = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    // A reset is how a connection cut with data unread may end.
    socket.on('error', () => undefined);
    const closed = new Promise((resolve) => socket.once('close', resolve));
    // A GET is answered without its body being read: the download streams while the body is still arriving.
    socket.write(`GET /security_events/download${LARGE_RANGE} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ${ws.key}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await waitFor(async () => received.includes(EVENT_NAMES.CAMPAIGN_DUPLICATION_REQUESTED));
    socket.write('zz\r\n');
    await closed;
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    await waitFor(async () => sample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', cutShort) === 1);
  });
});

describe('a download in flight when the gateway stops', () => {
  const sink = new LogSink();
  let gateway: TestGateway | undefined;

  afterAll(async () => {
    for (const body of unreadBodies.splice(0)) body.destroy();
    await gateway?.close();
  });

  it('is given the grace period, then cut with one warning naming it, and the stop is logged with how long it took', async () => {
    gateway = await startGateway({ LOG_LEVEL: 'info', LOG_FORMAT: 'json', SHUTDOWN_GRACE_SECONDS: '1', WORKER_CONCURRENCY: '0' }, { logDestination: sink });
    const ws = await gateway.workspace(undefined, undefined, BEFORE_LARGE_EVENTS);
    await seedLargeEvents(gateway.app.store, ws);
    // Its client reads nothing: the download stays in progress, far from the 30 s after which it would be ended.
    const slow = await unreadDownload(gateway, ws.key);
    expect(slow.statusCode).toBe(200);

    await gateway.app.close();
    await expect(slow.body.text()).rejects.toThrow();
    const lines = sink.lines();
    const cut = lines.filter((line) => line.msg === 'the shutdown grace period ended: cutting the connections still open');
    expect(cut).toEqual([
      expect.objectContaining({ level: 40, graceMs: 1000, connections: 1, requests: 1, routes: { 'GET /security_events/download': 1 } }),
    ]);
    const stopped = lines.filter((line) => line.msg === 'stopped');
    expect(stopped).toEqual([expect.objectContaining({ level: 30, durationMs: expect.any(Number) })]);
    expect(lines.indexOf(stopped[0])).toBe(lines.length - 1);
  });
});
