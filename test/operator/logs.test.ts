import { join } from 'node:path';
import Database from 'better-sqlite3';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RateLimiterQuota } from '../../src/adapters/rate-limiter-quota.js';
import { loadConfig } from '../../src/config.js';
import { dependencyUnavailable, GatewayError } from '../../src/domain/errors.js';
import { generateApiKey } from '../../src/domain/keys.js';
import { usesPrettyLogs } from '../../src/http/logging.js';
import { ManualClock } from '../support/clock.js';
import { bearer, graphql, http, json, metricSample, pipelinedAfterADuplicate, rawConnection, rawHttp, startGateway, storeFailingOn, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { LogSink } from '../support/log-sink.js';

describe('logs', () => {
  const sink = new LogSink();
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gateway = await startGateway({ LOG_LEVEL: 'trace', LOG_FORMAT: 'json', WORKER_CONCURRENCY: '0' }, { logDestination: sink });
    ws = await gateway.workspace();
  });
  afterAll(() => gateway?.close());
  beforeEach(() => {
    sink.text = '';
  });

  /** Waits for fastify's last line about a request, written after the response is sent. */
  const completed = (requestId: string) =>
    waitFor(async () => sink.lines().some((line) => line.reqId === requestId && line.msg === 'request completed'));

  it('keeps an incoming x-request-id, echoes it, and puts it on every line of the request', async () => {
    const response = await graphql(gateway.baseUrl, ws.key, '{ duplicationJob(id: "nope") { id } }');
    expect(response.status).toBe(200);
    sink.text = '';

    const traced = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer('cgw_wrong'), 'x-request-id': 'trace-42.a:b' },
      body: JSON.stringify({ query: '{ duplicationJob(id: "nope") { id } }' }),
    });
    expect(traced.status).toBe(401);
    expect(traced.headers['x-request-id']).toBe('trace-42.a:b');
    await completed('trace-42.a:b');
    const lines = sink.lines();
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(line.reqId, JSON.stringify(line)).toBe('trace-42.a:b');
  });

  it('makes an id when there is none, or when the incoming one is not safe to log', async () => {
    const variants: Record<string, string>[] = [{}, { 'x-request-id': 'has spaces\tand a tab' }, { 'x-request-id': 'x'.repeat(129) }];
    for (const headers of variants) {
      sink.text = '';
      const response = await http(gateway.baseUrl, 'GET', '/healthz', { headers });
      const id = response.headers['x-request-id'] as string;
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      await completed(id);
      for (const line of sink.lines()) expect(line.reqId).toBe(id);
    }
  });

  it('never writes a key, whether it came in a header, a query string or a body, nor a secret query parameter', async () => {
    const key = ws.key;
    await http(gateway.baseUrl, 'GET', `/duplication_jobs/x?api_key=${key}&token=hunter2-secret`, { headers: bearer(key) });
    await http(gateway.baseUrl, 'GET', `/security_events/download?start=${key}&end=${key.slice(0, 20)}`, { headers: bearer(key) });
    await http(gateway.baseUrl, 'POST', `/campaigns/duplicate?key=${key}`, {
      headers: { ...json, authorization: `Bearer ${key}` },
      body: JSON.stringify({ campaign_id: key, name: key }),
    });
    await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(key) }, body: `{"campaign_id": "${key}", ` });
    await graphql(gateway.baseUrl, key, `{ duplicationJob(id: "${key}") { id } }`, { unused: key });
    // Percent-encoded, where a URL or a Host header may carry it so.
    const encoded = `c%67w%5F${key.slice(4)}`;
    await http(gateway.baseUrl, 'GET', `/duplication_jobs/${encoded}?q=cgw%5f${key.slice(4)}`, { headers: bearer(key) });
    await http(gateway.baseUrl, 'GET', '/healthz', { headers: { host: `${encoded}.example` } });
    // Whatever some code might log: a message or a field carrying a key.
    gateway.app.http.log.error({ body: { apiKey: key }, headers: { authorization: `Bearer ${key}` } }, `something failed for ${key}`);
    await waitFor(async () => sink.lines().filter((line) => line.msg === 'request completed').length >= 7);

    expect(sink.text).toContain('/duplication_jobs/x?api_key=[redacted]&token=[redacted]');
    expect(sink.text).toContain('something failed for cgw_[redacted]');
    expect(sink.text).not.toContain(key);
    expect(sink.text).not.toContain(key.slice(4, 20));
    expect(sink.text).not.toContain('hunter2-secret');
  });

  describe("a request's completed line", () => {
    let reader: { key: string; keyId: string };
    beforeAll(async () => {
      reader = await ws.addKey(['security_events.read'], 'reader');
    });

    /** The `res` of the request's `request completed` line, sent with this request id. */
    const completedRes = async (requestId: string) => {
      await completed(requestId);
      return sink.lines().find((line) => line.reqId === requestId && line.msg === 'request completed')!.res;
    };
    const duplicate = (requestId: string, key: string, body: unknown) =>
      http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(key), 'x-request-id': requestId },
        body: JSON.stringify(body),
      });

    it('names the route, the method, the workspace, the key and the job of an accepted duplication', async () => {
      const accepted = await duplicate('completed-accepted', ws.key, { campaign_id: ws.campaign.id, name: 'logged copy' });
      expect(accepted.status).toBe(202);
      expect(await completedRes('completed-accepted')).toEqual({
        statusCode: 202,
        method: 'POST',
        route: '/campaigns/duplicate',
        workspaceId: ws.workspace.id,
        keyId: ws.keyId,
        jobId: accepted.body.job_id,
      });

      const job = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: { ...bearer(ws.key), 'x-request-id': 'completed-job' } });
      expect(job.status).toBe(200);
      expect(await completedRes('completed-job')).toEqual({
        statusCode: 200,
        method: 'GET',
        route: '/duplication_jobs/:job_id',
        workspaceId: ws.workspace.id,
        keyId: ws.keyId,
      });
    });

    it('names the code of a refusal, and the caller once its key is known', async () => {
      expect((await duplicate('completed-forbidden', reader.key, { campaign_id: ws.campaign.id, name: 'refused' })).status).toBe(403);
      expect(await completedRes('completed-forbidden')).toEqual({
        statusCode: 403,
        method: 'POST',
        route: '/campaigns/duplicate',
        workspaceId: ws.workspace.id,
        keyId: reader.keyId,
        code: 'FORBIDDEN',
      });
      expect((await duplicate('completed-invalid', ws.key, { campaign_id: ws.campaign.id })).status).toBe(400);
      expect(await completedRes('completed-invalid')).toMatchObject({ statusCode: 400, workspaceId: ws.workspace.id, keyId: ws.keyId, code: 'BAD_USER_INPUT' });
      expect((await duplicate('completed-unknown-key', 'cgw_unknown', { campaign_id: ws.campaign.id, name: 'refused' })).status).toBe(401);
      expect(await completedRes('completed-unknown-key')).toEqual({ statusCode: 401, method: 'POST', route: '/campaigns/duplicate', code: 'UNAUTHENTICATED' });
      expect((await http(gateway.baseUrl, 'GET', '/nowhere', { headers: { 'x-request-id': 'completed-unmatched' } })).status).toBe(404);
      expect(await completedRes('completed-unmatched')).toEqual({ statusCode: 404, method: 'GET', code: 'NOT_FOUND' });
    });

    it('names the workspace and the key of a GraphQL request, and the code of its refusal', async () => {
      const viewer = await http(gateway.baseUrl, 'POST', '/graphql', {
        headers: { ...json, ...bearer(ws.key), 'x-request-id': 'completed-graphql' },
        body: JSON.stringify({ query: '{ viewer { workspaceId } }' }),
      });
      expect(viewer.status).toBe(200);
      expect(await completedRes('completed-graphql')).toEqual({
        statusCode: 200,
        method: 'POST',
        route: '/graphql',
        workspaceId: ws.workspace.id,
        keyId: ws.keyId,
        graphql: { operation: 'query', fields: ['viewer'] },
      });

      const refused = await http(gateway.baseUrl, 'POST', '/graphql', {
        headers: { ...json, ...bearer('cgw_unknown'), 'x-request-id': 'completed-graphql-refused' },
        body: JSON.stringify({ query: '{ viewer { workspaceId } }' }),
      });
      expect(refused.status).toBe(401);
      expect(await completedRes('completed-graphql-refused')).toEqual({ statusCode: 401, method: 'POST', route: '/graphql', code: 'UNAUTHENTICATED' });
    });

    it("names a GraphQL operation's type and top-level fields, whichever path answered it, and none of the caller's text", async () => {
      const read = `query Dump($filter: SecurityEventFilter) {
        hidden: securityEvents(filter: $filter, first: 5) { edges { node { type } } }
        ...Both
      }
      fragment Both on Query { ... on Query { campaign(id: "sekrit-argument") { id } } securityEvents(first: 1) { edges { node { type } } } }`;
      const send = (requestId: string, query: string, variables: Record<string, unknown> = {}) =>
        http(gateway.baseUrl, 'POST', '/graphql', {
          headers: { ...json, ...bearer(ws.key), 'x-request-id': requestId },
          body: JSON.stringify({ query, variables }),
        });
      const prepared = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_graphql_requests_total', { path: 'prepared' }) ?? 0;
      const preparedBefore = await prepared();
      // The first is Apollo's; the second, the same operation, is answered by the prepared path.
      for (const requestId of ['graphql-fields-apollo', 'graphql-fields-prepared']) {
        const response = await send(requestId, read, { filter: { types: ['API_KEY_CREATED'], apiKeyId: 'sekrit-variable' } });
        expect(response.status).toBe(200);
        expect(await completedRes(requestId)).toMatchObject({ keyId: ws.keyId, graphql: { operation: 'query', fields: ['securityEvents', 'campaign'] } });
      }
      expect(await prepared()).toBe(preparedBefore + 1);

      const mutation = 'mutation { duplicateCampaign(input: { campaignId: "nope", name: "sekrit-name" }) { job { id } } }';
      await send('graphql-fields-mutation', mutation);
      expect(await completedRes('graphql-fields-mutation')).toMatchObject({ graphql: { operation: 'mutation', fields: ['duplicateCampaign'] } });
      const logged = sink.lines().filter((line) => line.msg === 'request completed');
      expect(JSON.stringify(logged)).not.toMatch(/sekrit|hidden|Dump|Both/);
    });

    it('carries the User-Agent, escaped and cut short as other logged headers are', async () => {
      // A C1 control (CSI), which a terminal would act on, in a header longer than is logged.
      const agents = { 'agent-plain': 'curl/8.5.0', 'agent-hostile': `evil\u009b31m${'x'.repeat(100)}` };
      for (const [requestId, agent] of Object.entries(agents)) {
        await http(gateway.baseUrl, 'GET', '/healthz', { headers: { 'user-agent': agent, 'x-request-id': requestId } });
      }
      await http(gateway.baseUrl, 'GET', '/nowhere', { headers: { 'x-request-id': 'agent-none' } });
      expect((await completedRes('agent-plain')).userAgent).toBe('curl/8.5.0');
      expect((await completedRes('agent-hostile')).userAgent).toBe(`evil\\u009B31m${'x'.repeat(56)}…`);
      expect(await completedRes('agent-none')).not.toHaveProperty('userAgent');
    });

    it('redacts a key in the User-Agent, before cutting it short', async () => {
      const key = generateApiKey();
      // The second's key starts where the cut would leave too little of it to be recognised as one.
      const agents = { 'agent-key': `integration/2.0 (${key})`, 'agent-key-cut': `${'x'.repeat(58)}${key}` };
      for (const [requestId, agent] of Object.entries(agents)) {
        await http(gateway.baseUrl, 'GET', '/healthz', { headers: { 'user-agent': agent, 'x-request-id': requestId } });
      }
      expect((await completedRes('agent-key')).userAgent).toBe('integration/2.0 (cgw_[redacted])');
      expect((await completedRes('agent-key-cut')).userAgent).toBe(`${'x'.repeat(58)}cgw_[r…`);
    });

    it('carries ids, never the key, so nothing in it needed scrubbing', async () => {
      await duplicate('completed-no-key', ws.key, { campaign_id: ws.campaign.id, name: 'logged copy' });
      await graphql(gateway.baseUrl, ws.key, '{ viewer { workspaceId } }');
      await waitFor(async () => sink.lines().filter((line) => line.msg === 'request completed').length >= 2);
      const written = sink.lines().filter((line) => line.msg === 'request completed');
      for (const line of written) {
        expect(line.res.keyId).toBe(ws.keyId);
        const res = JSON.stringify(line.res);
        expect(res).not.toContain(ws.key.slice(4, 20));
        expect(res).not.toContain('redacted');
      }
      expect(sink.text).not.toContain(ws.key);
    });
  });

  it('redacts every query parameter whose name says it holds a secret, and keeps the others', async () => {
    const secrets = [
      'x-api-key=sekritX',
      'client_secret=sekritZ',
      'sig=sekritW',
      'Signature=sekritS',
      'access_token=sekritA',
      'refreshToken=sekritR',
      'password=sekritP',
      'passwd=sekritD',
      'oauth_verifier=sekritO',
      'code=sekritC',
      'Credentials=sekritK',
      'x%2Dapi%2Dkey=sekritE',
      // Secret only once decoded.
      'p%61ssword=sekritQ',
      '%74oken=sekritT',
    ];
    const response = await http(gateway.baseUrl, 'GET', `/healthz?${secrets.join('&')}&page=2&campaign_id=visible-id&signed=yes`, {
      headers: { 'x-request-id': 'secret-params' },
    });
    expect(response.status).toBe(200);
    await completed('secret-params');
    const logged = sink.lines().find((line) => line.reqId === 'secret-params' && line.req)?.req.url;
    expect(logged).toBe(`/healthz?${secrets.map((pair) => `${pair.split('=')[0]}=[redacted]`).join('&')}&page=2&campaign_id=visible-id&signed=yes`);
    expect(sink.text).not.toContain('sekrit');
  });

  it("logs a GraphQL GET without its document and variables, which may hold personal data, and keeps the operation's name", async () => {
    const query = 'query Find($email: String) { campaigns(first: 1, filter: { name: "jane.doe@example.com" }) { nodes { id } } }';
    const variables = JSON.stringify({ email: 'jane.doe@example.com' });
    const search = `query=${encodeURIComponent(query)}&variables=${encodeURIComponent(variables)}&operationName=Find`;
    await http(gateway.baseUrl, 'GET', `/graphql?${search}`, {
      headers: { ...bearer(ws.key), 'apollo-require-preflight': 'true', 'x-request-id': 'graphql-get' },
    });
    await completed('graphql-get');
    const logged = sink.lines().find((line) => line.reqId === 'graphql-get' && line.req)?.req.url;
    expect(logged).toBe('/graphql?query=[redacted]&variables=[redacted]&operationName=Find');
    expect(sink.text).not.toContain('jane');
  });

  it("warns when a key's last use cannot be written, and still answers the request", async () => {
    const fresh = await gateway.workspace('untouchable');
    const database = new Database(join(gateway.dataDir, 'gateway.db'));
    database.exec("CREATE TRIGGER refuse_last_use BEFORE UPDATE OF last_used_at ON api_keys BEGIN SELECT RAISE(ABORT, 'last use refused'); END");
    try {
      const response = await graphql(gateway.baseUrl, fresh.key, '{ viewer { workspaceId } }');
      expect(response.status).toBe(200);
      expect(response.body.data.viewer.workspaceId).toBe(fresh.workspace.id);
      const warning = await waitFor(async () => sink.lines().find((line) => line.component === 'service'));
      expect(warning).toMatchObject({ level: 40, msg: "could not record the API key's last use", err: { message: 'last use refused' } });
      expect(warning.keyId).toBe(fresh.keyId);
      expect(sink.text).not.toContain(fresh.key);
    } finally {
      database.exec('DROP TRIGGER refuse_last_use');
      database.close();
    }
  });

  it('logs a URL that cannot be decoded twice, as any other request: incoming, and completed with its status and time', async () => {
    const key = ws.key;
    for (const [method, path] of [
      ['POST', `/campaigns/duplicate%?api_key=${key}&token=hunter2-token`],
      ['GET', '/%ff'],
      ['GET', '/campaigns/%E0%A4%A'],
    ] as const) {
      sink.text = '';
      const response = await http(gateway.baseUrl, method, path, { headers: { ...json, ...bearer(key) }, body: method === 'POST' ? '{}' : undefined });
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ message: 'Malformed URL', code: 'BAD_USER_INPUT' });
      const requestId = response.headers['x-request-id'] as string;
      await completed(requestId);
      const lines = sink.lines().filter((line) => line.reqId === requestId);
      expect(lines.map((line) => line.msg)).toEqual(['incoming request', 'request completed']);
      expect(lines[1]).toMatchObject({ level: 30, res: { statusCode: 400, method, code: 'BAD_USER_INPUT' }, responseTime: expect.any(Number) });
      expect(lines[1].responseTime).toBeGreaterThan(0);
      expect(sink.text).not.toContain(key.slice(4));
      expect(sink.text).not.toContain('hunter2-token');
    }
  });

  it('logs each request answered outside the routes once, under the id it was answered with, and none of its secrets', async () => {
    const secrets = `Authorization: Bearer ${ws.key}\r\nCookie: session=hunter2-cookie\r\n`;
    const path = `/campaigns/duplicate?api_key=${ws.key}&token=hunter2-token`;
    const post = `POST ${path} HTTP/1.1\r\nHost: x\r\n${secrets}Content-Type: application/json\r\n`;
    const cases = [
      { name: 'a malformed header', raw: `${post}Bad Header: 1\r\n\r\n`, status: 400, lines: ['malformed HTTP request refused'] },
      { name: 'headers over the limit', raw: `${post}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`, status: 431, lines: ['malformed HTTP request refused'] },
      { name: 'an expectation', raw: `${post}Expect: the-moon\r\nContent-Length: 2\r\n\r\n{}`, status: 417, lines: ['request with an expectation the gateway cannot meet refused'] },
      { name: 'a body over the limit', raw: `${post}Content-Length: 999999999\r\n\r\n{`, status: 413, lines: ['incoming request', 'request completed'] },
      { name: 'a malformed chunk', raw: `${post}Transfer-Encoding: chunked\r\n\r\nzz\r\n`, status: 400, lines: ['incoming request', 'request completed'] },
      {
        // Answered while its key is still being checked.
        name: 'a malformed chunk without a key',
        raw: `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
        status: 400,
        lines: ['incoming request', 'request completed'],
      },
      {
        name: 'chunk extensions over the limit',
        raw: `${post}Transfer-Encoding: chunked\r\n\r\n1;${'e'.repeat(20_000)}\r\n`,
        status: 413,
        lines: ['incoming request', 'request completed'],
      },
    ];
    for (const [index, { name, raw, status, lines }] of cases.entries()) {
      sink.text = '';
      const { head } = await rawHttp(gateway.baseUrl, raw);
      expect(head, name).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const requestId = /\r\nx-request-id: ([^\r]+)/i.exec(head)![1];
      await waitFor(async () => sink.lines().some((line) => line.reqId === requestId && line.msg === lines.at(-1)));
      // A request after it, answered in full, leaves time for any line it caused late.
      await http(gateway.baseUrl, 'GET', '/nowhere', { headers: { 'x-request-id': `after-${index}` } });
      await completed(`after-${index}`);
      const written = sink.lines().filter((line) => line.reqId !== `after-${index}`);
      expect(written.map((line) => [line.reqId, line.msg]), name).toEqual(lines.map((msg) => [requestId, msg]));
      if (lines.at(-1) === 'request completed') {
        expect(written.at(-1), name).toMatchObject({ res: { statusCode: status, method: 'POST', route: '/campaigns/duplicate' }, responseTime: expect.any(Number) });
        // The parser's error code, as on the line of a request whose head it could not parse.
        if (name.includes('chunk')) expect(written.at(-1)?.code, name).toMatch(/^HPE_/);
      }
      expect(sink.text, name).not.toContain(ws.key.slice(4));
      expect(sink.text, name).not.toMatch(/hunter2/);
    }
  });

  it('answers a URL that cannot be decoded once, when its body cannot be parsed either', async () => {
    const count = async () =>
      metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', { method: 'POST', route: 'unmatched', status_code: '400' }) ?? 0;
    const before = await count();
    sink.text = '';
    const connection = rawConnection(gateway.baseUrl);
    connection.send('POST /campaigns/%E0%A4%A HTTP/1.1\r\nHost: x\r\nX-Request-Id: bad-url-bad-chunk\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nZZ\r\n');
    const { head, body } = await connection.answer;
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(`${head}\r\n\r\n${body}`.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    await completed('bad-url-bad-chunk');
    await http(gateway.baseUrl, 'GET', '/nowhere', { headers: { 'x-request-id': 'after-bad-url' } });
    await completed('after-bad-url');
    expect(sink.lines().filter((line) => line.reqId !== 'after-bad-url').map((line) => [line.reqId, line.msg])).toEqual([
      ['bad-url-bad-chunk', 'incoming request'],
      ['bad-url-bad-chunk', 'request completed'],
    ]);
    expect(await count()).toBe(before + 1);
  });

  it('says a refusal was not sent when the connection could no longer carry it', async () => {
    sink.text = '';
    // The client's own `Connection: close`, then more bytes: Node refuses them (HPE_CLOSED_CONNECTION) once it has answered.
    const { head } = await rawHttp(gateway.baseUrl, 'GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: closing-then-more\r\nConnection: close\r\n\r\nGARBAGE\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 404 /);
    await waitFor(async () => sink.lines().some((line) => line.reqId !== 'closing-then-more'));
    await http(gateway.baseUrl, 'GET', '/nowhere', { headers: { 'x-request-id': 'after-closing' } });
    await completed('after-closing');
    const others = sink.lines().filter((line) => line.reqId !== 'closing-then-more' && line.reqId !== 'after-closing');
    expect(others).toEqual([expect.objectContaining({ level: 30, msg: 'malformed HTTP request not answered: its connection was closing', code: 'HPE_CLOSED_CONNECTION' })]);
    expect(others[0]).not.toHaveProperty('reqId');
  });

  it('answers a request that arrived in full before refusing the pipelined request after it that Node cannot parse', async () => {
    const cases = [
      { name: 'a malformed head', next: () => 'GARBAGE\r\n\r\n', status: 400, lines: ['malformed HTTP request refused'] },
      { name: 'headers over the limit', next: () => `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, status: 431, lines: ['malformed HTTP request refused'] },
      {
        // Its head is read while the job is being answered: its own answer, under its id, comes after the job's.
        name: 'a malformed chunk',
        next: () => `POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ws.key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
        status: 400,
        lines: ['incoming request', 'request completed'],
      },
    ];
    for (const [index, { name, next, status, lines }] of cases.entries()) {
      sink.text = '';
      const team = await gateway.workspace(`pipelining ${index}`);
      const first = `pipelined-${index}`;
      const answer = await pipelinedAfterADuplicate(gateway.baseUrl, team, first, next());
      // The job's answer, under its id, then the refusal under an id of its own.
      const [accepted, refused] = answer.split(/(?=HTTP\/1\.1 )/);
      expect(accepted, name).toMatch(/^HTTP\/1\.1 202 /);
      expect(accepted, name).toMatch(new RegExp(`\r\nx-request-id: ${first}\r\n`, 'i'));
      expect(refused, name).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const refusedId = /\r\nx-request-id: ([^\r]+)/i.exec(refused)![1];
      expect(refusedId, name).not.toBe(first);
      await completed(first);
      await waitFor(async () => sink.lines().some((line) => line.reqId === refusedId && line.msg === lines.at(-1)));
      const written = sink.lines();
      expect(written.find((line) => line.reqId === first && line.msg === 'request completed'), name).toMatchObject({ res: { statusCode: 202 } });
      expect(written.filter((line) => line.reqId === refusedId).map((line) => line.msg), name).toEqual(lines);
      expect(await gateway.app.store.listJobs({ workspaceId: team.workspace.id }, 10, null), name).toHaveLength(1);
    }
  });

  it('logs a request Node cannot parse under the id it was answered with, and nothing of what it sent', async () => {
    const { head } = await rawHttp(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hunter2-secret\r\nBad Header: 1\r\n\r\n');
    const requestId = /\r\nx-request-id: ([^\r]+)/i.exec(head)?.[1];
    expect(requestId).toBeTypeOf('string');
    const line = await waitFor(async () => sink.lines().find((entry) => entry.reqId === requestId));
    expect(line).toMatchObject({ msg: 'malformed HTTP request refused', code: expect.stringMatching(/^HPE_/) });
    expect(sink.text).not.toContain('hunter2-secret');
  });

  it('logs a Host header holding control characters escaped, never as the characters a terminal would act on', async () => {
    // 0x9B is CSI in C1: `CSI 31m` turns a terminal's text red; 0x85 (NEL) ends a line for some log viewers.
    const { head } = await rawHttp(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: a\x9b31mb\xa0c\x85d\r\nx-request-id: host-c1\r\nConnection: close\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    await completed('host-c1');
    const hosts = sink.lines().filter((line) => line.reqId === 'host-c1' && line.req).map((line) => line.req.host);
    expect(hosts.length).toBeGreaterThan(0);
    for (const host of hosts) expect(host).toBe('a\\u009B31mb\\u00A0c\\u0085d');
    expect(sink.text).not.toMatch(/[\x80-\x9f\xa0]/);

    const { head: plain } = await rawHttp(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nx-request-id: host-plain\r\nConnection: close\r\n\r\n');
    expect(plain).toMatch(/^HTTP\/1\.1 200/);
    await completed('host-plain');
    expect(sink.lines().find((line) => line.reqId === 'host-plain' && line.req)?.req.host).toBe('[::1]:8080');
  });

  it('logs an error the listening server reports, such as an accept that failed, and keeps serving', async () => {
    // What Node emits on the server when accepting a connection fails; libuv absorbs most EMFILE, so a real one
    // cannot be caused on demand.
    const refused = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', errno: -24, syscall: 'accept' });
    gateway.app.http.server.emit('error', refused);
    expect(sink.lines()).toEqual([
      expect.objectContaining({
        level: 50,
        msg: 'the HTTP server failed to accept a connection; it keeps listening',
        err: expect.objectContaining({ code: 'EMFILE', message: 'accept EMFILE' }),
      }),
    ]);
    expect((await http(gateway.baseUrl, 'GET', '/healthz')).status).toBe(200);
  });

  it('are readable lines with LOG_FORMAT=pretty, or in development on a terminal', async () => {
    const pretty = new LogSink();
    const readable = await startGateway({ LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' }, { logDestination: pretty });
    try {
      await http(readable.baseUrl, 'GET', `/duplication_jobs/x?api_key=${ws.key}`, { headers: { 'x-request-id': 'pretty-1' } });
      await waitFor(async () => pretty.text.includes('request completed'));
    } finally {
      await readable.close();
    }
    expect(pretty.text).toMatch(/INFO.*: incoming request\n\s+reqId: "pretty-1"/);
    expect(pretty.text).not.toContain(ws.key);
    expect(() => JSON.parse(pretty.text.split('\n')[0])).toThrow();

    expect(usesPrettyLogs(loadConfig({ NODE_ENV: 'development' }), true)).toBe(true);
    expect(usesPrettyLogs(loadConfig({ NODE_ENV: 'development' }), false)).toBe(false);
    expect(usesPrettyLogs(loadConfig({ NODE_ENV: 'production' }), true)).toBe(false);
    expect(usesPrettyLogs(loadConfig({ NODE_ENV: 'production', LOG_FORMAT: 'pretty' }), false)).toBe(true);
    expect(usesPrettyLogs(loadConfig({ NODE_ENV: 'development', LOG_FORMAT: 'json' }), true)).toBe(false);
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow('invalid configuration: LOG_FORMAT must be one of auto, json, pretty');
  });
});

describe('probes and scrapes', () => {
  const sink = new LogSink();
  let storeDown = false;
  let gateway: TestGateway;

  beforeAll(async () => {
    gateway = await startGateway(
      { LOG_LEVEL: 'info', LOG_FORMAT: 'json', WORKER_CONCURRENCY: '0' },
      { logDestination: sink },
      { wrapStore: (store) => storeFailingOn(store, ['ping'], () => storeDown, () => dependencyUnavailable(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' }))) },
    );
  });
  afterAll(() => gateway?.close());

  /** Lines of the requests sent with an x-request-id starting `probe-`. */
  const probeLines = () => sink.lines().filter((line) => String(line.reqId).startsWith('probe-'));
  /** A request to a route that is no probe, logged as ever: once its last line is written, the probes' before it would be. */
  const afterOtherRequest = async () => {
    const id = `other-${Math.random()}`;
    expect((await http(gateway.baseUrl, 'GET', '/duplication_jobs/x', { headers: { 'x-request-id': id } })).status).toBe(401);
    await waitFor(async () => sink.lines().some((line) => line.reqId === id && line.msg === 'request completed'));
  };

  it('write no line at LOG_LEVEL=info, while other requests log theirs', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      expect((await http(gateway.baseUrl, 'GET', path, { headers: { 'x-request-id': `probe${path.replace('/', '-')}` } })).status).toBe(200);
    }
    await afterOtherRequest();
    expect(probeLines()).toEqual([]);
  });

  it('still log a failing readiness check, once, from the readiness component', async () => {
    storeDown = true;
    try {
      for (let probe = 0; probe < 3; probe++) {
        expect((await http(gateway.baseUrl, 'GET', '/readyz', { headers: { 'x-request-id': `probe-failing-${probe}` } })).status).toBe(503);
      }
      await afterOtherRequest();
    } finally {
      storeDown = false;
    }
    const failures = sink.lines().filter((line) => line.msg === 'dependency check failed');
    expect(failures).toEqual([expect.objectContaining({ level: 40, component: 'readiness', dependency: 'store' })]);
    expect(probeLines()).toEqual([]);
  });
});

describe('requests refused because a dependency is unavailable', () => {
  const sink = new LogSink();
  const clock = new ManualClock();
  let storeDown = false;
  let quotaDown = false;
  /** The quota's own adapter, over a limiter whose store answers only while `quotaDown` is false. */
  class FailingLimiter extends RateLimiterMemory {
    override consume(...args: Parameters<RateLimiterMemory['consume']>) {
      return quotaDown ? Promise.reject(Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:6379'), { code: 'ECONNREFUSED' })) : super.consume(...args);
    }
  }
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gateway = await startGateway(
      { LOG_LEVEL: 'info', LOG_FORMAT: 'json', WORKER_CONCURRENCY: '0' },
      { logDestination: sink, clock, quota: new RateLimiterQuota(new FailingLimiter({ points: 1000, duration: 60 })) },
      {
        wrapStore: (store) =>
          storeFailingOn(store, ['findApiKeyByHash'], () => storeDown, () => dependencyUnavailable(Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' }))),
      },
    );
    ws = await gateway.workspace();
  });
  afterAll(() => gateway?.close());

  /** Over REST and GraphQL in turn, each answered as `status`; the request ids, once their last lines are written. */
  async function duplications(count: number, status: number): Promise<string[]> {
    const ids: string[] = [];
    for (let index = 0; index < count; index++) {
      const response =
        index % 2 === 0
          ? await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(ws.key) }, body: JSON.stringify({ campaign_id: ws.campaign.id, name: `n${index}` }) })
          : await graphql(gateway.baseUrl, ws.key, 'mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "n"}) { job { id } } }', { id: ws.campaign.id });
      expect(response.status).toBe(index % 2 === 0 ? status : status === 202 ? 200 : status);
      ids.push(response.headers['x-request-id'] as string);
    }
    await waitFor(async () => sink.lines().some((line) => line.reqId === ids.at(-1) && line.msg === 'request completed'));
    return ids;
  }
  const about = (dependency: string) => sink.lines().filter((line) => line.dependency === dependency);

  it('logs the first refusal with its request id, a reminder at most once a minute with the count, and once when requests are served again, for each dependency', async () => {
    const since = clock.now().toISOString();
    storeDown = true;
    const refused = await duplications(5, 503);
    // One warning for the five, naming the first.
    expect(sink.lines().filter((line) => line.level >= 40)).toEqual([
      expect.objectContaining({
        level: 40,
        msg: 'a dependency is unavailable',
        component: 'requests',
        dependency: 'store',
        reqId: refused[0],
        cause: expect.objectContaining({ code: 'ECONNREFUSED' }),
      }),
    ]);

    clock.advance(60_000);
    await duplications(1, 503);
    expect(about('store').slice(1)).toEqual([
      expect.objectContaining({ level: 40, msg: 'a dependency is still unavailable; requests are refused', failures: 6, since, cause: expect.objectContaining({ code: 'ECONNREFUSED' }) }),
    ]);

    // Served again: said once it has lasted a few seconds, with how many were refused.
    storeDown = false;
    await duplications(1, 202);
    expect(about('store')).toHaveLength(2);
    clock.advance(5000);
    await duplications(2, 202);
    expect(about('store').slice(2)).toEqual([expect.objectContaining({ level: 30, msg: 'a dependency is available again; requests are served', failures: 6, since })]);

    // The quota's store is a dependency of its own.
    quotaDown = true;
    const limited = await duplications(3, 503);
    expect(about('quota')).toEqual([
      expect.objectContaining({ level: 40, msg: 'a dependency is unavailable', reqId: limited[0], cause: expect.objectContaining({ code: 'ECONNREFUSED' }) }),
    ]);
    quotaDown = false;
    await duplications(1, 202);
    clock.advance(5000);
    await duplications(1, 202);
    expect(about('quota').slice(1)).toEqual([expect.objectContaining({ level: 30, msg: 'a dependency is available again; requests are served', failures: 3 })]);
    expect(about('store')).toHaveLength(3);
  });

  it('counts a GraphQL request whose fields all met the outage as one request refused', async () => {
    const since = clock.now().toISOString();
    const from = about('quota').length;
    quotaDown = true;
    const both = await graphql(
      gateway.baseUrl,
      ws.key,
      'mutation($id: ID!) { a: duplicateCampaign(input: {campaignId: $id, name: "a"}) { job { id } } b: duplicateCampaign(input: {campaignId: $id, name: "b"}) { job { id } } }',
      { id: ws.campaign.id },
    );
    expect(both.status).toBe(503);
    expect(both.body.errors.map((error: { path: string[] }) => error.path)).toEqual([['a'], ['b']]);
    clock.advance(60_000);
    await duplications(1, 503);
    expect(about('quota').slice(from)).toEqual([
      expect.objectContaining({ level: 40, msg: 'a dependency is unavailable', reqId: both.headers['x-request-id'] }),
      expect.objectContaining({ level: 40, msg: 'a dependency is still unavailable; requests are refused', failures: 2, since }),
    ]);
    quotaDown = false;
    await duplications(1, 202);
    clock.advance(5000);
    await duplications(1, 202);
    expect(about('quota').slice(from + 2)).toEqual([expect.objectContaining({ level: 30, msg: 'a dependency is available again; requests are served', failures: 2, since })]);
  });
});

describe('a request refused because something other than the store or the quota is unavailable', () => {
  const sink = new LogSink();
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let down = false;

  beforeAll(async () => {
    gateway = await startGateway(
      { LOG_LEVEL: 'info', LOG_FORMAT: 'json', WORKER_CONCURRENCY: '0' },
      { logDestination: sink },
      {
        wrapStore: (store) =>
          storeFailingOn(store, ['findApiKeyByHash'], () => down, () => new GatewayError('UNAVAILABLE', undefined, { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) })),
      },
    );
    ws = await gateway.workspace();
  });
  afterAll(() => gateway?.close());

  it('is logged by the same component as the refusals of the store and the quota, over REST and GraphQL', async () => {
    down = true;
    const rest = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(ws.key) }, body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'n' }) });
    const viaGraphQL = await graphql(gateway.baseUrl, ws.key, '{ campaigns(first: 1) { edges { node { id } } } }');
    down = false;
    const ids = [rest.headers['x-request-id'], viaGraphQL.headers['x-request-id']];
    await waitFor(async () => sink.lines().some((line) => line.reqId === ids[1] && line.msg === 'request completed'));
    expect(sink.lines().filter((line) => line.msg === 'a dependency is unavailable')).toEqual(
      ids.map((reqId) => expect.objectContaining({ level: 40, component: 'requests', reqId, cause: expect.objectContaining({ code: 'ECONNRESET' }) })),
    );
  });
});
