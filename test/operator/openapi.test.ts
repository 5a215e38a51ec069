import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import formats from 'ajv-formats';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, startGateway, waitFor, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';

interface Exchange {
  method: string;
  /** The path as the document names it, e.g. /duplication_jobs/{job_id}. */
  path: string;
  response: HttpResult;
}

describe('GET /openapi.json', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let document: any;

  beforeAll(async () => {
    // Not the default 24 h: the document must say the TTL this gateway keeps.
    gateway = await startGateway({ DUPLICATE_RATE_LIMIT: '3', AUTH_FAILURE_LIMIT: '10', IDEMPOTENCY_TTL_HOURS: '6' });
    ws = await gateway.workspace();
    document = (await http(gateway.baseUrl, 'GET', '/openapi.json')).body;
  });
  afterAll(() => gateway?.close());

  it('is a valid OpenAPI 3.1 document of every REST route, and of nothing else', async () => {
    const result = await new Validator().validate(document);
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(document.openapi).toBe('3.1.0');
    // A path item's description (what its other methods get) is no operation.
    const operations = (item: object) => Object.keys(item).filter((key) => key !== 'description');
    expect(Object.fromEntries(Object.entries(document.paths).map(([path, item]) => [path, operations(item as object)]))).toEqual({
      '/campaigns/duplicate': ['post'],
      '/duplication_jobs/{job_id}': ['get'],
      '/security_events/download': ['get'],
      '/healthz': ['get'],
      '/readyz': ['get'],
      '/metrics': ['get'],
      '/openapi.json': ['get'],
    });
    expect(document.paths['/campaigns/duplicate'].post.requestBody.content['application/json'].schema.required).toEqual(['campaign_id', 'name']);
  });

  it("is versioned as the gateway is, and says what it configured", () => {
    const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(document.info.version).toBe(packageJson.version);
    expect(document.info.description).toContain('with `"errors": ["..."]` when there are details');
    const idempotencyKey = document.paths['/campaigns/duplicate'].post.parameters.find((parameter: any) => parameter.name === 'idempotency-key');
    expect(idempotencyKey.description).toContain('kept 6 h');
  });

  it('says of each route only what it can answer: no permission where it needs none, no spent quota where it takes no point', () => {
    const routes = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item as Record<string, any>)
        .filter(([, operation]) => operation.security)
        .map(([method, operation]) => ({ where: `${method} ${path}`, operation })),
    );
    for (const { where, operation } of routes) {
      const needsPermission = /Needs the permission/.test(operation.description);
      const takesQuota = Object.values(operation.responses as Record<string, any>).some((response) => 'x-ratelimit-limit' in (response.headers ?? {}));
      expect(/lacks the permission/.test(operation.responses['403'].description), `${where} 403`).toBe(needsPermission);
      expect(/allowlist/.test(operation.responses['403'].description), `${where} 403`).toBe(true);
      expect(/Rate limit exceeded|quota is spent/.test(operation.responses['429'].description), `${where} 429`).toBe(takesQuota);
      if (!takesQuota) expect(operation.responses['429'].description, `${where} 429`).toContain('takes no quota point');
    }
    expect(routes.map(({ where }) => where).sort()).toEqual(['get /duplication_jobs/{job_id}', 'get /security_events/download', 'post /campaigns/duplicate']);
    const pollAfter = document.paths['/duplication_jobs/{job_id}'].get.responses['200'].headers['retry-after'].description;
    expect(pollAfter).toContain('a pause the upstream asked for');
  });

  // The route always sends every field (null when empty), as the answers checked against the document below show.
  it('lists every field of a job as required, so that generated clients do not make them optional', () => {
    const job = document.paths['/duplication_jobs/{job_id}'].get.responses['200'].content['application/json'].schema;
    expect([...job.required].sort()).toEqual(Object.keys(job.properties).sort());
    expect(job.properties.error.required).toEqual(['code', 'message']);
  });

  it('documents, on every route behind a key, the answers any key check or dependency can give', () => {
    const guarded = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item as Record<string, any>)
        .filter(([, operation]) => operation.security)
        .map(([method, operation]) => ({ where: `${method} ${path}`, responses: operation.responses })),
    );
    expect(guarded.map(({ where }) => where).sort()).toEqual(['get /duplication_jobs/{job_id}', 'get /security_events/download', 'post /campaigns/duplicate']);
    for (const { where, responses } of guarded) {
      for (const status of ['401', '403', '429', '500', '503']) expect(responses[status], `${where} ${status}`).toBeDefined();
      for (const status of ['429', '503']) expect(Object.keys(responses[status].headers ?? {}), `${where} ${status}`).toContain('retry-after');
      expect(Object.keys(responses['401'].headers ?? {}), `${where} 401`).toEqual(['www-authenticate']);
    }
  });

  it('documents every status, media type and JSON body the routes really answer with', async () => {
    const exchanges: Exchange[] = [];
    const call = async (method: Parameters<typeof http>[1], path: string, url: string, options: Parameters<typeof http>[3] = {}) => {
      const response = await http(gateway.baseUrl, method, url, options);
      exchanges.push({ method: method.toLowerCase(), path, response });
      return response;
    };
    const duplicate = (body: string, headers: Record<string, string> = { ...json, ...bearer(ws.key) }) =>
      call('POST', '/campaigns/duplicate', '/campaigns/duplicate', { headers, body });
    const valid = JSON.stringify({ campaign_id: ws.campaign.id, name: 'copy' });
    const reader = await ws.addKey(['campaigns.list']);

    const accepted = await duplicate(valid);
    await duplicate(JSON.stringify({ campaign_id: 7 }));
    await duplicate('{"campaign_id": ');
    await duplicate(valid, json);
    await duplicate(valid, { ...json, ...bearer(reader.key) });
    // The schema documents the body but does not enforce it: permission comes first.
    expect((await duplicate('{"campaign_id": 7, "extra": true}', { ...json, ...bearer(reader.key) })).status).toBe(403);
    await duplicate(JSON.stringify({ campaign_id: ws.campaign.id, name: 'x'.repeat(70 * 1024) }));
    await duplicate(valid, { 'content-type': 'text/plain', ...bearer(ws.key) });
    expect((await call('POST', '/campaigns/duplicate', '/campaigns/duplicate', { headers: { ...json, ...bearer(ws.key), 'content-encoding': 'gzip' }, body: gzipSync(valid) })).headers['accept-encoding']).toBe('identity');
    await call('GET', '/campaigns/duplicate', '/campaigns/duplicate', { headers: bearer(ws.key) });
    const idempotent = { ...json, ...bearer(ws.key), 'idempotency-key': 'openapi-1' };
    await duplicate(valid, idempotent);
    await duplicate(JSON.stringify({ campaign_id: ws.campaign.id, name: 'another' }), idempotent);
    await duplicate(valid);
    await duplicate(valid);

    const jobPath = '/duplication_jobs/{job_id}';
    await waitFor(async () => (await call('GET', jobPath, `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) })).body.status === 'succeeded');
    await call('GET', jobPath, '/duplication_jobs/no-such-job', { headers: bearer(ws.key) });
    await call('GET', jobPath, '/duplication_jobs/%zz', { headers: bearer(ws.key) });
    await call('PUT', jobPath, `/duplication_jobs/${accepted.body.job_id}`, { headers: { ...json, ...bearer(ws.key) }, body: '{}' });
    await call('GET', jobPath, `/duplication_jobs/${accepted.body.job_id}`);
    const elsewhere = await gateway.app.admin.createKey({
      workspace: ws.workspace.id,
      name: 'elsewhere',
      permissions: ['security_events.read'],
      allowedCidrs: ['192.0.2.0/24'],
    });
    await call('GET', jobPath, `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(elsewhere.key) });

    const downloadPath = '/security_events/download';
    const range = `?start=${new Date(Date.now() - 86_400_000).toISOString()}&end=${new Date(Date.now() + 60_000).toISOString()}`;
    await call('GET', downloadPath, `${downloadPath}${range}`, { headers: bearer(ws.key) });
    await call('GET', downloadPath, `${downloadPath}?start=nope`, { headers: bearer(ws.key) });
    await call('GET', downloadPath, `${downloadPath}${range}`);
    await call('GET', downloadPath, `${downloadPath}${range}`, { headers: bearer(reader.key) });
    await call('GET', downloadPath, `${downloadPath}${range}`, { headers: bearer(elsewhere.key) });

    for (const path of ['/healthz', '/readyz', '/metrics', '/openapi.json']) await call('GET', path, path);

    // Last: failed authentications until this client is blocked, whatever key it sends next.
    for (let attempt = 0; attempt < 10; attempt++) if ((await duplicate(valid, { ...json, ...bearer('cgw_nope') })).status === 429) break;
    await call('GET', jobPath, `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) });
    await call('GET', downloadPath, `${downloadPath}${range}`, { headers: bearer(ws.key) });

    const ajv = new Ajv2020({ strict: false, allErrors: true });
    formats.default(ajv);
    const errorBody = ajv.compile(document.paths['/campaigns/duplicate'].post.responses['400'].content['application/json'].schema);
    for (const { method, path, response } of exchanges) {
      const where = `${method.toUpperCase()} ${path} → ${response.status}`;
      if (response.status === 405) {
        // A method the path lacks has no operation to document its answer: the path item says what it gets.
        expect(document.paths[path][method], where).toBeUndefined();
        expect(document.paths[path].description, where).toContain(`405 Method Not Allowed, with \`Allow: ${response.headers.allow}\``);
        expect(errorBody(response.body) ? [] : errorBody.errors, `${where} body`).toEqual([]);
        continue;
      }
      const documented = document.paths[path][method].responses[String(response.status)];
      expect(documented, `${where} is not documented`).toBeDefined();
      const sent = Object.keys(response.headers).filter((name) => /^(x-ratelimit-|retry-after$|location$|www-authenticate$|accept-encoding$|allow$)/.test(name));
      expect(sent.filter((name) => !(name in (documented.headers ?? {}))), `${where}: undocumented headers`).toEqual([]);
      for (const name of sent) {
        const fixed = documented.headers[name].schema?.const;
        if (fixed !== undefined) expect(response.headers[name], `${where}: ${name}`).toBe(fixed);
      }
      if (response.status === 401) expect(response.headers['www-authenticate'], where).toBe('Bearer');
      const mediaType = String(response.headers['content-type']).split(';')[0];
      expect(Object.keys(documented.content ?? {}), `${where} answered ${mediaType}`).toContain(mediaType);
      if (mediaType === 'application/json') {
        const validate = ajv.compile(documented.content[mediaType].schema);
        expect(validate(response.body) ? [] : validate.errors, `${where} body`).toEqual([]);
      }
    }
    const seen = new Set(exchanges.map(({ method, path, response }) => `${method} ${path} ${response.status}`));
    expect([...seen].sort()).toEqual(
      [
        'post /campaigns/duplicate 202',
        'post /campaigns/duplicate 400',
        'post /campaigns/duplicate 401',
        'post /campaigns/duplicate 403',
        'post /campaigns/duplicate 413',
        'post /campaigns/duplicate 415',
        'post /campaigns/duplicate 422',
        'post /campaigns/duplicate 429',
        'get /campaigns/duplicate 405',
        `put ${jobPath} 405`,
        `get ${jobPath} 200`,
        `get ${jobPath} 400`,
        `get ${jobPath} 401`,
        `get ${jobPath} 403`,
        `get ${jobPath} 404`,
        `get ${jobPath} 429`,
        `get ${downloadPath} 200`,
        `get ${downloadPath} 400`,
        `get ${downloadPath} 401`,
        `get ${downloadPath} 403`,
        `get ${downloadPath} 429`,
        'get /healthz 200',
        'get /readyz 200',
        'get /metrics 200',
        'get /openapi.json 200',
      ].sort(),
    );
  });
});
