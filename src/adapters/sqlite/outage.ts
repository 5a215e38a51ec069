import { dependencyUnavailable, storeBusy } from '../../domain/errors.js';

/**
 * SQLite's result codes (extended ones included) that say the storage under the database cannot take a write
 * or serve a read, rather than that a statement is wrong: the disk or its quota is full (SQLITE_FULL), the
 * file system failed or was remounted read-only (SQLITE_IOERR_*, SQLITE_READONLY_*), the file or its
 * directory cannot be opened (SQLITE_CANTOPEN_*), its content is damaged (SQLITE_CORRUPT_*, SQLITE_NOTADB), or
 * another process has held it locked for longer than the store waits (SQLITE_BUSY_*: a shell or a backup tool
 * with a transaction open).
 */
const STORAGE_CODES = /^SQLITE_(FULL|IOERR|READONLY|CANTOPEN|CORRUPT|NOTADB|BUSY)(_|$)/;
/** Damage does not heal by itself: a store that saw it stays down until an operator has restored the file. */
const DAMAGE_CODES = /^SQLITE_(CORRUPT|NOTADB)(_|$)/;
/** Another process keeps the file locked: the storage works, and is busy. */
const BUSY_CODES = /^SQLITE_BUSY(_|$)/;

/** The name of the error raised when the file at the store's path is no longer the one it opened (database-file.ts). */
export const FILE_MOVED = 'DatabaseFileMoved';

const codeOf = (error: Error): string => {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : '';
};

/** Whether `error` says the storage failed rather than a statement or the caller. */
const isStorageFailure = (error: unknown): error is Error =>
  error instanceof Error && (error.name === FILE_MOVED || STORAGE_CODES.test(codeOf(error)));

/** Whether a storage failure is damage to the file, which no later write can prove repaired. */
export const isDamage = (error: Error): boolean => DAMAGE_CODES.test(codeOf(error));

/**
 * The error a caller should get for `error`: UNAVAILABLE (503 with Retry-After) when the storage failed,
 * carrying the original as its cause for the log; anything else unchanged. The PostgreSQL store's outage.ts
 * does the same for a server that cannot be reached.
 */
export function asOutage(error: unknown): unknown {
  if (!isStorageFailure(error)) return error;
  return BUSY_CODES.test(codeOf(error)) ? storeBusy(error) : dependencyUnavailable(error);
}
