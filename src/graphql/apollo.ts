import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { unwrapResolverError } from '@apollo/server/errors';
import type { FastifyBaseLogger } from 'fastify';
import { GraphQLError, type GraphQLFormattedError, type GraphQLSchema } from 'graphql';
import { ERROR_CODES, isGatewayError, type FieldIssue, type GatewayError } from '../domain/errors.js';
import type { GraphQLContext } from './context.js';
import { operationShapeRule, type CostLimit, type GraphQLLimits } from './limits.js';
import { rateLimitHeaders } from '../http/rate-limit-headers.js';

/** The error at the bottom of GraphQL's wrapping: what actually went wrong. */
function rootCause(error: unknown): unknown {
  let current = error;
  while (current instanceof GraphQLError && current.originalError) current = current.originalError;
  return current;
}

/** A failure of ours rather than of the request: neither a GatewayError nor one of GraphQL's own errors. */
const isUnexpected = (error: unknown): boolean => {
  const cause = rootCause(error);
  return !isGatewayError(cause) && !(cause instanceof GraphQLError);
};

export const renderGraphQLIssue = (issue: FieldIssue): string => `'${issue.field}' ${issue.message}`;

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
        code: ERROR_CODES[original.code].graphqlCode,
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
  return {
    message: ERROR_CODES.INTERNAL.message,
    locations: formatted.locations,
    path: formatted.path,
    extensions: { code: ERROR_CODES.INTERNAL.graphqlCode },
  };
}

/** A /graphql request refused before GraphQL saw it (body too large, not JSON): still the GraphQL error shape. */
export function graphqlErrorBody(error: GatewayError, requestId: string): { errors: GraphQLFormattedError[] } {
  const formatted = formatGraphQLError({ message: error.message }, error);
  if (error.code === 'INTERNAL') (formatted.extensions as Record<string, unknown>).requestId = requestId;
  return { errors: [formatted] };
}

/**
 * HTTP semantics on top of GraphQL: a request whose key was refused gets the refusal's status (401, 403 for an
 * address outside the key's allowlist, 429 for a client blocked after failed authentications); 429 when every
 * root field was rate limited; quota headers.
 */
function httpSemanticsPlugin(logger: FastifyBaseLogger): ApolloServerPlugin<GraphQLContext> {
  return {
    async requestDidStart() {
      return {
        async didEncounterErrors({ errors, contextValue }) {
          for (const error of errors) {
            if (isUnexpected(error)) logger.error({ err: rootCause(error), reqId: contextValue.requestId }, 'unexpected error in a GraphQL request');
          }
        },
        async willSendResponse({ response, contextValue, operation }) {
          if (response.body.kind !== 'single') return;
          const errors = response.body.singleResult.errors ?? [];
          // What Apollo's cache-control plugin answered for every response of this schema (no cache hints).
          response.http.headers.set('cache-control', 'no-store');
          for (const [name, value] of Object.entries(rateLimitHeaders(contextValue.rateLimit))) {
            response.http.headers.set(name, value);
          }
          for (const error of errors) {
            if (error.extensions?.code === ERROR_CODES.INTERNAL.graphqlCode) {
              (error.extensions as Record<string, unknown>).requestId = contextValue.requestId;
            }
          }
          const refusal = contextValue.authentication.error;
          if (refusal) {
            response.http.status = ERROR_CODES[refusal.code].httpStatus;
            if (refusal.retryAfterSeconds !== undefined) response.http.headers.set('retry-after', String(refusal.retryAfterSeconds));
            return;
          }
          const rootFields = operation?.selectionSet.selections.length ?? 0;
          const limited = errors.filter((error) => error.extensions?.code === ERROR_CODES.RATE_LIMITED.graphqlCode && error.path?.length === 1);
          if (rootFields > 0 && limited.length >= rootFields) {
            response.http.status = 429;
            const retryAfter = Math.max(...limited.map((error) => Number(error.extensions?.retryAfterSeconds ?? 1)));
            response.http.headers.set('retry-after', String(retryAfter));
          }
        },
      };
    },
  };
}

export interface ApolloOptions {
  schema: GraphQLSchema;
  introspection: boolean;
  /** Production: no "Did you mean …?" hints that would reveal the schema without introspection. */
  hideSchemaDetails: boolean;
  limits: GraphQLLimits;
  /** The cost estimate of operations, shared with whoever needs to know that an operation passed it. */
  costLimit: CostLimit;
  logger: FastifyBaseLogger;
}

/** Longest document, in tokens: far above any real operation, far below what would exhaust the parser. */
const MAX_TOKENS = 2000;

export function createApollo(options: ApolloOptions): ApolloServer<GraphQLContext> {
  return new ApolloServer<GraphQLContext>({
    schema: options.schema,
    introspection: options.introspection,
    hideSchemaDetailsFromClientErrors: options.hideSchemaDetails,
    includeStacktraceInErrorResponses: false,
    csrfPrevention: true,
    allowBatchedHttpRequests: false,
    // main.ts owns shutdown; Apollo's own handlers would re-raise the signal and kill the process mid-drain.
    stopOnTerminationSignals: false,
    parseOptions: { maxTokens: MAX_TOKENS },
    maxRecursiveSelections: true,
    validationRules: [operationShapeRule(options.limits)],
    formatError: formatGraphQLError,
    // The cache-control plugin hooks every resolved field to compute a policy this schema never sets.
    plugins: [
      ApolloServerPluginLandingPageDisabled(),
      ApolloServerPluginCacheControlDisabled(),
      options.costLimit.plugin(),
      httpSemanticsPlugin(options.logger),
    ],
  });
}
