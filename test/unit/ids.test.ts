import { describe, expect, it } from 'vitest';
import { firstIdAt, newId } from '../../src/domain/ids.js';

describe('newId', () => {
  it('makes version-7 UUIDs that sort by creation time', () => {
    const earlier = newId(Date.UTC(2026, 0, 1));
    const later = newId(Date.UTC(2026, 0, 1) + 1);
    for (const id of [earlier, later, newId()]) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(earlier < later).toBe(true);
    expect(earlier.replace(/-/g, '').slice(0, 12)).toBe(Date.UTC(2026, 0, 1).toString(16).padStart(12, '0'));
    expect(new Set(Array.from({ length: 1000 }, () => newId(0))).size).toBe(1000);
  });

  it('bounds from below every id made at a time or after, and none made before', () => {
    const time = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 100; i++) {
      expect(firstIdAt(time) <= newId(time)).toBe(true);
      expect(firstIdAt(time) <= newId(time + 1)).toBe(true);
      expect(firstIdAt(time) > newId(time - 1)).toBe(true);
    }
  });
});
