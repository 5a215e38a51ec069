/** Entries each read cache keeps, so that looking up ever more rows cannot grow memory. */
export const CACHE_ENTRIES = 10_000;

/**
 * A map of at most `capacity` entries that drops the least recently used first: rows used often stay however
 * many others pass through (a cache emptied whole when full lost its hot rows with the cold ones).
 *
 * A hit must stay as cheap as a Map lookup, and moving an entry to the back on every hit (delete, then set)
 * made it four times as slow. So an entry moves only once a quarter of the capacity has been inserted since
 * it last moved: the order lags each entry's last use by fewer inserts than that. When full, the oldest 1 %
 * go at once: V8 keeps a deleted entry's slot until it rebuilds the map, and finding the oldest entry steps
 * over every such slot at the front, so dropping one entry per insert took microseconds each.
 */
export class LruMap<V> {
  private readonly entries = new Map<string, { value: V; movedAt: number }>();
  private inserts = 0;
  private readonly moveAfter: number;
  private readonly dropAtOnce: number;

  constructor(private readonly capacity: number) {
    this.moveAfter = capacity / 4;
    this.dropAtOnce = Math.ceil(capacity / 100);
  }

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (this.inserts - entry.movedAt >= this.moveAfter) {
      this.entries.delete(key);
      this.entries.set(key, entry);
      entry.movedAt = this.inserts;
    }
    return entry.value;
  }

  /** A new key goes to the back, after the oldest entries are dropped when full; a cached one keeps its place. */
  set(key: string, value: V): void {
    const entry = this.entries.get(key);
    if (entry !== undefined) {
      entry.value = value;
      return;
    }
    if (this.entries.size >= this.capacity) this.dropOldest();
    this.entries.set(key, { value, movedAt: this.inserts });
    this.inserts += 1;
  }

  clear(): void {
    this.entries.clear();
  }

  private dropOldest(): void {
    let left = this.dropAtOnce;
    for (const key of this.entries.keys()) {
      this.entries.delete(key);
      left -= 1;
      if (left === 0) return;
    }
  }
}

/**
 * Point reads of rows that are only ever inserted, never changed, and deleted only with their workspace, whose keys
 * go with it, so that no caller asks for them again (campaigns, tags): once found, found for good, whoever
 * inserted them (this process or another on the same file). A miss is not kept, so a row inserted later is found
 * at once. A cached value is shared by every caller, so it is frozen.
 */
export class FoundCache<V> {
  private readonly entries = new LruMap<V>(CACHE_ENTRIES);

  get(key: string, load: () => V | null): V | null {
    const cached = this.entries.get(key);
    if (cached !== undefined) return cached;
    const value = load();
    if (value !== null) this.entries.set(key, deepFreeze(value));
    return value;
  }
}

export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  for (const child of Object.values(value)) deepFreeze(child);
  return Object.freeze(value);
}
