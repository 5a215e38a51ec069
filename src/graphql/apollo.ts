import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import {
  ApolloServerPluginCacheControlDisabled,
  ApolloServerPluginInlineTraceDisabled,
  ApolloServerPluginLandingPageDisabled,
  ApolloServerPluginSchemaReportingDisabled,
  ApolloServerPluginUsageReportingDisabled,
} from '@apollo/server/plugin/disabled';
import { ApolloServerErrorCode, ApolloServerValidationErrorCode, unwrapResolverError } from '@apollo/server/errors';
import type { FastifyBaseLogger } from 'fastify';
import { BREAK, GraphQLError, type DocumentNode, type GraphQLFormattedError, type GraphQLSchema, type ValidationRule } from 'graphql';
import {
  ERROR_CODES,
  internalCause,
  internalError,
  isDependencyOutage,
  isGatewayError,
  unavailableCause,
  type Dependency,
  type ErrorCode,
  type FieldIssue,
  type GatewayError,
} from '../domain/errors.js';
import { characters, isRecord } from '../domain/validation.js';
import { isAuthenticationRefusal, recordRateLimit, type GraphQLContext } from './context.js';
import { apolloDocumentStore, NO_QUERY_TEXTS, queryTextBytes, type DocumentCache } from './document-cache.js';
import { operationTypeRule, type OperationLimits } from './limits.js';
import { readScopePlugin } from './read-scope.js';
import { REQUESTS_COMPONENT, type DependencyRefusals } from '../http/dependency-refusals.js';
import { errorHeaders } from '../http/errors.js';
import { rateLimitHeaders } from '../http/rate-limit-headers.js';
import { summarizeError } from '../failure-log.js';

/** The error a resolver threw, under GraphQL's wrapping. */
function thrown(error: unknown): unknown {
  let current = error;
  while (current instanceof GraphQLError && current.originalError) current = current.originalError;
  return current;
}

/** The error at the bottom of GraphQL's wrapping (and of an internal error's): what actually went wrong. */
const rootCause = (error: unknown): unknown => internalCause(thrown(error));

/** A failure of ours rather than of the request: neither a GatewayError nor one of GraphQL's own errors. */
const isUnexpected = (error: unknown): boolean => {
  const cause = rootCause(error);
  return !isGatewayError(cause) && !(cause instanceof GraphQLError);
};

/** An error Apollo raised about the request itself, with a 4xx status for the answer and no code. */
function isRefusedRequest(error: unknown): boolean {
  if (!(error instanceof GraphQLError) || error.originalError || error.extensions.code !== undefined) return false;
  const status = (error.extensions.http as { status?: unknown } | undefined)?.status;
  return typeof status === 'number' && status >= 400 && status < 500;
}

/** Every `extensions.code` a GraphQL answer of the gateway can carry: the domain's, and GraphQL's and Apollo's own. */
export const GRAPHQL_ERROR_CODES: readonly string[] = [
  ...new Set<string>([
    ...Object.values(ERROR_CODES).map((entry) => entry.graphqlCode),
    ...Object.values(ApolloServerErrorCode),
    ...Object.values(ApolloServerValidationErrorCode),
  ]),
];

/** Hears of every error as it goes out in a GraphQL answer, in its wire form (metrics). */
export type GraphQLErrorObserver = (error: GraphQLFormattedError) => void;

/**
 * Hears of a formatted error, unless `error` is a request's refused key: each field that asked for the caller
 * met that refusal, and the answer carries it once (applyHttpSemantics), heard then.
 */
function observeFormatted(observe: GraphQLErrorObserver, formatted: GraphQLFormattedError, error: unknown): void {
  if (!isAuthenticationRefusal(unwrapResolverError(error))) observe(formatted);
}

const renderGraphQLIssue = (issue: FieldIssue): string => `'${issue.field}' ${issue.message}`;

