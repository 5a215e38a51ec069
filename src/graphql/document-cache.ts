/**
 * Parsed GraphQL documents kept by query text, bounded by the heap they hold rather than by their number.
 *
 * A document parsed with locations (as Apollo parses, so that errors carry `locations`) keeps every token of
 * its text: each node's `loc` points at its first and last token, and the tokens are one linked list. Its heap
 * follows its tokens, not its JSON or its length: a text of 4 KB under the 2,000-token limit holds 0.5–1 MB.
 * Callers need send no key for a document to be parsed and kept, so a count of entries bounds nothing.
 */
import type { DocumentStore, PersistedQueryOptions } from '@apollo/server';
import { TokenKind, type DocumentNode, type Token } from 'graphql';

/**
 * Heap per token of a kept document, measured with `bench/document-heap.ts` (Node 20, x64, graphql 16: the
 * heap 300 distinct documents of a shape retain after a full GC, less their text, per token). Bare fields
 * cost the most, 515 bytes (a FieldNode, its NameNode, two Locations and the token); spreads, arguments,
 * lists, objects, directives, variables and selection sets 160–365. Counting every token at the most makes
 * the estimate 1.07–2.1 times the heap measured for the shapes there, 1.6 for the duplicateCampaign mutation.
 */
const TOKEN_BYTES = 520;
/** A comment is a token with no node: 88 bytes measured. Comments do not count towards the token limit. */
const COMMENT_BYTES = 128;
/**
 * Per character of the query text and of the key: each is kept (two bytes a character when one is beyond
 * Latin-1), and so is a copy of each block string's value.
 */
const CHARACTER_BYTES = 4;

/** What each cache may hold: a few hundred ordinary operations, a few dozen of the largest documents. */
export const DOCUMENT_CACHE_BYTES = 16 * 2 ** 20;

/**
 * The heap an entry holds: an estimate from above for any document. A document without locations (Apollo
 * never parses one) has no tokens to count and is never kept.
 */
export function entryBytes(key: string, document: DocumentNode): number {
  const { loc } = document;
  if (!loc) return Number.POSITIVE_INFINITY;
  let bytes = CHARACTER_BYTES * (loc.source.body.length + key.length);
  for (let token: Token | null = loc.startToken; token !== null; token = token.next) {
    bytes += token.kind === TokenKind.COMMENT ? COMMENT_BYTES : TOKEN_BYTES;
  }
  return bytes;
}

/** Entries by key, evicted least recently used first once their bytes pass the budget. */
export class DocumentCache<V> {
  /** Least recently used first. */
  private readonly entries = new Map<string, { value: V; bytes: number }>();
  private total = 0;

  constructor(readonly budget: number = DOCUMENT_CACHE_BYTES) {}

  /** The bytes accounted for the entries kept. */
  get bytes(): number {
    return this.total;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }

  /** Keeps the entry unless it alone is over the budget, then evicts until the rest fit. */
  set(key: string, value: V, bytes: number): void {
    this.delete(key);
    if (bytes > this.budget) return;
    this.entries.set(key, { value, bytes });
    this.total += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.total <= this.budget) break;
      this.entries.delete(oldest);
      this.total -= entry.bytes;
    }
  }

  delete(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined) return false;
    this.entries.delete(key);
    this.total -= entry.bytes;
    return true;
  }

  clear(): void {
    this.entries.clear();
    this.total = 0;
  }
}

/** A cache as Apollo's key-value stores take it (get, set, delete, all promised), each entry sized by `bytesOf`. */
function apolloStore<V>(cache: DocumentCache<V>, bytesOf: (key: string, value: V) => number) {
  return {
    get: async (key: string) => cache.get(key),
    set: async (key: string, value: V) => cache.set(key, value, bytesOf(key, value)),
    delete: async (key: string) => cache.delete(key),
  };
}

/**
 * Apollo's store of parsed and validated documents by query hash, bounded by the heap they hold. Apollo's
 * default store counts the JSON of each document, which leaves out the tokens and the objects: a quarter to
 * a third of the heap, so its 30 MiB held over 100 MB.
 */
export const apolloDocumentStore = (cache: DocumentCache<DocumentNode>): DocumentStore => apolloStore(cache, entryBytes);

/** What the persisted-query store may hold: the texts of a few hundred ordinary operations. */
export const QUERY_TEXT_CACHE_BYTES = 4 * 2 ** 20;

/** The heap a persisted query's text holds under its key. */
export const queryTextBytes = (key: string, text: string): number => CHARACTER_BYTES * (key.length + text.length);

/**
 * What Apollo is given as its store of automatic persisted queries: one that holds nothing. The texts are kept
 * by workspace in a DocumentCache of the gateway's (see persistedQueryPlugin), and a hash Apollo looks up itself
 * is one the caller's workspace has not sent.
 */
export const NO_QUERY_TEXTS: NonNullable<PersistedQueryOptions['cache']> = {
  get: async () => undefined,
  set: async () => undefined,
  delete: async () => false,
};
