import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql, startGateway, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { graphQL } from '../support/transports.js';

/**
 * The README's snippets for Apollo Client, run as the plain JavaScript they are over the gateway's real answers:
 * Apollo's own packages are stood in for by what the snippets take from them.
 */
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.slice(readme.indexOf('#### From Apollo Client'), readme.indexOf('### Security events'));
const snippets = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map(([, code]) => code);
const snippet = (name: string) => snippets.find((code) => code.includes(name)) ?? '';

/** A snippet run without its imports, which `imports` provide; its value is the one it names `result`. */
function run(code: string, imports: Record<string, unknown>, result: string): any {
  const body = code
    .split('\n')
    .filter((line) => !line.startsWith('import '))
    .join('\n');
  return new Function(...Object.keys(imports), `${body}\nreturn ${result};`)(...Object.values(imports));
}

const gatewayErrors = run(snippet('gatewayErrors'), { onError: (handler: unknown) => handler }, 'gatewayErrors');
const eventsPolicy = run(snippet('typePolicies'), { InMemoryCache: class { constructor(readonly options: any) {} } }, 'cache').options.typePolicies.Query.fields
  .securityEvents;

/**
 * The two forms Apollo Client 3 gives an answer's errors in. HttpLink (parseAndCheckHttpResponse) makes a status of
 * 300 or more a ServerError with the parsed body as `result`; the error link (onError) then fills its graphQLErrors
 * from that result, while the ApolloError a hook gets leaves them empty. Below 300, both get the body's errors.
 */
const asApolloClient3 = (response: HttpResult) =>
  response.status >= 300
    ? [
        { networkError: { statusCode: response.status, result: response.body }, graphQLErrors: response.body.errors },
        { networkError: { statusCode: response.status, result: response.body }, graphQLErrors: [] },
      ]
    : [{ graphQLErrors: response.body.errors }];

const readAsApollo = (response: HttpResult) => {
  const [first, ...others] = asApolloClient3(response).map((error) => gatewayErrors(error));
  for (const other of others) expect(other).toEqual(first);
  return first;
};

const QUOTA = 12;
let gw: TestGateway;

beforeAll(async () => {
  gw = await startGateway({ WORKER_CONCURRENCY: '0', DUPLICATE_RATE_LIMIT: String(QUOTA), DUPLICATE_RATE_WINDOW_SECONDS: '3600' });
});

afterAll(() => gw?.close());

const duplicate = async (ws: TestWorkspace, idempotencyKey?: string, name = 'copy') =>
  graphQL.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name }, { idempotencyKey });

describe("the README's error link", () => {
  it('reads a refusal of the only field, a 429, and one of two fields, a 200, alike, with REST\'s code', async () => {
    const ws = await gw.workspace();
    expect((await duplicate(ws, 'once')).jobId).not.toBeNull();
    const reused = await duplicate(ws, 'once', 'another name');
    expect(reused.status).toBe(200);
    expect(readAsApollo(reused.response)).toEqual([
      { code: 'IDEMPOTENCY_MISMATCH', message: expect.any(String), path: ['duplicateCampaign'], retryAfterSeconds: undefined },
    ]);

    // The refused reuse took no point: the first request did.
    for (let index = 1; index < QUOTA; index++) expect((await duplicate(ws)).jobId).not.toBeNull();
    const spent = await duplicate(ws);
    expect(spent.status).toBe(429);
    expect(readAsApollo(spent.response)).toEqual([
      { code: 'RATE_LIMITED', message: 'Rate limit exceeded', path: ['duplicateCampaign'], retryAfterSeconds: Number(spent.response.headers['retry-after']) },
    ]);
  });
});

describe("the README's merge for securityEvents, over real pages", () => {
  const EVENTS = `query ($first: Int, $after: String) {
    securityEvents(filter: {types: [CAMPAIGN_DUPLICATION_REQUESTED]}, first: $first, after: $after) {
      edges { cursor node { id } }
      pageInfo { hasNextPage endCursor }
    }
  }`;
  type Connection = { edges: { cursor: string; node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } };
  let ws: TestWorkspace;

  beforeAll(async () => {
    ws = await gw.workspace();
  });

  const page = async (variables: { first: number; after?: string | null }): Promise<Connection> => {
    const response = await graphql(gw.baseUrl, ws.key, EVENTS, variables);
    expect(response.body.errors).toBeUndefined();
    return response.body.data.securityEvents;
  };
  const ids = (list: Connection) => list.edges.map((edge) => edge.node.id);
  /** The list a view holds after Apollo merged a page read with `args` into it. */
  const merged = async (list: Connection | undefined, args: { first: number; after?: string | null }): Promise<Connection> =>
    eventsPolicy.merge(list, await page(args), { args });
  /** Every event, read at once. */
  const all = async () => ids(await page({ first: 200 }));
  const accept = async (count: number) => {
    for (let index = 0; index < count; index++) expect((await duplicate(ws)).jobId).not.toBeNull();
  };

  it('keys the list by its filter alone, so that pages and polls land in one list', () => {
    expect(eventsPolicy.keyArgs).toEqual(['filter']);
  });

  it('keeps the pages loaded when the first page is read again, with the new events on top, each once', async () => {
    await accept(5);
    let list = await merged(undefined, { first: 2 });
    list = await merged(list, { first: 2, after: list.pageInfo.endCursor });
    expect(ids(list)).toEqual((await all()).slice(0, 4));

    await accept(1);
    list = await merged(list, { first: 2 });
    expect(ids(list)).toEqual((await all()).slice(0, 5));
    // Nothing new: as it was.
    list = await merged(list, { first: 2 });
    expect(ids(list)).toEqual((await all()).slice(0, 5));

    // Paging on goes down from where the view was, to the end.
    list = await merged(list, { first: 2, after: list.pageInfo.endCursor });
    expect(ids(list)).toEqual(await all());
    expect(list.pageInfo.hasNextPage).toBe(false);
    expect(new Set(ids(list)).size).toBe(6);

    // More new events than a page: the view starts over from the first page rather than leave a gap.
    await accept(3);
    list = await merged(list, { first: 2 });
    expect(ids(list)).toEqual((await all()).slice(0, 2));
    expect(list.pageInfo.hasNextPage).toBe(true);
  });
});

describe("the README's job poll", () => {
  it('shows when to ask again', async () => {
    const ws = await gw.workspace();
    const { jobId } = await duplicate(ws);
    const poll = /```graphql\n(query \(\$job: ID!\) \{\n {2}securityEvents[\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const response = await graphql(gw.baseUrl, ws.key, poll, { job: jobId });
    expect(response.body.errors).toBeUndefined();
    // The job waits for a worker (there is none): ask again in a second.
    expect(response.body.data.securityEvents.edges.map((edge: any) => edge.node.job)).toEqual([
      expect.objectContaining({ status: 'PENDING', pollAfterSeconds: 1 }),
    ]);
  });
});
