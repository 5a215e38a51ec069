import { describe, expect, it } from 'vitest';
import { asOutage as postgresOutage } from '../../src/adapters/postgres/outage.js';
import { asOutage as sqliteOutage } from '../../src/adapters/sqlite/outage.js';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { BUSY_SETTLE_MS, RepeatedFailureLog } from '../../src/failure-log.js';
import { ManualClock } from '../support/clock.js';

const messages = { failed: 'down', stillFailing: 'still down', recovered: 'up again' };

function recording() {
  const lines: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  const record = (level: string) => (fields: object, message: string) => void lines.push({ level, message, fields: fields as Record<string, unknown> });
  return { lines, logger: { info: record('info'), warn: record('warn'), error: record('error') } };
}

describe('a repeated failure log that settles', () => {
  const outage = () => dependencyUnavailable(new Error('connection refused'));

  it('ends a failure whose successes lasted the settling time at the next failure, which starts another', async () => {
    const clock = new ManualClock();
    const { lines, logger } = recording();
    const log = new RepeatedFailureLog(logger, clock, messages, { settleMs: 5_000 });
    log.failed(outage());
    clock.advance(20_000);
    // One success, then nothing to say the successes went on: outcomes come only with traffic.
    log.succeeded();
    clock.advance(3 * 3_600_000);
    log.failed(outage());
    expect(lines.map((line) => [line.level, line.message, line.fields.failures, line.fields.since, line.fields.workingSince])).toEqual([
      ['warn', 'down', undefined, undefined, undefined],
      // Logged hours later, dated from the success that began it.
      ['info', 'up again', 1, '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:20.000Z'],
      ['warn', 'down', undefined, undefined, undefined],
    ]);
  });

  it('keeps one failure when it fails again before the successes lasted the settling time', async () => {
    const clock = new ManualClock();
    const { lines, logger } = recording();
    const log = new RepeatedFailureLog(logger, clock, messages, { settleMs: 5_000 });
    log.failed(outage());
    log.succeeded();
    clock.advance(4_999);
    log.failed(outage());
    clock.advance(5_000);
    log.succeeded();
    expect(lines.map((line) => line.message)).toEqual(['down']);
    clock.advance(5_000);
    log.succeeded();
    expect(lines.map((line) => [line.message, line.fields.failures, line.fields.workingSince])).toEqual([
      ['down', undefined, undefined],
      ['up again', 2, '2030-01-01T00:00:09.999Z'],
    ]);
  });
});

describe('a repeated failure log of a store that is busy, then down', () => {
  const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

  it.each([
    ['PostgreSQL', postgresOutage(withCode('canceling statement due to lock timeout', '55P03')), postgresOutage(withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))],
    ['SQLite', sqliteOutage(withCode('database is locked', 'SQLITE_BUSY')), sqliteOutage(withCode('database or disk is full', 'SQLITE_FULL'))],
  ])('%s: logs the outage that begins while a lock keeps it busy when it begins, as a failure of its own', (_, busy, down) => {
    const clock = new ManualClock();
    const { lines, logger } = recording();
    const log = new RepeatedFailureLog(logger, clock, messages, { settleMs: 5_000 });
    log.failed(busy);
    clock.advance(1_000);
    log.failed(busy);
    clock.advance(1_000);
    log.failed(down);
    clock.advance(1_000);
    log.failed(down);
    expect(lines.map((line) => [line.level, line.message, line.fields.failures, (line.fields.cause as { message: string }).message])).toEqual([
      ['warn', 'down', undefined, expect.stringMatching(/lock/)],
      ['warn', 'down', 3, (down as Error & { cause: Error }).cause.message],
    ]);
  });
});

describe('a repeated failure log of a store busy with a held lock', () => {
  it('keeps one streak, where told to, while other requests are served between the refusals, and ends it after a minute without one', () => {
    const clock = new ManualClock();
    const { lines, logger } = recording();
    const log = new RepeatedFailureLog(logger, clock, messages, { settleMs: 5_000, busySettleMs: BUSY_SETTLE_MS });
    const busy = postgresOutage(Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' }));
    // One workspace's writes refused every 13 s (8 s of waiting, then Retry-After: 5), the others' served.
    for (let refusal = 0; refusal < 6; refusal += 1) {
      log.failed(busy);
      for (let second = 0; second < 13; second += 1) {
        clock.advance(1_000);
        log.succeeded();
      }
    }
    const streak = [
      ['down', undefined],
      ['still down', 6],
    ];
    expect(lines.map((line) => [line.message, line.fields.failures])).toEqual(streak);
    // Served since a second after the last refusal: 58 s so far, then a minute.
    clock.advance(46_000);
    log.succeeded();
    expect(lines.map((line) => [line.message, line.fields.failures])).toEqual(streak);
    clock.advance(2_000);
    log.succeeded();
    expect(lines.map((line) => [line.message, line.fields.failures])).toEqual([...streak, ['up again', 6]]);
  });
});
