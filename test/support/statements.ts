import type { GatewayStore } from '../../src/domain/ports.js';

/** What an embedded store's lookup of a key by hash reads from its database when its cache cannot answer. */
export const KEY_BY_HASH = 'FROM api_keys WHERE hash = ?';

/**
 * Counts the statements containing `fragment` that an embedded store (SqliteStore) runs: each one it runs is
 * fetched from its prepared statements by text, and a lookup its cache answers runs none.
 */
export function countStatements(store: GatewayStore, fragment: string): () => number {
  const statements = (store as unknown as { sql: { get(text: string): unknown } }).sql;
  const get = statements.get.bind(statements);
  let count = 0;
  statements.get = (text: string) => {
    if (text.includes(fragment)) count += 1;
    return get(text);
  };
  return () => count;
}
