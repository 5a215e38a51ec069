import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventLockWaits, type EventLockTurn } from '../../src/adapters/postgres/event-lock-waits.js';

describe("the bound on an instance's connections waiting for one workspace's event lock", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('gives as many turns as the bound per workspace, each workspace its own', () => {
    const waits = new EventLockWaits(2);
    expect([waits.take('ws_a'), waits.take('ws_a')]).toEqual([expect.anything(), expect.anything()]);
    expect(waits.take('ws_a')).toBeNull();
    expect(waits.take('ws_b')).not.toBeNull();
  });

  it('hands a released turn to the write parked longest, so that the bound holds and none is passed over', async () => {
    const waits = new EventLockWaits(1);
    const first = waits.take('ws_a') as EventLockTurn;
    const handed: string[] = [];
    const parked = ['second', 'third'].map((name) =>
      waits.next('ws_a', 8_000).then((turn) => {
        handed.push(name);
        return turn as EventLockTurn;
      }),
    );

    first.release();
    const second = await parked[0];
    expect(handed).toEqual(['second']);
    // Handed over, not freed: a write arriving now finds none.
    expect(waits.take('ws_a')).toBeNull();
    // Released twice, a turn frees one place, once.
    second.release();
    second.release();
    const third = await parked[1];
    expect(handed).toEqual(['second', 'third']);
    expect(waits.take('ws_a')).toBeNull();

    third.release();
    expect(waits.take('ws_a')).not.toBeNull();
  });

  it('gives a parked write nothing once its time is up, and leaves it out of the turns handed after', async () => {
    const waits = new EventLockWaits(1);
    const first = waits.take('ws_a') as EventLockTurn;
    const givenUp = waits.next('ws_a', 1_000);
    const later = waits.next('ws_a', 8_000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await givenUp).toBeNull();

    first.release();
    const turn = await later;
    expect(turn).not.toBeNull();
    turn?.release();
    expect(waits.take('ws_a')).not.toBeNull();
  });

  it('gives a turn at once, parking nothing, when one is free', async () => {
    const waits = new EventLockWaits(1);
    const turn = await waits.next('ws_a', 0);
    expect(turn).not.toBeNull();
    expect(waits.take('ws_a')).toBeNull();
  });
});
