/** A cache that grows past this is emptied, so that looking up ever more campaigns cannot grow memory. */
const MAX_ENTRIES = 10_000;

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
    if (value === null) return null;
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
    this.entries.set(key, deepFreeze(value));
    return value;
  }
}

export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  for (const child of Object.values(value)) deepFreeze(child);
  return Object.freeze(value);
}
