import { remember } from './read-cache.js';
import type { ReadSnapshot } from './read-snapshot.js';

/**
 * API keys by hash, answered from memory: on the accept path the key lookup was the costliest read left.
 * A revocation still takes effect at once:
 * - this store's own key writes (create, revoke, rotate, touch) empty the cache when they are sent and again
 *   when they resolve, so once revokeApiKey has resolved no lookup returns the old record;
 * - every change to api_keys, by any connection or process (the key CLI while the gateway runs), moves the
 *   counter in api_keys_version (triggers, migrations.ts), which is read before the first lookup in each read
 *   transaction (one per turn of the event loop, read-snapshot.ts); when it moved, the cache is emptied. A key
 *   revoked elsewhere is refused from the next turn on: only requests already being handled in the current
 *   turn (a few milliseconds) can still pass.
 * SQLite's `PRAGMA data_version` would move on every commit of the writer thread. Cached records are shared,
 * so they are frozen.
 */
export class KeyCache<V> {
  private version: unknown;
  private checkedIn = 0;
  private readonly entries = new Map<string, V | null>();

  constructor(
    private readonly snapshot: ReadSnapshot,
    private readonly readVersion: () => unknown,
  ) {}

  get(hash: string, load: () => V | null): V | null {
    const snapshot = this.snapshot.enter();
    if (snapshot !== this.checkedIn) {
      this.checkedIn = snapshot;
      const version = this.readVersion();
      if (version !== this.version) {
        this.entries.clear();
        this.version = version;
      }
    }
    const cached = this.entries.get(hash);
    if (cached !== undefined) return cached;
    // A miss is kept too: lookups of ever new hashes (well-formed keys nobody issued) empty the cache, not grow it.
    return remember(this.entries, hash, load());
  }

  clear(): void {
    this.entries.clear();
  }
}
