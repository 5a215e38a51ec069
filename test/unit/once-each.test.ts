import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { batchedOnce, onceEach } from '../../src/graphql/context.js';

/** A load per id that ends only when the test says, with the ids it was asked for. */
function heldLoads() {
  const asked: string[] = [];
  const ends = new Map<string, { resolve: (value: string) => void; reject: (error: Error) => void }>();
  const load = (id: string) =>
    new Promise<string>((resolve, reject) => {
      asked.push(id);
      ends.set(id, { resolve, reject });
    });
  return { asked, load, end: (id: string) => ends.get(id)!.resolve(`details of ${id}`), fail: (id: string) => ends.get(id)!.reject(new Error(`no ${id}`)) };
}

describe('onceEach: the loader of the details of a request\'s campaign list entries', () => {
  it('runs at most `concurrency` loads at once, the next starting as one ends', async () => {
    const { asked, load, end } = heldLoads();
    const get = onceEach(load, 2);
    const answers = ['a', 'b', 'c', 'd'].map(get);
    await turn();
    expect(asked).toEqual(['a', 'b']);
    end('b');
    await turn();
    expect(asked).toEqual(['a', 'b', 'c']);
    end('a');
    end('c');
    await turn();
    expect(asked).toEqual(['a', 'b', 'c', 'd']);
    end('d');
    expect(await Promise.all(answers)).toEqual(['details of a', 'details of b', 'details of c', 'details of d']);
  });

  it('loads each id once, a failure too', async () => {
    const { asked, load, end, fail } = heldLoads();
    const get = onceEach(load, 2);
    const first = [get('a'), get('b'), get('a')];
    await turn();
    fail('a');
    end('b');
    await expect(first[0]).rejects.toThrow('no a');
    await expect(first[2]).rejects.toThrow('no a');
    await expect(get('a')).rejects.toThrow('no a');
    expect(await get('b')).toBe('details of b');
    expect(asked).toEqual(['a', 'b']);
  });
});

describe('batchedOnce: the loader of the jobs of a request\'s events', () => {
  /** Loads that answer at once, with the batches they were asked for and whether the turn had ended by then. */
  function batches(fail?: Error) {
    const asked: { ids: string[]; turnEnded: boolean }[] = [];
    let turnEnded = false;
    setImmediate(() => (turnEnded = true));
    const loadMany = async (ids: string[]) => {
      asked.push({ ids, turnEnded });
      if (fail) throw fail;
      return ids.map((id) => `job ${id}`);
    };
    return { asked, get: batchedOnce(loadMany) };
  }

  it('reads the ids asked for in one turn in one load, each once, before the turn ends', async () => {
    const { asked, get } = batches();
    const first = get('a');
    // Asked for from promise jobs of their own, as the fields of lists resolved one after another are.
    const later = Promise.resolve().then(() => Promise.resolve().then(() => [get('b'), get('a'), get('c')]));
    expect(await first).toBe('job a');
    expect(await Promise.all(await later)).toEqual(['job b', 'job a', 'job c']);
    expect(asked).toEqual([{ ids: ['a', 'b', 'c'], turnEnded: false }]);

    await turn();
    expect(await Promise.all([get('c'), get('d')])).toEqual(['job c', 'job d']);
    expect(asked.map(({ ids }) => ids)).toEqual([['a', 'b', 'c'], ['d']]);
  });

  it('fails each id of a failed load, and does not load them again', async () => {
    const { asked, get } = batches(new Error('store down'));
    const answers = [get('a'), get('b')];
    for (const answer of answers) await expect(answer).rejects.toThrow('store down');
    await expect(get('a')).rejects.toThrow('store down');
    expect(asked.map(({ ids }) => ids)).toEqual([['a', 'b']]);
  });
});
