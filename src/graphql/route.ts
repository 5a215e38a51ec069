import { fastifyApolloHandler } from '@as-integrations/fastify';
import type { FastifyInstance, FastifyRequest, FastifySchema } from 'fastify';
import type { DocumentNode } from 'graphql';
import type { Config } from '../config.js';
import { GatewayError } from '../domain/errors.js';
import { withReadScope } from '../domain/read-scope.js';
import type { GatewayService } from '../domain/service.js';
import type { DependencyRefusals } from '../http/dependency-refusals.js';
import { explorerAssetRoutes, sendExplorer, sendExplorerOff, wantsExplorer } from '../http/explorer.js';
import type { GatewayMetrics } from '../http/metrics.js';
import { httpRequestContext } from '../http/request-context.js';
import { createApollo, graphQLErrorFormatter, type GraphQLErrorObserver } from './apollo.js';
import { createContext, refusesKey } from './context.js';
import { DocumentCache, QUERY_TEXT_CACHE_BYTES } from './document-cache.js';
import { OperationLimits } from './limits.js';
import { operationLogPlugin } from './logged-operation.js';
import { PreparedOperations } from './prepared.js';
import { gatewaySchema } from './schema.js';

export interface GraphQLRouteOptions {
  config: Config;
  service: GatewayService;
  metrics: GatewayMetrics;
  refusals: DependencyRefusals;
  /** Every error a GraphQL answer carries is counted, whichever path made the answer. */
  observeGraphQLError: GraphQLErrorObserver;
  /**
   * Whether each request runs in a read scope (src/domain/read-scope.ts), for a store that reads a query's fields in
   * one view only inside one (PostgreSQL). SQLite's reads of one event-loop turn share one view already; and a scope
   * is carried by AsyncLocalStorage, whose first use makes Node 20 run hooks on every promise of the process, REST's
   * included (about 10 µs of CPU per accepted request).
   */
  queryReadScopes: boolean;
}

// GraphQL is documented by its own schema (schema.graphql, the explorer's Docs), not by the OpenAPI document.
const hiddenFromOpenapi: FastifySchema = { hide: true };

/**
 * The GraphQL door, `/graphql`: Apollo and its caches, prepared operations, the explorer, and the key checked before
 * the body is read.
 */
export async function graphqlRoute(app: FastifyInstance, options: GraphQLRouteOptions): Promise<void> {
  const { config, service, metrics, refusals, observeGraphQLError } = options;
  const inReadScope = options.queryReadScopes ? withReadScope : <T>(work: () => Promise<T>): Promise<T> => work();
  const schema = await gatewaySchema();
  const limits = new OperationLimits(schema, {
    maxDepth: config.graphqlMaxDepth,
    maxCost: config.graphqlMaxCost,
    maxAliases: config.graphqlMaxAliases,
    maxDuplicatesPerOperation: config.graphqlMaxDuplicatesPerOperation,
  });
  const prepared = new PreparedOperations(schema, limits, app.log, refusals, graphQLErrorFormatter(config.production), observeGraphQLError);
  const documents = new DocumentCache<DocumentNode>();
  const persistedQueries = new DocumentCache<string>(QUERY_TEXT_CACHE_BYTES);
  metrics.watchDocumentCaches({ apollo: documents, prepared, persisted: persistedQueries });
  const apollo = createApollo({
    schema,
    introspection: config.explorer,
    hideSchemaDetails: config.production,
    limits,
    logger: app.log,
    refusals,
    documents,
    persistedQueries,
    plugins: [prepared.plugin(), operationLogPlugin()],
    observeError: observeGraphQLError,
  });
  await apollo.start();
  app.addHook('onClose', () => apollo.stop());
  const requestUrls = new RequestUrls();
  const graphqlContext = (request: FastifyRequest) => createContext(service, httpRequestContext(request, 'GRAPHQL'), request.principal);
  // With introspection off, a request without a key can only be refused (it guesses no key, so that is no failed
  // authentication); a key refused, or a client blocked after too many failed authentications, is refused whatever
  // the request asks. Either is refused before the body is read, as REST does, so that a client without a valid key
  // cannot have bodies held in memory or parsed.
  const authenticatesBeforeBody = (request: FastifyRequest) => request.headers.authorization !== undefined || !config.explorer;
  const apolloHandler = fastifyApolloHandler(apollo, { context: async (request) => graphqlContext(request) });
  if (config.explorer) await app.register(explorerAssetRoutes);
  app.route<{ Reply: string }>({
    url: '/graphql',
    method: ['GET', 'POST', 'OPTIONS'],
    schema: hiddenFromOpenapi,
    // A browser gets the explorer, or word that it is off; GraphQL clients, GET ones included, get Apollo. A
    // callback: every GraphQL request passes here, and a reply sent here ends the request without done().
    onRequest: (request, reply, done) => {
      if (request.method === 'OPTIONS') {
        // The server's hooks answer every CORS preflight before this: any other OPTIONS is refused as REST's routes
        // refuse a method they lack, rather than by Apollo's CSRF check.
        reply.header('allow', 'GET, HEAD, POST');
        done(new GatewayError('METHOD_NOT_ALLOWED'));
      } else if (wantsExplorer(request)) {
        if (config.explorer) sendExplorer(reply);
        else sendExplorerOff(reply);
      } else if (!authenticatesBeforeBody(request)) {
        done();
      } else {
        // A key that could not be checked (a store outage) is left to the fields, which each report it.
        const context = httpRequestContext(request, 'GRAPHQL');
        (request.headers.authorization === undefined ? service.refuseWithoutKey(context) : service.authenticate(context)).then(
          (principal) => {
            request.principal = principal;
            done();
          },
          (error: unknown) => done(refusesKey(error) ? (error as Error) : undefined),
        );
      }
    },
    // An operation Apollo has accepted before is answered without it, identically (src/graphql/prepared.ts). A
    // query's reads share one view of the store, given up however the request ends (src/graphql/read-scope.ts).
    handler: (request, reply) =>
      inReadScope(async () => {
        if (!requestUrls.parses(request)) throw new GatewayError('BAD_USER_INPUT', 'The Host header is not a valid host name');
        const answer = await prepared.answer(request, () => graphqlContext(request));
        if (answer) {
          metrics.graphqlRequest('prepared');
          for (const [name, value] of answer.headers) reply.header(name, value);
          return reply.code(answer.status).send(answer.body);
        }
        metrics.graphqlRequest('apollo');
        return apolloHandler.call(app, request, reply);
      }),
  });
}

/**
 * Apollo's fastify integration makes a URL of the request's path and Host header, and answers 500 (logged as
 * a fault of ours) when it cannot: a Host header that is no host name is the caller's mistake, answered 400
 * before either GraphQL path. A server sees few hosts and paths, so their verdicts are kept: parsing costs
 * more than every other check a prepared operation makes.
 */
class RequestUrls {
  private static readonly MAX_ENTRIES = 64;
  private readonly verdicts = new Map<string, boolean>();

  parses(request: FastifyRequest): boolean {
    const base = `${request.protocol}://${request.hostname}/`;
    const key = `${base} ${request.url}`;
    let parses = this.verdicts.get(key);
    if (parses === undefined) {
      parses = URL.canParse(request.url, base);
      if (this.verdicts.size < RequestUrls.MAX_ENTRIES) this.verdicts.set(key, parses);
    }
    return parses;
  }
}
