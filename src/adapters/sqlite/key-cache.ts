import type Database from 'better-sqlite3';
import { deepFreeze } from './read-cache.js';
import type { ReadSnapshot } from './read-snapshot.js';

/** Lookups of ever new hashes (well-formed keys nobody issued) empty the cache rather than grow it. */
const MAX_ENTRIES = 10_000;

/**
 * API keys by hash, answered from memory: on the accept path the key lookup was the costliest read left.
 * A revocation still takes effect at once:
 * - this store's own key writes (create, revoke, rotate, touch) empty the cache when they are sent and again
 *   when they resolve, so once revokeApiKey has resolved no lookup returns the old record;
 * - every change to api_keys, by any connection or process (the key CLI while the gateway runs), moves the
 *   counter in api_keys_version (triggers, migrations.ts), which is read before the first lookup of every
 *   turn of the event loop; when it moved, the cache is emptied. A key revoked elsewhere is refused from the
 *   next turn on: only requests already being handled in the current turn (a few milliseconds) can still pass.
 * The counter is read once per turn rather than once per lookup, in the turn's read transaction. SQLite's `PRAGMA data_version` would move on every commit
 * of the writer thread. Cached records are shared, so they are frozen.
 */
export class KeyCache<V> {
  private keysVersion: Database.Statement | undefined;
  private version: unknown;
  private checkedThisTurn = false;
  private readonly entries = new Map<string, V | null>();

  constructor(
    private readonly db: Database.Database,
    private readonly snapshot: ReadSnapshot,
  ) {}

  get(hash: string, load: () => V | null): V | null {
    if (!this.checkedThisTurn) {
      this.checkedThisTurn = true;
      setImmediate(() => (this.checkedThisTurn = false));
      // Prepared on first use: the table is made by migrate(), after the store is constructed.
      this.keysVersion ??= this.db.prepare('SELECT version FROM api_keys_version').pluck();
      this.snapshot.enter();
      const version = this.keysVersion.get();
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
