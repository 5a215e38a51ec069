import { parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { apolloDocumentStore, DocumentCache, entryBytes } from '../../src/graphql/document-cache.js';

describe('DocumentCache', () => {
  it('evicts the least recently used past its budget, and accounts a replaced or deleted entry once', () => {
    const cache = new DocumentCache<string>(100);
    cache.set('a', 'A', 40);
    cache.set('b', 'B', 40);
    expect(cache.get('a')).toBe('A');
    cache.set('c', 'C', 40);
    expect([cache.has('a'), cache.has('b'), cache.has('c')]).toEqual([true, false, true]);
    expect(cache.bytes).toBe(80);

    cache.set('a', 'A again', 50);
    expect(cache.bytes).toBe(90);
    expect(cache.delete('c')).toBe(true);
    expect(cache.delete('c')).toBe(false);
    expect(cache.bytes).toBe(50);

    // Alone over the budget: not kept, and nothing else is evicted for it.
    cache.set('huge', 'H', 101);
    expect([cache.has('huge'), cache.bytes]).toEqual([false, 50]);
    cache.clear();
    expect([cache.has('a'), cache.bytes]).toEqual([false, 0]);
  });
});

describe('entryBytes', () => {
  it('counts every token a document keeps through its locations, comments included, and the text', () => {
    const spreads = parse(`query Q { ${'...F '.repeat(900)}} fragment F on Query { __typename }`);
    // 1,813 tokens from 4.5 KB of text; the document's JSON is about a quarter of what it holds.
    expect(entryBytes('', spreads)).toBeGreaterThan(1813 * 500);
    expect(entryBytes('', spreads)).toBeGreaterThan(4 * Buffer.byteLength(JSON.stringify(spreads)));
    const commented = parse(`{ __typename }${'\n#'.repeat(10_000)}`);
    expect(entryBytes('', commented)).toBeGreaterThan(10_000 * 100);
    // The key is kept too.
    expect(entryBytes('k'.repeat(1000), commented) - entryBytes('', commented)).toBeGreaterThanOrEqual(2000);
  });

  it('never keeps a document without locations: there is nothing to measure it by', async () => {
    const store = apolloDocumentStore(new DocumentCache());
    await store.set('plain', parse('{ __typename }', { noLocation: true }));
    await store.set('located', parse('{ __typename }'));
    expect([await store.get('plain'), (await store.get('located'))?.kind]).toEqual([undefined, 'Document']);
  });
});
