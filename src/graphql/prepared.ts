/**
 * Prepared operations: POST /graphql without Apollo's request pipeline for operations Apollo already accepted.
 *
 * Why: per request Apollo hashes the query text to find its parsed document, negotiates content types twice,
 * runs every plugin hook and coerces the variables again for the cost estimate; for the one mutation that
 * matters most that was more than the whole REST route costs. Once Apollo has parsed, validated (every rule,
 * the gateway's included) and resolved an operation, found it within the limits, and its cost cannot depend on
 * variables, the same query text and operation name always get that same verdict: later requests are executed
 * directly with graphql-js against the same schema and context, and their answer is made by the same functions
 * Apollo's hooks call (error formatting, HTTP semantics, logging, serialisation). Whatever this path cannot answer
 * exactly as Apollo would (another method, content type or Accept header, a persisted query, variables that do
 * not fit the operation: nothing has run then) is handed to Apollo.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ApolloServerPlugin } from '@apollo/server';
import type { FastifyBaseLogger } from 'fastify';
import type { DependencyRefusals } from '../http/dependency-refusals.js';
import { execute, getVariableValues, type DocumentNode, type GraphQLSchema, type OperationTypeNode, type VariableDefinitionNode } from 'graphql';
import Negotiator from 'negotiator';
import {
  applyHttpSemantics,
  formatExecutionErrors,
  reportUnexpectedErrors,
  stringifyGraphQLResult,
  type GraphQLErrorFormatter,
  type GraphQLErrorObserver,
  type GraphQLHttpHead,
} from './apollo.js';
import { isRecord } from '../domain/validation.js';
import type { GraphQLContext } from './context.js';
import { DocumentCache, entryBytes } from './document-cache.js';
import { holdsManyEntries, type OperationLimits } from './limits.js';
import { beginOperationReads, endOperationReads } from './read-scope.js';
import { loggedOperation } from './logged-operation.js';
import type { LoggedOperation } from '../domain/service.js';

/** What Apollo's CSRF prevention lets through without a preflight header and parses as JSON. */
const JSON_CONTENT_TYPES = new Set(['application/json', 'application/json; charset=utf-8']);

const JSON_RESPONSE = 'application/json; charset=utf-8';
const GRAPHQL_RESPONSE = 'application/graphql-response+json; charset=utf-8';

/**
 * Accept headers and the content type Apollo's negotiation picks for them (a missing or empty header is
 * plain JSON); any other Accept header goes to Apollo. GraphiQL's lists multipart/mixed, for incremental
 * delivery (@defer): Apollo answers an operation without it, as every operation of this schema is, with the
 * single result, in the type negotiated among JSON types only.
 */
const RESPONSE_TYPES = new Map<string, string>([
  ['', JSON_RESPONSE],
  ['*/*', JSON_RESPONSE],
  ['application/json', JSON_RESPONSE],
  ['application/json; charset=utf-8', JSON_RESPONSE],
  ['application/json, text/plain, */*', JSON_RESPONSE],
  ['application/json, multipart/mixed', JSON_RESPONSE],
  ['application/graphql-response+json', GRAPHQL_RESPONSE],
  ['application/graphql-response+json, application/json', GRAPHQL_RESPONSE],
  ['application/graphql-response+json,application/json;q=0.9', GRAPHQL_RESPONSE],
]);

/** The content type Apollo negotiates for an Accept header of the table above; undefined for any other. */
const negotiatedResponseType = (accept: string | undefined): string | undefined => RESPONSE_TYPES.get(accept ?? '');

/**
 * The content type of an answer the gateway gives itself to a /graphql request it refuses before Apollo (a body
 * it cannot read): the one Apollo negotiates, by the same rules (quality values included), and plain JSON when
 * the header accepts neither, where Apollo would answer 406: the refusal says more.
 */
export const refusalResponseType = (accept: string | undefined): string =>
  negotiatedResponseType(accept) ?? new Negotiator({ headers: { accept } }).mediaType([JSON_RESPONSE, GRAPHQL_RESPONSE]) ?? JSON_RESPONSE;

/**
 * Extensions that change nothing Apollo runs: none, or any but `persistedQuery` (which may stand for the query
 * text, and registers it). Apollo hands the others to plugins, and none of the gateway's reads them; Apollo
 * Client 4 sends `clientLibrary` with every request. Apollo refuses extensions that are not an object.
 */
const isInertExtensions = (extensions: unknown): boolean =>
  extensions === undefined || extensions === null || (isRecord(extensions) && !('persistedQuery' in extensions));

/** Longer query texts are left to Apollo: real operations are far shorter. */
const MAX_QUERY_LENGTH = 8192;

interface Prepared {
  document: DocumentNode;
  operationName: string | undefined;
  operation: OperationTypeNode;
  variableDefinitions: readonly VariableDefinitionNode[];
  /** Its estimated cost, which cannot depend on variables: what its reads take from the read budget. */
  cost: number;
  /** Made once, when the operation is prepared: not again for each request of it. */
  logged: LoggedOperation;
}