/**
 * A domain error's `extensions.code`, and the code REST answers with as `reason` where GraphQL names it otherwise:
 * several domain codes share one GraphQL code (a key in flight, to retry, and a key reused with another input, not
 * to, are both CONFLICT), so `reason ?? code` of the gateway's own errors is always REST's code. GraphQL's and Apollo's
 * refusals of the request itself (GRAPHQL_PARSE_FAILED, BAD_REQUEST, …) keep their codes alone: REST has none of them.
 */
function codeExtensions(code: ErrorCode): { code: string; reason?: ErrorCode } {
  const { graphqlCode } = ERROR_CODES[code];
  return graphqlCode === code ? { code: graphqlCode } : { code: graphqlCode, reason: code };
}

/** The one place GraphQL maps an error to its wire form. Anything not meant for callers becomes INTERNAL_SERVER_ERROR. */
export function formatGraphQLError(formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError {
  const original = unwrapResolverError(error);
  if (isGatewayError(original)) {
    const issues = original.issues;
    return {
      message: issues.length > 0 ? `${original.message}: ${issues.map(renderGraphQLIssue).join('; ')}` : original.message,
      locations: formatted.locations,
      path: formatted.path,
      extensions: {
        ...codeExtensions(original.code),
        ...(issues.length > 0 ? { issues } : {}),
        ...(original.retryAfterSeconds !== undefined ? { retryAfterSeconds: original.retryAfterSeconds } : {}),
      },
    };
  }
  // Errors GraphQL and Apollo raised about the request (parse, validation, variable coercion, a bad HTTP
  // request) carry a client code and are safe to show; anything Apollo calls internal is not.
  const code = formatted.extensions?.code;
  if (!isUnexpected(error) && code !== undefined && code !== ERROR_CODES.INTERNAL.graphqlCode) {
    const { stacktrace: _stacktrace, ...extensions } = formatted.extensions ?? {};
    return { ...formatted, extensions };
  }
  // Apollo refuses a malformed persisted-query extension with a 400 but no code of its own.
  if (isRefusedRequest(error)) return { message: formatted.message, extensions: { code: 'BAD_REQUEST' } };
  return {
    message: ERROR_CODES.INTERNAL.message,
    locations: formatted.locations,
    path: formatted.path,
    extensions: codeExtensions('INTERNAL'),
  };
}

/** A /graphql request refused before GraphQL saw it (body too large, not JSON): still the GraphQL error shape. */
export function graphqlErrorBody(error: GatewayError, requestId: string): { errors: GraphQLFormattedError[] } {
  const formatted = formatGraphQLError({ message: error.message }, error);
  if (error.code === 'INTERNAL') (formatted.extensions as Record<string, unknown>).requestId = requestId;
  return { errors: [formatted] };
}

/** The status and headers of a GraphQL answer, as Apollo keeps them (its HeaderMap is a Map with lower-case names). */
export interface GraphQLHttpHead {
  status?: number;
  headers: Map<string, string>;
}

/** What a GraphQL answer carries before it is written: its errors, in their wire form, and its data. */
export interface GraphQLAnswer {
  errors?: readonly GraphQLFormattedError[];
  data?: Record<string, unknown> | null;
}

const isSuccess = (status: number | undefined): boolean => status === undefined || (status >= 200 && status < 300);

/**
 * Logs the errors that are a failure of ours, and as warnings the dependencies found unreachable, with the request
 * id the caller is given: those of the instance through `refusals`, once per outage, the upstream at each request.
 */
export function reportUnexpectedErrors(logger: FastifyBaseLogger, refusals: DependencyRefusals, errors: readonly unknown[], requestId: string): void {
  // The log counts requests refused: several fields that met one outage are one refusal of the request.
  const refusedFor = new Set<Dependency>();
  for (const error of errors) {
    const root = rootCause(error);
    if (isUnexpected(error)) logger.error({ err: root, reqId: requestId }, 'unexpected error in a GraphQL request');
    if (isDependencyOutage(root)) {
      if (!refusedFor.has(root.dependency)) refusals.refused(root, requestId);
      refusedFor.add(root.dependency);
      continue;
    }
    const cause = unavailableCause(root);
    if (cause !== undefined) logger.warn({ ...REQUESTS_COMPONENT, cause: summarizeError(cause), reqId: requestId }, 'a dependency is unavailable');
  }
}

/**
 * The root fields (by response name) that failed because a dependency of this instance, its store or a
 * limiter's store, is unavailable: unlike an upstream outage, which every instance shares, those say to come
 * back or go to another instance.
 */
function unavailableRootFields(errors: readonly unknown[]): Set<string> {
  const fields = new Set<string>();
  for (const error of errors) {
    if (error instanceof GraphQLError && error.path?.length === 1 && isDependencyOutage(rootCause(error))) fields.add(String(error.path[0]));
  }
  return fields;
}

/**
 * HTTP semantics on top of GraphQL: a request whose key was refused gets the refusal's status (401, 403 for an
 * address outside the key's allowlist, 429 for a client blocked after failed authentications) and its headers
 * (WWW-Authenticate, Retry-After), and answers that refusal once, without a path: it is the request's, not a
 * field's (`observe` hears of it); so does a request refused before anything ran (`refusesRequest`), whatever
 * its error. One whose key could not be checked (503 for an outage) gets that status,
 * its fields their errors. When every root field was refused, 429 if they were all rate limited and 503 if any
 * failed because a dependency of the instance is unavailable (`raw`, the errors before formatting, say which),
 * with Retry-After. Quota headers, from the state the fields recorded and their refusals carry; the request id on internal errors.
 *
 * Mutates `head` and the formatted errors, as Apollo's willSendResponse hook does, and returns what the answer
 * carries: with a status other than 2xx, no `data` entry. The GraphQL-over-HTTP spec requires a 2xx for data
 * present and not null, and such data held nothing but the nulls of the fields refused.
 */
export function applyHttpSemantics(
  head: GraphQLHttpHead,
  answer: GraphQLAnswer,
  context: GraphQLContext,
  raw: readonly unknown[],
  observe: GraphQLErrorObserver,
): GraphQLAnswer {
  // What Apollo's cache-control plugin answered for every response of this schema (no cache hints).
  head.headers.set('cache-control', 'no-store');
  // A refusal of a known caller carries the quota state (GatewayError.rateLimit): read here, from every error the
  // fields raised, so that no resolver has to catch its errors to have the headers sent.
  for (const error of raw) {
    const refusal = thrown(error);
    if (isGatewayError(refusal)) recordRateLimit(context, refusal.rateLimit);
  }
  for (const [name, value] of Object.entries(rateLimitHeaders(context.rateLimit))) head.headers.set(name, value);
  const errors = answer.errors ?? [];
  for (const error of errors) {
    if (error.extensions?.code === ERROR_CODES.INTERNAL.graphqlCode) {
      (error.extensions as Record<string, unknown>).requestId = context.requestId;
    }
  }
  const refusal = context.authentication.error;
  if (refusal) {
    head.status = ERROR_CODES[refusal.code].httpStatus;
    if (context.request.trace) context.request.trace.refusal = refusal.code;
    for (const [name, value] of Object.entries(errorHeaders(refusal))) head.headers.set(name, value);
    if (!isAuthenticationRefusal(refusal) && !context.authentication.refusesRequest) return { errors: answer.errors };
    const { errors: once } = graphqlErrorBody(refusal, context.requestId);
    once.forEach(observe);
    return { errors: once };
  }
  const { data } = answer;
  const unavailable = unavailableRootFields(raw);
  const isUnavailable = (error: GraphQLFormattedError) => error.path?.length === 1 && unavailable.has(String(error.path[0]));
  const refused = errors.filter(
    (error) => (error.extensions?.code === ERROR_CODES.RATE_LIMITED.graphqlCode && error.path?.length === 1) || isUnavailable(error),
  );
  // Executed, data has one key per root field (fragments spread, @skip applied). Every root field is nullable,
  // so a refused one is null with its error at its path.
  const rootFields = data ? Object.keys(data).length : 0;
  if (rootFields > 0 && refused.length >= rootFields) {
    const code = refused.some(isUnavailable) ? 'UNAVAILABLE' : 'RATE_LIMITED';
    head.status = ERROR_CODES[code].httpStatus;
    if (context.request.trace) context.request.trace.refusal = code;
    const retryAfter = Math.max(...refused.map((error) => Number(error.extensions?.retryAfterSeconds ?? 1)));
    head.headers.set('retry-after', String(retryAfter));
  }
  return isSuccess(head.status) ? answer : { errors: answer.errors };
}

/** What a request refused before its persisted query was looked up runs in its place: nothing of anyone's. */
const NOTHING = '{ __typename }';

/** A persisted query's hash as Apollo computes it from a text: SHA-256, in lower-case hex. */
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * A hash no text can have is a malformed extension, refused before Apollo would look it up and answer
 * PERSISTED_QUERY_NOT_FOUND, which tells a client to send the text with it, to no end.
 */
const malformedHash = (): GraphQLError =>
  new GraphQLError("The persisted query's sha256Hash must be 64 lower-case hexadecimal characters", {
    extensions: { code: ApolloServerErrorCode.BAD_REQUEST, http: { status: 400, headers: new Map() } },
  });

/**
 * Automatic persisted queries, kept and looked up by the workspace of the request's key.
 *
 * A request with a persisted query, its text or its hash alone, is authenticated before its hash is looked up,
 * and a refusal counts as a failed authentication. Refused (or not checked: an outage), the request runs
 * NOTHING in its place, and its answer is the refusal alone (applyHttpSemantics), whatever the hash: a hash
 * looked up for anyone would tell whether some workspace had sent that document, literals and all. Accepted,
 * its hash, once it is one a text can have (malformedHash), is looked up among the texts its own workspace has
 * sent, for the same reason. A text is kept once its operation runs: after Apollo has checked it against its hash,
 * parsed and validated it, and the limits took it.
 */
function persistedQueryPlugin(logger: FastifyBaseLogger, refusals: DependencyRefusals, texts: DocumentCache<string>): ApolloServerPlugin<GraphQLContext> {
  return {
    async requestDidStart({ request, contextValue }) {
      const persisted: unknown = request.extensions?.persistedQuery;
      if (!persisted) return;
      let workspaceId: string;
      try {
        ({ workspaceId } = await contextValue.principal());
      } catch (error) {
        reportUnexpectedErrors(logger, refusals, [error], contextValue.requestId);
        contextValue.authentication.error ??= internalError(error);
        contextValue.authentication.refusesRequest = true;
        Object.assign(request, { query: NOTHING, operationName: undefined, variables: undefined, extensions: undefined });
        return;
      }
      // An extension that is no object is Apollo's to refuse, as an unsupported version.
      if (!isRecord(persisted)) return;
      if (typeof persisted.sha256Hash !== 'string' || !SHA256_HEX.test(persisted.sha256Hash)) {
        // Thrown where Apollo answers a plugin's refusal of the request as its own; NOTHING stands in until then.
        Object.assign(request, { query: NOTHING, operationName: undefined, variables: undefined, extensions: undefined });
        return {
          async didResolveOperation() {
            throw malformedHash();
          },
        };
      }
      const key = `${workspaceId}:${persisted.sha256Hash}`;
      const { query } = request;
      if (query === undefined) {
        request.query = texts.get(key);
        return;
      }
      return {
        async executionDidStart() {
          texts.set(key, query, queryTextBytes(key, query));
        },
      };
    },
  };
}

function httpSemanticsPlugin(logger: FastifyBaseLogger, refusals: DependencyRefusals, observe: GraphQLErrorObserver): ApolloServerPlugin<GraphQLContext> {
  return {
    async requestDidStart() {
      return {
        async didEncounterErrors({ errors, contextValue }) {
          reportUnexpectedErrors(logger, refusals, errors, contextValue.requestId);
        },
        async willSendResponse({ response, contextValue, errors: raw }) {
          if (response.body.kind !== 'single') return;
          const { singleResult } = response.body;
          const { errors, data } = applyHttpSemantics(response.http, singleResult, contextValue, raw ?? [], observe);
          response.body.singleResult = { ...singleResult, errors, data };
        },
      };
    },
  };
}

/**
 * graphql-js suggests names of the schema ("Did you mean …?") in variable errors too, which Apollo's
 * hideSchemaDetailsFromClientErrors, covering validation errors only, leaves in.
 */
const withoutSchemaHints = (formatted: GraphQLFormattedError): GraphQLFormattedError => {
  const { message } = formatted;
  // Found by position, not by a regular expression: a message echoes what the caller sent, and a pattern running to
  // the end from each "Did you mean" in a long one backtracks for seconds.
  const hint = message.indexOf('Did you mean ');
  if (hint < 0 || !message.endsWith('?')) return formatted;
  return { ...formatted, message: message.slice(0, hint).trimEnd() };
};

/**
 * Longest error message answered, in characters (code points), as the gateway's other limits count: graphql-js's
 * messages, and the gateway's about unknown tags, quote the values they refuse, whole, however long they are.
 */
const MAX_ERROR_MESSAGE_LENGTH = 1000;

const withinMessageLength = (formatted: GraphQLFormattedError): GraphQLFormattedError => {
  const { message } = formatted;
  // A code point is at most two units: only a message longer than the limit in units can be longer in code points.
  if (message.length <= MAX_ERROR_MESSAGE_LENGTH || characters(message) <= MAX_ERROR_MESSAGE_LENGTH) return formatted;
  // Cut between code points, never inside a surrogate pair.
  return { ...formatted, message: `${[...message].slice(0, MAX_ERROR_MESSAGE_LENGTH - 1).join('')}…` };
};

/** Turns an error into its wire form, for Apollo's answers and prepared operations' alike. */
export type GraphQLErrorFormatter = (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError;

/**
 * The one formatter of every GraphQL answer: formatGraphQLError, without schema hints when they are hidden, and
 * within the message length.
 */
export function graphQLErrorFormatter(hideSchemaDetails: boolean): GraphQLErrorFormatter {
  return (formatted, error) => {
    const wire = formatGraphQLError(formatted, error);
    return withinMessageLength(hideSchemaDetails ? withoutSchemaHints(wire) : wire);
  };
}

/** The body of a GraphQL answer, for Apollo (its own default) and for prepared operations alike. */
export const stringifyGraphQLResult = (result: unknown): string => `${JSON.stringify(result)}\n`;

const isHttpHead = (value: unknown): value is Partial<GraphQLHttpHead> =>
  typeof value === 'object' &&
  value !== null &&
  (!('status' in value) || typeof value.status === 'number') &&
  (!('headers' in value) || value.headers instanceof Map);

/**
 * Execution errors to their wire form as Apollo turns them into it before its `formatError` (here
 * `format`, graphQLErrorFormatter's) sees them: a default code, an `http` extension taken out into the answer's status and
 * headers, and an answer Apollo's own when formatting fails. For answers produced without Apollo.
 */
export function formatExecutionErrors(
  errors: readonly GraphQLError[],
  format: GraphQLErrorFormatter,
  observe: GraphQLErrorObserver,
): { errors: GraphQLFormattedError[]; head: GraphQLHttpHead } {
  const head: GraphQLHttpHead = { headers: new Map() };
  const formatted = errors.map((error): GraphQLFormattedError => {
    try {
      const extensions: Record<string, unknown> = { ...error.extensions, code: error.extensions.code ?? ERROR_CODES.INTERNAL.graphqlCode };
      if (isHttpHead(extensions.http)) {
        if (extensions.http.status) head.status = extensions.http.status;
        for (const [name, value] of extensions.http.headers ?? []) head.headers.set(name.toLowerCase(), value);
        delete extensions.http;
      }
      return format({ ...error.toJSON(), extensions }, error);
    } catch {
      return { message: ERROR_CODES.INTERNAL.message, extensions: codeExtensions('INTERNAL') };
    }
  });
  formatted.forEach((wire, index) => observeFormatted(observe, wire, errors[index]));
  return { errors: formatted, head };
}

export interface ApolloOptions {
  schema: GraphQLSchema;
  introspection: boolean;
  /** Production: no "Did you mean …?" hints that would reveal the schema without introspection. */
  hideSchemaDetails: boolean;
  /** The limits of the operation run, shared with whoever needs to know that an operation is within them. */
  limits: OperationLimits;
  logger: FastifyBaseLogger;
  /** Logs the requests refused because a dependency of the instance is unavailable. */
  refusals: DependencyRefusals;
  /** Where Apollo keeps the documents it parsed and validated, by query text. */
  documents: DocumentCache<DocumentNode>;
  /** Where the texts of automatic persisted queries are kept, by workspace and hash. */
  persistedQueries: DocumentCache<string>;
  /** More plugins, after the gateway's own. */
  plugins?: ApolloServerPlugin<GraphQLContext>[];
  /** Hears of each error Apollo's answers carry. */
  observeError: GraphQLErrorObserver;
}

/**
 * Introspection off: one error for the operation. Apollo's own rule tells callers to reconfigure Apollo, and
 * graphql-js's names every field of every introspection type asked for (39 for the usual query).
 */
const noIntrospectionRule: ValidationRule = (context) => ({
  Field(node) {
    if (node.name.value !== '__schema' && node.name.value !== '__type') return undefined;
    context.reportError(new GraphQLError('GraphQL introspection has been disabled on this server', { nodes: node }));
    return BREAK;
  },
});

/** Longest document, in tokens: far above any real operation, far below what would exhaust the parser. */
const MAX_TOKENS = 2000;

export function createApollo(options: ApolloOptions): ApolloServer<GraphQLContext> {
  const format = graphQLErrorFormatter(options.hideSchemaDetails);
  return new ApolloServer<GraphQLContext>({
    schema: options.schema,
    // Refused by graphql-js's own rule instead of Apollo's, whose message tells callers to reconfigure Apollo.
    introspection: true,
    hideSchemaDetailsFromClientErrors: options.hideSchemaDetails,
    includeStacktraceInErrorResponses: false,
    csrfPrevention: true,
    allowBatchedHttpRequests: false,
    // main.ts owns shutdown; Apollo's own handlers would re-raise the signal and kill the process mid-drain.
    stopOnTerminationSignals: false,
    parseOptions: { maxTokens: MAX_TOKENS },
    documentStore: apolloDocumentStore(options.documents),
    persistedQueries: { cache: NO_QUERY_TEXTS },
    maxRecursiveSelections: true,
    validationRules: [operationTypeRule, options.limits.validationRule, ...(options.introspection ? [] : [noIntrospectionRule])],
    formatError: (formatted, error) => {
      const wire = format(formatted, error);
      observeFormatted(options.observeError, wire, error);
      return wire;
    },
    stringifyResult: stringifyGraphQLResult,
    // The cache-control plugin hooks every resolved field to compute a policy this schema never sets. Apollo
    // would add usage and schema reporting to its cloud when APOLLO_KEY is set and inline tracing for a
    // subgraph: none of them is wanted, and without them every plugin in play is the gateway's own.
    plugins: [
      ApolloServerPluginLandingPageDisabled(),
      ApolloServerPluginCacheControlDisabled(),
      ApolloServerPluginUsageReportingDisabled(),
      ApolloServerPluginSchemaReportingDisabled(),
      ApolloServerPluginInlineTraceDisabled(),
      persistedQueryPlugin(options.logger, options.refusals, options.persistedQueries),
      options.limits.plugin(),
      httpSemanticsPlugin(options.logger, options.refusals, options.observeError),
      readScopePlugin(),
      ...(options.plugins ?? []),
    ],
  });
}
