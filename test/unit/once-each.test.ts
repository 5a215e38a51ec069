import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { onceEach } from '../../src/graphql/context.js';

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
