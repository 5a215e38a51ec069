import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/domain/errors.js';
import { formatGraphQLError } from '../../src/graphql/apollo.js';

describe('formatGraphQLError', () => {
  it('hides whatever went wrong inside, however GraphQL wrapped it', () => {
    const cause = new TypeError("Cannot read properties of undefined (reading 'value') at /srv/app/src/x.ts:12");
    for (const error of [
      cause,
      new GraphQLError(cause.message, { originalError: cause }),
      new GraphQLError(cause.message, { path: ['campaigns'], originalError: cause }),
      new GraphQLError('wrapped', { originalError: new GraphQLError(cause.message, { originalError: cause }) }),
    ]) {
      const formatted = formatGraphQLError({ message: cause.message, extensions: { code: 'INTERNAL_SERVER_ERROR', stacktrace: ['at x'] } }, error);
      expect(formatted.message).toBe('Internal server error');
      expect(formatted.extensions).toEqual({ code: 'INTERNAL_SERVER_ERROR' });
    }
  });

  it('keeps GraphQL\'s own request errors and maps gateway errors through the one table', () => {
    const validation = new GraphQLError('Cannot query field "x" on type "Query".');
    expect(formatGraphQLError({ message: validation.message, extensions: { code: 'GRAPHQL_VALIDATION_FAILED', stacktrace: ['at y'] } }, validation)).toEqual({
      message: validation.message,
      extensions: { code: 'GRAPHQL_VALIDATION_FAILED' },
    });
    const denied = new GraphQLError('Access Denied', { path: ['campaign'], originalError: new GatewayError('FORBIDDEN') });
    expect(formatGraphQLError({ message: 'Access Denied', path: ['campaign'] }, denied)).toEqual({
      message: 'Access Denied',
      path: ['campaign'],
      locations: undefined,
      extensions: { code: 'FORBIDDEN' },
    });
  });
});
