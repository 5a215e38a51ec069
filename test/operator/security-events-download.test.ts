import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOWNLOAD_BATCH_SIZE } from '../../src/domain/service.js';
import type { NewSecurityEvent } from '../../src/domain/types.js';
import { EVENT_NAMES } from '../../src/http/security-events-download.js';
import { bearer, graphql, http, json, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const COLUMNS = ['CreatedAt', 'EmailAtTimeOfEvent', 'CurrentEmail', 'EventName', 'OtherAccount', 'JsonProperties'];

const rowsOf = (text: string): Record<string, string>[] => parse(text, { columns: true, skip_empty_lines: true });

const download = (gateway: TestGateway, key: string | null, query: string) =>
  http(gateway.baseUrl, 'GET', `/security_events/download${query}`, { headers: key ? bearer(key) : {} });

describe('GET /security_events/download', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gateway = await startGateway();
    ws = await gateway.workspace();
  });
  afterAll(() => gateway?.close());

  const event = (occurredAt: string, fields: Partial<NewSecurityEvent> = {}): NewSecurityEvent => ({
    id: randomUUID(),
    workspaceId: ws.workspace.id,
    type: 'CAMPAIGN_DUPLICATION_REQUESTED',
    occurredAt: new Date(occurredAt),
    apiKeyId: ws.keyId,
    apiKeyName: 'admin',
    channel: 'REST',
    ip: '127.0.0.1',
    jobId: null,
    campaignId: null,
    details: {},
    ...fields,
  });

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
    const other = await gateway.workspace();
    const count = DOWNLOAD_BATCH_SIZE * 2 + 500;
    const base = Date.parse('2021-03-01T00:00:00Z');
    const events = [
      event('2021-02-28T23:59:59.999Z', { campaignId: 'before' }),
      ...Array.from({ length: count }, (_, index) => event(new Date(base + index * 1000).toISOString(), { campaignId: `c${index}` })),
      event(new Date(base + count * 1000).toISOString(), { campaignId: 'at-end' }),
      event('2021-03-01T00:10:00Z', { workspaceId: other.workspace.id, campaignId: 'other-workspace' }),
    ];
    // Sent together, committed together: one commit instead of thousands.
    await Promise.all(events.map((item) => gateway.app.store.insertEvent(item)));

    const endIso = new Date(base + count * 1000).toISOString();
    const response = await download(gateway, ws.key, `?start=2021-03-01&end=${endIso}`);
    expect(response.status).toBe(200);
    const campaigns = rowsOf(response.text).map((row) => JSON.parse(row.JsonProperties).campaign_id);
    expect(campaigns).toEqual(Array.from({ length: count }, (_, index) => `c${count - 1 - index}`));
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
    for (const [at, campaignId] of [['2020-06-01T09:59:59Z', 'before'], ['2020-06-01T10:00:00Z', 'inside'], ['2020-06-01T10:01:00Z', 'at-end']]) {
      await gateway.app.store.insertEvent(event(at, { campaignId }));
    }
    const response = await download(gateway, ws.key, `?start=2020-06-01T10:00Z&end=${encodeURIComponent('2020-06-01T12:01+02:00')}`);
    expect(response.status).toBe(200);
    expect(rowsOf(response.text).map((row) => JSON.parse(row.JsonProperties).campaign_id)).toEqual(['inside']);
  });

  it('answers an empty range with the header alone', async () => {
    const response = await download(gateway, ws.key, '?start=1999-01-01&end=1999-02-01');
    expect(response.status).toBe(200);
    expect(response.text).toBe(`${COLUMNS.join(',')}\n`);
  });

  it.each([
    ['', ["'start' is required", "'end' is required"]],
    ['?start=2024-01-01', ["'end' is required"]],
    ['?start=yesterday&end=2024-01-01', ["'start' must be an ISO 8601 date"]],
    ['?start=2024-01-01T10:00:00&end=2024-01-02', ["'start' must be an ISO 8601 date (2024-05-01) or date-time with a time zone"]],
    ['?start=2024-02-30&end=2024-03-02', ["'start' must be an ISO 8601 date"]],
    ['?start=2024-01-01&end=2024-01-01&x=1', ["'end' must be after start"]],
    ['?start=2024-02-01&end=2024-01-01', ["'end' must be after start"]],
    ['?start=2023-01-01&end=2024-06-01', ["'end' must be at most 366 days after start"]],
    ['?start=2024-01-01&start=2024-01-02&end=2024-02-01', ["'start' must be an ISO 8601 date"]],
  ])('refuses the range %s with a 400 that says why', async (query, problems) => {
    const response = await download(gateway, ws.key, query);
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect(response.body.message).toBe('Invalid date range');
    expect(response.body.errors).toHaveLength(problems.length);
    problems.forEach((problem, index) => expect(response.body.errors[index]).toContain(problem));
  });

  it('needs a valid key (401) and security_events.read (403, before the range is looked at, and recorded)', async () => {
    expect((await download(gateway, null, '?start=2024-01-01&end=2024-02-01')).status).toBe(401);
    expect((await download(gateway, 'cgw_not-a-key', '?start=2024-01-01&end=2024-02-01')).status).toBe(401);

    const { key, keyId } = await ws.addKey(['campaigns.duplicate']);
    const refused = await download(gateway, key, '?start=garbage');
    expect(refused.status).toBe(403);
    expect(refused.body).toEqual({ message: 'Access Denied' });

    const events = await graphql(gateway.baseUrl, ws.key, 'query($id: ID!) { securityEvents(filter: {apiKeyId: $id, types: [PERMISSION_DENIED]}) { edges { node { details } } } }', { id: keyId });
    expect(events.body.data.securityEvents.edges.map((edge: any) => edge.node.details)).toEqual([{ permission: 'security_events.read' }]);
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
