import { describe, expect, it } from 'vitest';
import { asLockWaitOutage, asOutage, LockWaitCancelled } from '../../src/adapters/postgres/outage.js';
import { EVENT_ORDER_LOCK, refusedBehind } from '../../src/adapters/postgres/store.js';
import { Turns } from '../../src/adapters/postgres/turns.js';
import { isGatewayError } from '../../src/domain/errors.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });
const eventLockOf = (workspaceId: string) =>
  `the lock that orders the security events of workspace ${workspaceId} (PostgreSQL advisory lock ${EVENT_ORDER_LOCK}, hashtext('${workspaceId}'))`;

/** A piece of work that ends when told to, with what it was told. */
function gated() {
  let end!: (outcome: { value?: string; error?: unknown }) => void;
  const ended = new Promise<{ value?: string; error?: unknown }>((resolve) => (end = resolve));
  let started = false;
  const work = async () => {
    started = true;
    const outcome = await ended;
    if (outcome.error !== undefined) throw outcome.error;
    return outcome.value ?? '';
  };
  return { work, end, started: () => started };
}

const settled = (promise: Promise<unknown>) => promise.then((value) => ({ value }), (error: unknown) => ({ error }));
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe("a workspace's writes that take its event lock, one at a time on an instance", () => {
  it('runs one at a time per workspace in the order asked, and other workspaces beside them', async () => {
    const turns = new Turns(refusedBehind);
    const [first, second, other] = [gated(), gated(), gated()];
    const results = [turns.run('w1', first.work), turns.run('w1', second.work), turns.run('w2', other.work)];
    await turn();
    expect([first.started(), second.started(), other.started()]).toEqual([true, false, true]);
    first.end({ value: 'first' });
    await expect(results[0]).resolves.toBe('first');
    await turn();
    expect(second.started()).toBe(true);
    second.end({ value: 'second' });
    other.end({ value: 'other' });
    expect(await Promise.all(results)).toEqual(['first', 'second', 'other']);
  });

  it("refuses those waiting behind a write that waited out the statement timeout for the workspace's event lock, at once; a later write tries again", async () => {
    const turns = new Turns(refusedBehind);
    const [first, waiting, later] = [gated(), gated(), gated()];
    const results = [settled(turns.run('w1', first.work)), settled(turns.run('w1', waiting.work))];
    await turn();
    first.end({ error: asLockWaitOutage(withCode('canceling statement due to statement timeout', '57014'), eventLockOf('w1')) });
    const [, behind] = await Promise.all(results);
    expect(waiting.started()).toBe(false);
    const refusal = behind as { error: unknown };
    expect(isGatewayError(refusal.error) && [refusal.error.code, refusal.error.retryAfterSeconds]).toEqual(['UNAVAILABLE', 5]);
    const cause = (refusal.error as Error).cause as LockWaitCancelled;
    expect(cause).toBeInstanceOf(LockWaitCancelled);
    expect(cause.message).toMatch(/^did not wait for the lock that orders the security events of workspace w1 .*: the write before it waited for it/);
    const next = turns.run('w1', later.work);
    await turn();
    expect(later.started()).toBe(true);
    later.end({ value: 'later' });
    await expect(next).resolves.toBe('later');
  });

  it('refuses those waiting behind a write that found the database unreachable, each with an outage of its own', async () => {
    const turns = new Turns(refusedBehind);
    const [first, second, third] = [gated(), gated(), gated()];
    const unreachable = withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED');
    const results = [first, second, third].map((gate) => settled(turns.run('w1', gate.work)));
    await turn();
    first.end({ error: asOutage(unreachable) });
    const [, behindSecond, behindThird] = (await Promise.all(results)) as { error: Error }[];
    expect([second.started(), third.started()]).toEqual([false, false]);
    for (const { error } of [behindSecond, behindThird]) {
      expect(isGatewayError(error) && error.code).toBe('UNAVAILABLE');
      expect(error.cause).toBe(unreachable);
    }
    expect(behindSecond.error).not.toBe(behindThird.error);
  });

  it("lets those waiting behind a write refused for a row's lock, or failed otherwise, take their turns", async () => {
    const turns = new Turns(refusedBehind);
    const rowLock = withCode('canceling statement due to lock timeout', '55P03');
    for (const failure of [asOutage(Object.assign(rowLock, { where: 'while locking tuple (0,1) in relation "jobs"' })), new Error('duplicate key value'), asLockWaitOutage(withCode('canceling statement due to statement timeout', '57014'), eventLockOf('w2'))]) {
      const [first, second] = [gated(), gated()];
      const results = [settled(turns.run('w1', first.work)), turns.run('w1', second.work)];
      await turn();
      first.end({ error: failure });
      await results[0];
      await turn();
      expect(second.started()).toBe(true);
      second.end({ value: 'ran' });
      await expect(results[1]).resolves.toBe('ran');
    }
  });
});
