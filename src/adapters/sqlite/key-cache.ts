import type { ApiKeyRecord } from '../../domain/types.js';
import { CACHE_ENTRIES, deepFreeze, LruMap } from './read-cache.js';
import type { ReadSnapshot } from './read-snapshot.js';

/** Hashes no key has, kept apart: a flood of well-formed keys nobody issued cannot push out the keys in use. */
const UNKNOWN_HASH_ENTRIES = 1_000;

/**
 * API keys by hash, answered from memory: on the accept path the key lookup was the costliest read left.
 * A revocation still takes effect at once:
 * - this store's own key writes (create, revoke, rotate) empty the cache when they are sent and again when
 *   they resolve, so once revokeApiKey has resolved no lookup returns the old record;
 * - every change to api_keys but a key's last use, by any connection or process (the key CLI while the
 *   gateway runs), moves the counter in api_keys_version (triggers, migrations.ts), which is read before the
 *   first lookup in each read transaction (one per turn of the event loop, read-snapshot.ts); when it moved,
 *   the cache is emptied. A key revoked elsewhere is refused from the next turn on: only requests already
 *   being handled in the current turn (a few milliseconds) can still pass.
 * A key's last use is written at most once a minute per key: had it emptied the cache, a few thousand keys in
 * use would have kept it nearly empty. The cached record takes the new time instead (`used`).
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

  /**
   * The key of `record` was used at `at`: its cached record, under its hash or its previous one, takes that
   * time. Only the time is taken, so a record changed since `record` was read stays as it is.
   */
  used(record: ApiKeyRecord, at: Date): void {
    for (const hash of [record.hash, record.previousHash]) {
      if (hash === null) continue;
      const cached = this.known.get(hash);
      if (cached?.id === record.id) this.known.set(hash, deepFreeze({ ...cached, lastUsedAt: new Date(at) }));
    }
  }

  clear(): void {
    this.known.clear();
    this.unknown.clear();
  }
}
