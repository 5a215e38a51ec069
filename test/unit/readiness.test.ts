import { describe, expect, it } from 'vitest';
import { upstreamCheck } from '../../src/readiness.js';
import { ManualClock } from '../support/clock.js';

describe("upstream mode's readiness check", () => {
  it('names the end of a pause as read, however long the upstream takes to answer its ping', async () => {
    const clock = new ManualClock(new Date('2030-01-01T00:00:00.000Z'));
    const pingMs = 4_000;
    const check = upstreamCheck(
      {
        ping: async () => clock.advance(pingMs),
        refusesKey: false,
      },
      { remainingMs: async () => 60_000, probe: async () => undefined },
      { isOpen: false, probeAt: null },
      clock,
    );
    expect(await check.check()).toEqual({
      status: 'up',
      backend: 'braze',
      message: 'paused until 2030-01-01T00:01:00.000Z: the upstream answered 429, and no duplication is sent before then',
    });
  });
});
