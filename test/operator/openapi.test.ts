import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import formats from 'ajv-formats';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../src/domain/errors.js';
import { normalizeDuplicateInput } from '../../src/domain/validation.js';
import { bearer, http, json, startGateway, waitFor, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';

interface Exchange {
  method: string;
  /** The path as the document names it, e.g. /duplication_jobs/{job_id}. */
  path: string;
  response: HttpResult;
}

/** The object a `$ref` of the document points to (`#/components/...`), or the object itself when it is none. */
function resolved(document: any, object: any): any {
  if (!object?.$ref) return object;
  return (object.$ref as string).slice(2).split('/').reduce((at: any, part: string) => at[part], document);
}

/** A validator of a schema of the document, whose references to its components resolve. */
function schemaValidator(document: any): (schema: object) => ValidateFunction {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  formats.default(ajv);
  return (schema) => ajv.compile({ ...schema, components: document.components });
}

/** Every operation of the document, with where it is. */
const operationsOf = (document: any): { where: string; operation: any }[] =>
  Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item as Record<string, any>)
      .filter(([method]) => method !== 'description')
      .map(([method, operation]) => ({ where: `${method} ${path}`, operation })),
  );

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
    expect(resolved(document, document.paths['/campaigns/duplicate'].post.requestBody.content['application/json'].schema).required).toEqual(['campaign_id', 'name']);
  });

  // Generated clients name their functions and types after these: renaming one renames the caller's code.
  it('names every operation, and the bodies routes share, so that generated clients do not name them after paths', () => {
    expect(Object.fromEntries(operationsOf(document).map(({ where, operation }) => [where, operation.operationId]))).toEqual({
      'post /campaigns/duplicate': 'duplicateCampaign',
      'get /duplication_jobs/{job_id}': 'getDuplicationJob',
      'get /security_events/download': 'downloadSecurityEvents',
      'get /healthz': 'getHealth',
      'get /readyz': 'getReadiness',
      'get /metrics': 'getMetrics',
      'get /openapi.json': 'getOpenApi',
    });
    expect(Object.keys(document.components.schemas).sort()).toEqual(
      ['DependencyCheck', 'DuplicateCampaignRequest', 'DuplicationAccepted', 'DuplicationJob', 'DuplicationJobStatus', 'Error', 'Health', 'Readiness'].sort(),
    );
    const bodies = (where: string) => operationsOf(document).find((operation) => operation.where === where)!.operation.responses;
    expect(bodies('post /campaigns/duplicate')['202'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/DuplicationAccepted' });
    expect(bodies('get /duplication_jobs/{job_id}')['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/DuplicationJob' });
    for (const status of ['200', '503']) expect(bodies('get /readyz')[status].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Readiness' });
  });

  it("has one error body, referenced by every error answer of every operation but the reports of /readyz and /healthz", () => {
    const errorAnswers = operationsOf(document).flatMap(({ where, operation }) =>
      Object.entries(operation.responses as Record<string, any>)
        .filter(([status]) => Number(status) >= 400 && !['get /readyz 503', 'get /healthz 503'].includes(`${where} ${status}`))
        .map(([status, response]) => ({ where: `${where} ${status}`, response: resolved(document, response) })),
    );
    expect(errorAnswers.map(({ where }) => where)).toEqual(expect.arrayContaining(['post /campaigns/duplicate 400', 'post /campaigns/duplicate 405', 'get /security_events/download 401']));
    for (const { where, response } of errorAnswers) expect(response.content, where).toEqual({ 'application/json': { schema: { $ref: '#/components/schemas/Error' } } });
    // A program tells errors apart by their code, which every body carries, one of the gateway's.
    const { required, properties } = document.components.schemas.Error;
    expect(required).toEqual(expect.arrayContaining(['message', 'code']));
    expect(properties.code).toMatchObject({ type: 'string', enum: Object.keys(ERROR_CODES) });
  });

  it('types every enum, says where the API is, and asks no key where none is needed', () => {
    const untyped: string[] = [];
    const visit = (value: unknown, at: string) => {
      if (typeof value !== 'object' || value === null) return;
      const schema = value as Record<string, unknown>;
      if (('enum' in schema && Array.isArray(schema.enum)) || 'const' in schema) if (schema.type === undefined) untyped.push(at);
      for (const [key, child] of Object.entries(schema)) visit(child, `${at}/${key}`);
    };
    visit(document, '#');
    expect(untyped).toEqual([]);
    // Relative to the document's own URL, so under a proxy's path prefix too.
    expect(document.servers).toEqual([expect.objectContaining({ url: '.' })]);
    const open = operationsOf(document).filter(({ operation }) => operation.security?.length === 0).map(({ where }) => where);
    expect(open.sort()).toEqual(['get /healthz', 'get /metrics', 'get /openapi.json', 'get /readyz']);
    for (const { where, operation } of operationsOf(document)) expect(operation.security, where).toBeDefined();
  });

  it("is versioned as the gateway is, and says what it configured", () => {
    const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(document.info.version).toBe(packageJson.version);
    expect(document.info.description).toContain('with `"errors": ["..."]` when there are details');
    const idempotencyKey = document.paths['/campaigns/duplicate'].post.parameters.find((parameter: any) => parameter.name === 'idempotency-key');
    expect(idempotencyKey.description).toContain('kept 6 h');
  });

  it('says of each route only what it can answer: no permission where it needs none, no spent quota where it takes no point', () => {
    const routes = operationsOf(document).filter(({ operation }) => operation.security.length > 0);
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
    const job = resolved(document, document.paths['/duplication_jobs/{job_id}'].get.responses['200'].content['application/json'].schema);
    expect([...job.required].sort()).toEqual(Object.keys(job.properties).sort());
    expect(job.properties.error.required).toEqual(['code', 'message']);
  });

  it('documents, on every route behind a key, the answers any key check or dependency can give', () => {
    const guarded = operationsOf(document)
      .filter(({ operation }) => operation.security.length > 0)
      .map(({ where, operation }) => ({ where, responses: operation.responses }));
    expect(guarded.map(({ where }) => where).sort()).toEqual(['get /duplication_jobs/{job_id}', 'get /security_events/download', 'post /campaigns/duplicate']);
    for (const { where, responses } of guarded) {
      for (const status of ['401', '403', '429', '500', '503']) expect(responses[status], `${where} ${status}`).toBeDefined();
      for (const status of ['429', '503']) expect(Object.keys(responses[status].headers ?? {}), `${where} ${status}`).toContain('retry-after');
      expect(Object.keys(responses['401'].headers ?? {}), `${where} 401`).toEqual(['www-authenticate', 'x-request-id']);
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

    const validator = schemaValidator(document);
    for (const { method, path, response } of exchanges) {
      const where = `${method.toUpperCase()} ${path} → ${response.status}`;
      let documented: any;
      if (response.status === 405) {
        // A method the path lacks has no operation to document its answer: the operations it has declare it, and
        // the path item says which methods those are.
        expect(document.paths[path][method], where).toBeUndefined();
        expect(document.paths[path].description, where).toContain(`405 Method Not Allowed, with \`Allow: ${response.headers.allow}\``);
        const declaring = Object.values(document.paths[path]).filter((operation: any) => operation.responses?.['405']);
        expect(declaring.length, where).toBeGreaterThan(0);
        documented = resolved(document, (declaring[0] as any).responses['405']);
      } else {
        documented = resolved(document, document.paths[path][method].responses[String(response.status)]);
      }
      expect(documented, `${where} is not documented`).toBeDefined();
      const headers = Object.fromEntries(Object.entries(documented.headers ?? {}).map(([name, header]) => [name, resolved(document, header)]));
      const always = Object.keys(headers).filter((name) => headers[name].required);
      expect(always.filter((name) => response.headers[name] === undefined), `${where}: declared headers missing`).toEqual([]);
      const sent = Object.keys(response.headers).filter((name) =>
        /^(x-ratelimit-|retry-after$|location$|www-authenticate$|accept-encoding$|allow$|x-request-id$|content-disposition$)/.test(name) ||
        (name === 'cache-control' && path !== '/openapi.json'),
      );
      expect(sent.filter((name) => !(name in headers)), `${where}: undocumented headers`).toEqual([]);
      for (const name of sent) {
        const fixed = headers[name].schema?.const;
        if (fixed !== undefined) expect(response.headers[name], `${where}: ${name}`).toBe(fixed);
      }
      if (response.status === 401) expect(response.headers['www-authenticate'], where).toBe('Bearer');
      const mediaType = String(response.headers['content-type']).split(';')[0];
      expect(Object.keys(documented.content ?? {}), `${where} answered ${mediaType}`).toContain(mediaType);
      if (mediaType === 'application/json') {
        const validate = validator(documented.content[mediaType].schema);
        expect(validate(response.body) ? [] : validate.errors, `${where} body`).toEqual([]);
      }
      if (response.status >= 400 && mediaType === 'application/json' && !['/healthz', '/readyz'].includes(path)) {
        expect(ERROR_CODES[response.body.code as ErrorCode]?.httpStatus, `${where}: ${response.body.code}`).toBe(response.status);
      }
    }
    // The two 429s, a spent quota and a client blocked after failed authentications, by their codes alone.
    const limited = exchanges.filter(({ response }) => response.status === 429).map(({ response }) => response.body.code);
    expect(new Set(limited)).toEqual(new Set(['RATE_LIMITED', 'AUTH_BLOCKED']));
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

/**
 * The documented request (its body and its Idempotency-Key) against what the service takes. Route schemas only
 * document (src/http/openapi.ts): the service refuses, in its own words, after the quota point, so each refusal
 * here costs one.
 */
describe('the documented request of POST /campaigns/duplicate', () => {
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let document: any;
  let bodyValid: ValidateFunction;
  let keyValid: ValidateFunction;

  beforeAll(async () => {
    gateway = await startGateway({ DUPLICATE_RATE_LIMIT: '1000', WORKER_CONCURRENCY: '0' });
    ws = await gateway.workspace();
    document = (await http(gateway.baseUrl, 'GET', '/openapi.json')).body;
    const operation = document.paths['/campaigns/duplicate'].post;
    const validator = schemaValidator(document);
    bodyValid = validator(operation.requestBody.content['application/json'].schema);
    keyValid = validator(operation.parameters.find((parameter: any) => parameter.name === 'idempotency-key').schema);
  });
  afterAll(() => gateway?.close());

  const post = (body: object, idempotencyKey?: string) =>
    http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key), ...(idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }) },
      body: JSON.stringify(body),
    });

  const refused: { what: string; body?: Record<string, unknown>; key?: string; field: string }[] = [
    { what: 'a name of spaces', body: { name: '   ' }, field: 'name' },
    { what: 'an empty name', body: { name: '' }, field: 'name' },
    { what: 'an empty campaign_id', body: { campaign_id: '' }, field: 'campaign_id' },
    { what: 'a campaign_id of spaces', body: { campaign_id: ' \t' }, field: 'campaign_id' },
    { what: 'an empty tag', body: { tag_names: [''] }, field: 'tag_names' },
    { what: 'a tag too long', body: { tag_names: ['x'.repeat(101)] }, field: 'tag_names' },
    { what: 'an empty single tag', body: { tag_names: '' }, field: 'tag_names' },
    { what: 'a single tag of spaces', body: { tag_names: '  ' }, field: 'tag_names' },
    { what: 'an empty Idempotency-Key', key: '', field: 'Idempotency-Key' },
    { what: 'an Idempotency-Key with a space', key: 'order 1', field: 'Idempotency-Key' },
    { what: 'an Idempotency-Key too long', key: 'k'.repeat(256), field: 'Idempotency-Key' },
  ];

  it.each(refused)('refuses $what, as the document says', async ({ body, key, field }) => {
    const sent = { campaign_id: ws.campaign.id, name: 'copy', ...body };
    expect(body === undefined || !bodyValid(sent), 'the document takes the body').toBe(true);
    expect(key === undefined || !keyValid(key), 'the document takes the key').toBe(true);
    const response = await post(sent, key);
    expect(response.status).toBe(400);
    expect(response.body.errors).toEqual([expect.stringMatching(new RegExp(`^'${field}' `))]);
    expect(response.body.message).toBe(response.body.errors[0]);
  });

  it.each([
    { what: 'tags as a list', body: { tag_names: ['promo', 'newsletter'], description: '' }, key: 'order-1' },
    { what: 'one tag as a string', body: { tag_names: 'promo', description: null }, key: `~${'k'.repeat(254)}` },
    { what: 'no tags, a name with spaces around it', body: { name: '  Spring sale 🎉  ', tag_names: null }, key: undefined },
    { what: 'a name and a tag at their limits with a space after each', body: { name: `${'a'.repeat(255)} `, tag_names: ['promo '] }, key: undefined },
  ])('accepts $what, as the document says', async ({ body, key }) => {
    const sent = { campaign_id: ws.campaign.id, name: 'copy', ...body };
    expect(bodyValid(sent) ? [] : bodyValid.errors).toEqual([]);
    expect(key === undefined || keyValid(key)).toBe(true);
    expect((await post(sent, key)).status).toBe(202);
  });

  // The document may be looser than the service (it cannot say every character the service refuses), never
  // stricter: a client that validates with it must not refuse a request the gateway would take.
  it('takes every text field value the service takes', () => {
    const text = fc.oneof(
      fc.string({ unit: fc.constantFrom(' ', '\t', '\n', '\u00a0', '\u200b', '\u3000', '\u0301', 'a', 'é', '🎉', '\u0007'), maxLength: 8 }),
      fc.string({ unit: 'binary', maxLength: 300 }),
    );
    fc.assert(
      fc.property(text, (value) => {
        for (const raw of [
          { campaignId: value, name: 'copy' },
          { campaignId: 'c', name: value },
          { campaignId: 'c', name: 'copy', tagNames: value },
          { campaignId: 'c', name: 'copy', tagNames: [value] },
        ]) {
          if (normalizeDuplicateInput(raw) === undefined) continue;
          const body = { campaign_id: raw.campaignId, name: raw.name, tag_names: raw.tagNames };
          expect(bodyValid(body) ? [] : bodyValid.errors, JSON.stringify(body)).toEqual([]);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('says that unknown tags are named only once every field is valid', async () => {
    const blankName = await post({ campaign_id: ws.campaign.id, name: ' ', tag_names: ['no-such-tag'] });
    expect(blankName.body.errors).toEqual(["'name' must be a non-empty string"]);
    const unknownTag = await post({ campaign_id: ws.campaign.id, name: 'copy', tag_names: ['no-such-tag'] });
    expect(unknownTag.body.errors).toEqual(["'tag_names' contains unknown tag 'no-such-tag'"]);
    const documented = document.paths['/campaigns/duplicate'].post.responses['400'].description;
    expect(documented).toContain('checked only once every field is valid');
    expect(documented).not.toMatch(/names each problem/);
  });
});

describe("the README's REST error table", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('### REST (Braze-compatible)'), readme.indexOf('### GraphQL'));
  // Each row: | status | `CODE` | when |
  const rows = [...section.matchAll(/^\| (\d{3}) \| `([A-Z_]+)` \|/gm)].map(([, status, code]) => ({ code, status: Number(status) }));

  it('names every error code with its status, and no code the gateway does not have', () => {
    const byCode = (a: { code: string }, b: { code: string }) => a.code.localeCompare(b.code);
    expect(rows.sort(byCode)).toEqual(Object.entries(ERROR_CODES).map(([code, { httpStatus }]) => ({ code, status: httpStatus })).sort(byCode));
  });

  it("is the list of the codes a request's log line may carry", () => {
    const row = /^\| `code` \| the gateway's code for the refusal: (.*)$/m.exec(readme)![1];
    const named = new Set([...row.slice(0, row.indexOf(": REST's")).matchAll(/`([A-Z_]+)`/g)].map(([, code]) => code));
    expect([...named].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
});