/** The parts of an HTTP request this path looks at (a FastifyRequest has them). */
export interface PreparedRequest {
  method: string;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export interface PreparedAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Unambiguous for any operation name: an absent one and an empty one are different requests to Apollo. */
const keyOf = (query: string, operationName: string | undefined): string =>
  operationName === undefined ? `-${query}` : `${operationName.length}:${operationName}${query}`;

export class PreparedOperations {
  /** Bounded by the heap the documents hold: a client needs no key to have an operation prepared. */
  private readonly entries = new DocumentCache<Prepared>();
  private enabled = true;

  constructor(
    private readonly schema: GraphQLSchema,
    private readonly limits: OperationLimits,
    private readonly logger: FastifyBaseLogger,
    private readonly refusals: DependencyRefusals,
    /** Apollo's own formatter (graphQLErrorFormatter), so that both answer every error alike. */
    private readonly formatError: GraphQLErrorFormatter,
    /** Hears of each error these answers carry, as Apollo's formatError does of its own. */
    private readonly observeError: GraphQLErrorObserver,
  ) {}

  /** Learns the operations Apollo accepted: it reaches execution only after parsing, validation and the limits. */
  plugin(): ApolloServerPlugin<GraphQLContext> {
    return {
      serverWillStart: async () => ({
        // A stopped Apollo answers with an error; so must every request then.
        serverWillStop: async () => {
          this.enabled = false;
          this.entries.clear();
        },
      }),
      requestDidStart: async () => ({
        executionDidStart: async ({ source, request, document, operation }) => {
          if (!operation || (operation.operation !== 'query' && operation.operation !== 'mutation')) return;
          const cost = this.limits.fixedCost(operation);
          if (source.length > MAX_QUERY_LENGTH || cost === undefined) return;
          const key = keyOf(source, request.operationName);
          if (this.entries.has(key)) return;
          const prepared = {
            document,
            operationName: request.operationName,
            operation: operation.operation,
            variableDefinitions: operation.variableDefinitions ?? [],
            cost,
            logged: loggedOperation(operation, document),
          };
          this.entries.set(key, prepared, entryBytes(key, document));
        },
      }),
    };
  }

  /** The bytes accounted for the operations prepared (src/graphql/document-cache.ts). */
  get bytes(): number {
    return this.entries.bytes;
  }

  /**
   * The answer to a request for a prepared operation, exactly as Apollo would give it; undefined when the
   * request is for Apollo (and then nothing has run).
   */
  async answer(request: PreparedRequest, context: () => GraphQLContext): Promise<PreparedAnswer | undefined> {
    if (!this.enabled || request.method !== 'POST') return undefined;
    const contentType = request.headers['content-type'];
    if (contentType === undefined || !JSON_CONTENT_TYPES.has(contentType)) return undefined;
    const responseType = negotiatedResponseType(request.headers.accept);
    if (responseType === undefined) return undefined;
    const { body } = request;
    if (!isRecord(body) || typeof body.query !== 'string' || !isInertExtensions(body.extensions)) return undefined;
    const { operationName = null, variables = null } = body;
    if (operationName !== null && typeof operationName !== 'string') return undefined;
    if (variables !== null && !isRecord(variables)) return undefined;
    const entry = this.entries.get(keyOf(body.query, operationName ?? undefined));
    if (!entry) return undefined;

    // Variables that do not fit are Apollo's to answer. Large ones are checked for one error first: graphql-js's execute
    // stops at 50, each quoting the whole value, a tenth of a second for a value with thousands of unknown fields.
    const { variableDefinitions } = entry;
    if (variableDefinitions.length > 0 && holdsManyEntries(variables) && getVariableValues(this.schema, variableDefinitions, variables ?? {}, { maxErrors: 1 }).errors) {
      return undefined;
    }
    const contextValue = context();
    contextValue.setOperationCost(entry.cost);
    if (contextValue.request.trace) contextValue.request.trace.graphql = entry.logged;
    beginOperationReads(entry.operation);
    const result = await execute({
      schema: this.schema,
      document: entry.document,
      contextValue,
      variableValues: variables ?? undefined,
      operationName: entry.operationName,
    });
    await endOperationReads();
    // No data at all: the variables did not fit the operation, and no resolver ran. Apollo words that answer.
    if (result.data === undefined) return undefined;

    let errors;
    let head: GraphQLHttpHead = { headers: new Map() };
    if (result.errors) {
      reportUnexpectedErrors(this.logger, this.refusals, result.errors, contextValue.requestId);
      ({ errors, head } = formatExecutionErrors(result.errors, this.formatError, this.observeError));
    }
    const sent = applyHttpSemantics(head, { errors, data: result.data }, contextValue, result.errors ?? [], this.observeError);
    head.headers.set('content-type', responseType);
    // Apollo's field order: errors before data.
    const text = stringifyGraphQLResult({ errors: sent.errors, data: sent.data, extensions: result.extensions });
    return { status: head.status ?? 200, headers: head.headers, body: text };
  }
}
