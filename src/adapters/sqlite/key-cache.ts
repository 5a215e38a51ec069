import type Database from 'better-sqlite3';
import { deepFreeze } from './read-cache.js';

/** Lookups of ever new hashes (well-formed keys nobody issued) empty the cache rather than grow it. */
const MAX_ENTRIES = 10_000;

/**
 * API keys by hash, answered from memory: on the accept path the key lookup was the costliest read left.
 * A revocation still takes effect at once:
 * - this store's own key writes (create, revoke, rotate, touch) empty the cache in the same synchronous step
 *   as the write, so once revokeApiKey has resolved no lookup returns the old record;
 * - a commit by any other connection (the key CLI in another process) changes SQLite's `PRAGMA
 *   data_version`, which is read before the first lookup of every turn of the event loop; when it changed,
 *   the cache is emptied. A key revoked elsewhere is refused from the next turn on: only requests already
 *   being handled in the current turn (a few milliseconds) can still pass.
 * Reading data_version costs as much as the lookup itself (both open a read transaction), which is why it
 * is read once per turn rather than once per lookup. Cached records are shared, so they are frozen.
 */
export class KeyCache<V> {
  private readonly dataVersion: Database.Statement;
  private version: unknown;
  private checkedThisTurn = false;
  private readonly entries = new Map<string, V | null>();

  constructor(db: Database.Database) {
    this.dataVersion = db.prepare('PRAGMA data_version').pluck();
  }

  get(hash: string, load: () => V | null): V | null {
    if (!this.checkedThisTurn) {
      this.checkedThisTurn = true;
      setImmediate(() => (this.checkedThisTurn = false));
      const version = this.dataVersion.get();
      if (version !== this.version) {
        this.entries.clear();
        this.version = version;
      }
    }
    const cached = this.entries.get(hash);
    if (cached !== undefined) return cached;
    const value = load();
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
    this.entries.set(hash, value === null ? null : deepFreeze(value));
    return value;
  }

  clear(): void {
    this.entries.clear();
  }
}
