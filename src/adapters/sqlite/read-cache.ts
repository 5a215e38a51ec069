/** A cache that grows past this is emptied, so that looking up ever more keys cannot grow memory. */
const MAX_ENTRIES = 10_000;

/** Keeps `value`, frozen since every caller shares it, in a map that is emptied first when full; returns it. */
export function remember<V>(entries: Map<string, V>, key: string, value: V): V {
  if (entries.size >= MAX_ENTRIES) entries.clear();
  entries.set(key, deepFreeze(value));
  return value;
}

/**
 * Point reads of rows that are only ever inserted, never changed or deleted (campaigns, tags): once found,
 * found for good, whoever inserted them (this process or another on the same file). A miss is not kept, so
 * a row inserted later is found at once. A cached value is shared by every caller, so it is frozen.
 */
export class FoundCache<V> {
  private readonly entries = new Map<string, V>();

  get(key: string, load: () => V | null): V | null {
    const cached = this.entries.get(key);
    if (cached !== undefined) return cached;
    const value = load();
    return value === null ? null : remember(this.entries, key, value);
  }
}

export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  for (const child of Object.values(value)) deepFreeze(child);
  return Object.freeze(value);
}
