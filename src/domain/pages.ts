// Pages of a list: how many rows a caller may ask for, and the page (items, cursors, whether more follow) built
// from the rows read.
import { encodeCursor } from './cursor.js';
import type { Page } from './types.js';
import { validationError } from './validation.js';

export const MAX_PAGE_SIZE = 200;
/** What a list answers when the caller does not say how many. */
export const DEFAULT_PAGE_SIZE = 50;

export function pageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw validationError([{ field: 'first', message: `must be an integer from 1 to ${MAX_PAGE_SIZE}` }]);
  }
  return first;
}

export const emptyPage = <T>(): Page<T> => ({ items: [], hasNextPage: false, endCursor: null, cursors: [] });

/** Builds a page from rows fetched with one extra row, which only says whether a next page exists. */
export function toPage<T extends { id: string }>(rows: T[], size: number, kind: string): Page<T> {
  const visible = rows.slice(0, size);
  const cursors = visible.map((row) => encodeCursor(kind, row.id));
  return {
    items: visible,
    hasNextPage: rows.length > size,
    endCursor: cursors.at(-1) ?? null,
    cursors,
  };
}
