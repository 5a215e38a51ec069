import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { unwrapResolverError } from '@apollo/server/errors';
import type { FastifyBaseLogger } from 'fastify';
import { GraphQLError, type GraphQLFormattedError, type GraphQLSchema } from 'graphql';
import { ERROR_CODES, isGatewayError, type FieldIssue } from '../domain/errors.js';
import type { GraphQLContext } from './context.js';
import { rateLimitHeaders } from '../http/rate-limit-headers.js';

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
  // Errors GraphQL itself raised (parse, validation, variable coercion) are about the request and safe to show.
  const isRequestError = original instanceof GraphQLError && original.originalError === undefined;
  if (isRequestError || (formatted.extensions?.code && !(original instanceof Error && !(original instanceof GraphQLError)))) {
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

/** HTTP semantics on top of GraphQL: 401 for a bad key, 429 when every root field was rate limited, quota headers. */
function httpSemanticsPlugin(logger: FastifyBaseLogger): ApolloServerPlugin<GraphQLContext> {
  return {
    async requestDidStart() {
      return {
        async didEncounterErrors({ errors, contextValue }) {
          for (const error of errors) {
            const original = unwrapResolverError(error);
            if (!isGatewayError(original) && !(original instanceof GraphQLError)) {
              logger.error({ err: original, reqId: contextValue.requestId }, 'unexpected error in a GraphQL resolver');
            }
          }
        },
        async willSendResponse({ response, contextValue, operation }) {
          if (response.body.kind !== 'single') return;
          const errors = response.body.singleResult.errors ?? [];
          const codes = errors.map((error) => error.extensions?.code);
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
          if (codes.includes(ERROR_CODES.UNAUTHENTICATED.graphqlCode)) {
            response.http.status = 401;
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
  logger: FastifyBaseLogger;
}

export function createApollo(options: ApolloOptions): ApolloServer<GraphQLContext> {
  return new ApolloServer<GraphQLContext>({
    schema: options.schema,
    introspection: options.introspection,
    includeStacktraceInErrorResponses: false,
    csrfPrevention: true,
    allowBatchedHttpRequests: false,
    // main.ts owns shutdown; Apollo's own handlers would re-raise the signal and kill the process mid-drain.
    stopOnTerminationSignals: false,
    formatError: formatGraphQLError,
    // The cache-control plugin hooks every resolved field to compute a policy this schema never sets.
    plugins: [ApolloServerPluginLandingPageDisabled(), ApolloServerPluginCacheControlDisabled(), httpSemanticsPlugin(options.logger)],
  });
}
