import type { ApiKeyRecord } from '../../domain/types.js';
import { CACHE_ENTRIES, deepFreeze, LruMap } from './read-cache.js';
import type { ReadSnapshot } from './read-snapshot.js';

/** Hashes no key has, kept apart: a flood of well-formed keys nobody issued cannot push out the keys in use. */
const UNKNOWN_HASH_ENTRIES = 1_000;

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
export class KeyCache {
  private version: unknown;
  private checkedIn = 0;
  private readonly known = new LruMap<ApiKeyRecord>(CACHE_ENTRIES);
  private readonly unknown = new LruMap<true>(UNKNOWN_HASH_ENTRIES);

  constructor(
    private readonly snapshot: ReadSnapshot,
    private readonly readVersion: () => unknown,
  ) {}

  get(hash: string, load: () => ApiKeyRecord | null): ApiKeyRecord | null {
    const snapshot = this.snapshot.enter();
    if (snapshot !== this.checkedIn) {
      this.checkedIn = snapshot;
      const version = this.readVersion();
      if (version !== this.version) {
        this.clear();
        this.version = version;
      }
    }
    const cached = this.known.get(hash);
    if (cached !== undefined) return cached;
    if (this.unknown.get(hash) !== undefined) return null;
    const record = load();
    if (record === null) this.unknown.set(hash, true);
    else this.known.set(hash, deepFreeze(record));
    return record;
  }

  clear(): void {
    this.known.clear();
    this.unknown.clear();
  }
}
