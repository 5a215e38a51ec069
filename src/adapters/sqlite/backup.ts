import { closeSync, existsSync, rmSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { createNewFile } from '../new-file.js';
import { BUSY_TIMEOUT_MS } from './connection.js';
import { assertNoStrayWal } from './database-file.js';

/** Whether `db` holds a gateway's tables: every version of the schema has had `workspaces`. */
function isGatewayStore(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'workspaces'").get() !== undefined;
}

/** What SQLite may leave beside a database it was writing when the write failed. */
const SIDE_FILES = ['-journal', '-wal', '-shm'];

/** What a failed write of the target means to the operator, by SQLite's code; the others say only that it failed. */
const TARGET_FAILURES = new Map([
  ['SQLITE_FULL', 'ran out of space'],
  // EFBIG (a file-size limit), EDQUOT (a quota) or a disk's error.
  ['SQLITE_IOERR_WRITE', 'could not be written'],
]);

/** The failure of the copy into `destination`, naming it rather than the store, which only the copy's read touched. */
function backupFailed(filename: string, destination: string, error: unknown): Error {
  const { code, message } = error as { code?: string; message: string };
  const cause = code === undefined ? message : `${code}: ${message}`;
  const failed = code === undefined ? undefined : TARGET_FAILURES.get(code);
  const what = failed ? `the backup target ${destination} ${failed} (${cause})` : `backing up ${filename} to ${destination} failed (${cause})`;
  const room = code === 'SQLITE_FULL' ? `, and a backup needs about the size of ${filename} (${statSync(filename).size} bytes) free there` : '';
  return new Error(`${what}: the partial copy was removed${room}; nothing of the store was changed`, { cause: error });
}

/**
 * Copies the embedded store to `destination` while gateways keep using it. VACUUM INTO reads one consistent
 * snapshot (in WAL mode without holding up writers) and writes a compact database with no WAL of its own, ready
 * to be put back as the store's file. The copy holds key hashes and events, so only its owner may read it.
 *
 * The store is copied as it is: its schema version is neither checked nor changed (a gateway of that version
 * may be running on it), and the connection sets nothing that persists in the file.
 */
export function backupSqliteStore(filename: string, destination: string): void {
  // Reading a restored copy through a stray -wal would back up the damage, and closing would write it into the copy.
  if (existsSync(filename)) assertNoStrayWal(filename);
  const db = new Database(filename, { fileMustExist: true });
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    let gatewayStore: boolean;
    try {
      gatewayStore = isGatewayStore(db);
    } catch (error) {
      throw new Error(`${filename} is not a readable SQLite database (${(error as Error).message}): nothing was backed up`);
    }
    if (!gatewayStore) throw new Error(`${filename} holds no campaign-gateway store: nothing was backed up`);
    // VACUUM INTO takes a missing or empty file: making it here first gives it its mode and never overwrites one.
    closeSync(createNewFile(destination, 'a backup', 'backed up'));
    // A journal left by a failed write goes with the copy; a file that was there before is not the backup's to delete.
    const made = [destination, ...SIDE_FILES.map((suffix) => destination + suffix).filter((file) => !existsSync(file))];
    try {
      db.prepare('VACUUM INTO ?').run(destination);
    } catch (error) {
      for (const file of made) rmSync(file, { force: true });
      throw backupFailed(filename, destination, error);
    }
  } finally {
    db.close();
  }
}
