import { describe, expect, it } from 'vitest';
import { asLockWaitOutage, asOutage, LockWaitCancelled } from '../../src/adapters/postgres/outage.js';
import { isGatewayError, isStoreBusy } from '../../src/domain/errors.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

/** `answer`, checked to be UNAVAILABLE with Retry-After around a LockWaitCancelled: that cause's code, message and own cause. */
function lockWaitCause(answer: unknown): [string | undefined, string, unknown] {
  expect(isGatewayError(answer) && [answer.code, answer.retryAfterSeconds, answer.message]).toEqual(['UNAVAILABLE', 5, 'Service unavailable']);
  const cause = (answer as Error).cause;
  expect(cause).toBeInstanceOf(LockWaitCancelled);
  return [(cause as LockWaitCancelled).code, (cause as LockWaitCancelled).message, (cause as LockWaitCancelled).cause];
}

describe('PostgreSQL errors that mean the database cannot be reached', () => {
  it.each([
    ['a refused connection', withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')],
    ['a server shutting down', withCode('terminating connection due to administrator command', '57P01')],
    ['a server starting up', withCode('the database system is starting up', '57P03')],
    ['a connection exception', withCode('connection failure', '08006')],
    ['no connection slots left', withCode('sorry, too many clients already', '53300')],
    ['this host out of file descriptors', withCode('connect EMFILE 127.0.0.1:5432 - Local (undefined:undefined)', 'EMFILE')],
    ['this host out of ports', withCode('connect EADDRNOTAVAIL 127.0.0.1:5432 - Local (0.0.0.0:0)', 'EADDRNOTAVAIL')],
    ['a connection lost mid-query', new Error('Connection terminated unexpectedly')],
    ['no connection from the pool in time', new Error('timeout exceeded when trying to connect')],
    ['a connection that stopped answering', new Error('Query read timeout')],
  ])('%s becomes UNAVAILABLE with Retry-After, the original kept as its cause', (_, error) => {
    const answer = asOutage(error);
    expect(isGatewayError(answer) && answer.code).toBe('UNAVAILABLE');
    expect(isGatewayError(answer) && answer.retryAfterSeconds).toBe(5);
    expect((answer as Error).cause).toBe(error);
    expect((answer as Error).message).toBe('Service unavailable');
  });

  it.each([
    ['a syntax error', withCode('syntax error at or near "SELEC"', '42601')],
    ['a unique violation', withCode('duplicate key value violates unique constraint', '23505')],
    ['a statement timeout', withCode('canceling statement due to statement timeout', '57014')],
    ['a plain error', new Error('something else')],
  ])('%s stays what it is', (_, error) => {
    expect(asOutage(error)).toBe(error);
  });

  it('a wait for a lock its lock timeout or the statement timeout cancels becomes UNAVAILABLE, its cause naming the lock; any other error as asOutage makes it', () => {
    const cancelled = withCode('canceling statement due to statement timeout', '57014');
    expect(lockWaitCause(asLockWaitOutage(cancelled, 'the lock that orders the security events of workspace ws_1'))).toEqual([
      '57014',
      'waited for the lock that orders the security events of workspace ws_1 until the statement was cancelled (canceling statement due to statement timeout): another transaction held it all that time',
      cancelled,
    ]);
    // The lock's own statement set the lock timeout: the server names no row, the lock is named as given.
    const timedOut = withCode('canceling statement due to lock timeout', '55P03');
    expect(lockWaitCause(asLockWaitOutage(timedOut, 'the lock that orders the security events of workspace ws_1'))).toEqual([
      '55P03',
      'waited for the lock that orders the security events of workspace ws_1 until the statement was cancelled (canceling statement due to lock timeout): another transaction held it all that time',
      timedOut,
    ]);

    const refused = withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED');
    expect((asLockWaitOutage(refused, 'a lock') as Error).cause).toBe(refused);
    const syntax = withCode('syntax error at or near "SELEC"', '42601');
    expect(asLockWaitOutage(syntax, 'a lock')).toBe(syntax);
  });

  it('a lock waited for past the lock timeout becomes UNAVAILABLE, its cause naming the row as the server does, the statement left out', () => {
    const timedOut = Object.assign(withCode('canceling statement due to lock timeout', '55P03'), {
      where: 'while locking tuple (0,1) in relation "workspaces"\nSQL statement "SELECT 1 FROM ONLY "public"."workspaces" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x"',
    });
    expect(lockWaitCause(asOutage(timedOut))).toEqual([
      '55P03',
      'waited for a lock (while locking tuple (0,1) in relation "workspaces") until the statement was cancelled (canceling statement due to lock timeout): another transaction held it all that time',
      timedOut,
    ]);
    // A table's lock, or a row's waited for behind another waiter: the server names none.
    expect(((asOutage(withCode('canceling statement due to lock timeout', '55P03')) as Error).cause as Error).message).toBe(
      'waited for a lock until the statement was cancelled (canceling statement due to lock timeout): another transaction held it all that time',
    );
  });

  it('tells a lock waited for too long, whose connection works on, from a server that cannot be reached', () => {
    expect(isStoreBusy(asOutage(withCode('canceling statement due to lock timeout', '55P03')))).toBe(true);
    expect(isStoreBusy(asLockWaitOutage(withCode('canceling statement due to statement timeout', '57014'), 'a lock'))).toBe(true);
    expect(isStoreBusy(asOutage(withCode('terminating connection due to administrator command', '57P01')))).toBe(false);
    expect(isStoreBusy(asOutage(new Error('Query read timeout')))).toBe(false);
  });
});
