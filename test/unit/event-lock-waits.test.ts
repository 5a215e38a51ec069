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
    const waits = new EventLockWaits(2, 5);
    expect([waits.take('ws_a'), waits.take('ws_a')]).toEqual([expect.anything(), expect.anything()]);
    expect(waits.take('ws_a')).toBeNull();
    expect(waits.take('ws_b')).not.toBeNull();
  });

  it('hands a released turn to the write parked longest, so that the bound holds and none is passed over', async () => {
    const waits = new EventLockWaits(1, 5);
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
    const waits = new EventLockWaits(1, 5);
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

  it('gives no more turns than the bound in all, and hands one freed to the write parked longest that may have it', async () => {
    const waits = new EventLockWaits(1, 2);
    const a = waits.take('ws_a') as EventLockTurn;
    expect(waits.take('ws_b')).not.toBeNull();
    // Both bounds: ws_c's for all, ws_a's for its own and for all.
    expect(waits.take('ws_c')).toBeNull();
    const handed: string[] = [];
    const park = (workspaceId: string) =>
      waits.next(workspaceId, 8_000).then((turn) => {
        handed.push(workspaceId);
        return turn as EventLockTurn;
      });
    const [secondA, c] = [park('ws_a'), park('ws_c')];

    // ws_a's turn freed: ws_a's parked write, the first, may have it.
    a.release();
    await secondA;
    expect(handed).toEqual(['ws_a']);
    (await secondA).release();
    expect(await c).not.toBeNull();
    expect(handed).toEqual(['ws_a', 'ws_c']);
    expect(waits.take('ws_d')).toBeNull();
  });

  it('passes over a parked write whose workspace has its turns, for one after it that may have the one freed', async () => {
    const waits = new EventLockWaits(1, 2);
    const a = waits.take('ws_a') as EventLockTurn;
    const b = waits.take('ws_b') as EventLockTurn;
    const handed: string[] = [];
    const park = (workspaceId: string) => void waits.next(workspaceId, 8_000).then(() => handed.push(workspaceId));
    park('ws_a');
    park('ws_c');
    b.release();
    await vi.waitFor(() => expect(handed).toEqual(['ws_c']));
    a.release();
    await vi.waitFor(() => expect(handed).toEqual(['ws_c', 'ws_a']));
  });

  it('gives a turn at once, parking nothing, when one is free', async () => {
    const waits = new EventLockWaits(1, 5);
    const turn = await waits.next('ws_a', 0);
    expect(turn).not.toBeNull();
    expect(waits.take('ws_a')).toBeNull();
  });
});
