import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { dependencyUnavailable, GatewayError } from '../../src/domain/errors.js';
import { applyHttpSemantics, formatGraphQLError, type GraphQLHttpHead } from '../../src/graphql/apollo.js';
import type { RequestTrace } from '../../src/domain/service.js';
import type { GraphQLContext } from '../../src/graphql/context.js';

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
      expect(formatted.extensions).toEqual({ code: 'INTERNAL_SERVER_ERROR', reason: 'INTERNAL' });
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

describe('applyHttpSemantics', () => {
  /** What the request's log line will name, as the transport hands it over. */
  const trace: RequestTrace = {};
  const context = { requestId: 'req-1', authentication: {}, request: { trace } } as unknown as GraphQLContext;

  /** The HTTP status of an answer whose only root field, `campaign`, failed with `error`, and whether it keeps its data. */
  function answerFor(error: GatewayError): { status: number | undefined; data: boolean } {
    const raw = new GraphQLError(error.message, { path: ['campaign'], originalError: error });
    const head: GraphQLHttpHead = { headers: new Map() };
    delete trace.refusal;
    const sent = applyHttpSemantics(head, { errors: [formatGraphQLError({ message: error.message, path: ['campaign'] }, raw)], data: { campaign: null } }, context, [raw], () => {});
    return { status: head.status, data: 'data' in sent };
  }

  it("answers 503 when this instance's own dependency is down, whatever the cause's shape, without data", () => {
    expect(answerFor(dependencyUnavailable(new Error('SQLITE_IOERR')))).toEqual({ status: 503, data: false });
    expect(trace.refusal).toBe('UNAVAILABLE');
  });

  it('keeps 200 and the data for an upstream outage, which every instance shares, even when it carries its cause for the log', () => {
    expect(answerFor(new GatewayError('UNAVAILABLE', 'The upstream answered 503'))).toEqual({ status: undefined, data: true });
    expect(answerFor(new GatewayError('UNAVAILABLE', 'The upstream did not answer', { cause: new Error('ECONNRESET') }))).toEqual({ status: undefined, data: true });
    expect(trace.refusal).toBeUndefined();
  });
});

describe('applyHttpSemantics: quota headers', () => {
  const state = (remaining: number) => ({ limit: 10, remaining, resetAt: new Date('2030-01-01T00:01:00.000Z') });

  it("sends the quota state a field's refusal carries, however GraphQL wrapped it, and the fewest points left of all", () => {
    const context = { requestId: 'req-1', authentication: {} } as GraphQLContext;
    const refused = (error: GatewayError, path: string) => new GraphQLError(error.message, { path: [path], originalError: error });
    const spent = new GatewayError('RATE_LIMITED', undefined, { rateLimit: state(0), retryAfterSeconds: 60 });
    const internal = new GatewayError('INTERNAL', undefined, { rateLimit: state(3) });
    const raw = [refused(internal, 'a'), new GraphQLError('wrapped', { path: ['b'], originalError: refused(spent, 'b') })];
    const head: GraphQLHttpHead = { headers: new Map() };
    applyHttpSemantics(head, { errors: [], data: { a: null, b: null, c: { job: { id: 'j' } } } }, context, raw, () => {});
    expect(Object.fromEntries([...head.headers].filter(([name]) => name.startsWith('x-ratelimit')))).toEqual({
      'x-ratelimit-limit': '10',
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': String(Date.parse('2030-01-01T00:01:00.000Z') / 1000),
    });
  });
});
