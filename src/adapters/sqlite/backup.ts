import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, linkSync, renameSync, rmSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { alreadyExists, checkNewFile, createNewFile } from '../new-file.js';
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

/** Error codes of a file system that has no hard links (FAT, some network shares). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Gives the written copy its name. A link, unlike a rename, never replaces a file made there meanwhile; where the file
 * system has none, a rename, once the name is seen to be free. (`link`: a test's file system without links.)
 */
export function putInPlace(partial: string, destination: string, link: typeof linkSync = linkSync): void {
  try {
    link(partial, destination);
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code === 'EEXIST' || (NO_LINKS.has(code ?? '') && existsSync(destination))) throw alreadyExists(destination, 'a backup');
    if (!NO_LINKS.has(code ?? '')) throw error;
    renameSync(partial, destination);
  }
}

/** A backup a signal stopped before it was put in place: nothing is left of it. */
export class BackupStopped extends Error {}

/**
 * Copies the embedded store to `destination` while gateways keep using it. VACUUM INTO reads one consistent
 * snapshot (in WAL mode without holding up writers) and writes a compact database with no WAL of its own, ready
 * to be put back as the store's file. The copy holds key hashes and events, so only its owner may read it.
 *
 * It is written under a name of its own beside `destination` and linked there whole: a copy cut short (a kill, a
 * power cut) never lies at `destination`, where it could pass for a backup (SQLite reads a half-written one, with
 * its journal, as an empty database, and checks it as sound). `stopped`, asked once the copy is written, discards it
 * instead (a signal that came while VACUUM INTO held the thread).
 *
 * The store is copied as it is: its schema version is neither checked nor changed (a gateway of that version
 * may be running on it), and the connection sets nothing that persists in the file.
 */
export async function backupSqliteStore(filename: string, destination: string, stopped: () => boolean = () => false): Promise<void> {
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
    checkNewFile(destination, 'a backup', 'backed up');
    const partial = `${destination}.partial-${randomBytes(4).toString('hex')}`;
    // VACUUM INTO takes a missing or empty file: making it here first gives it its mode and never overwrites one.
    closeSync(createNewFile(partial, 'a backup', 'backed up'));
    const made = [partial, ...SIDE_FILES.map((suffix) => partial + suffix)];
    const removeMade = () => {
      for (const file of made) rmSync(file, { force: true });
    };
    try {
      db.prepare('VACUUM INTO ?').run(partial);
    } catch (error) {
      removeMade();
      throw backupFailed(filename, destination, error);
    }
    // A signal that came while the copy held the thread is handled in the event loop's next poll: past the check
    // phase of this turn and into the next one.
    for (let turn = 0; turn < 2; turn += 1) await new Promise(setImmediate);
    try {
      if (stopped()) throw new BackupStopped();
      putInPlace(partial, destination);
    } finally {
      removeMade();
    }
  } finally {
    db.close();
  }
}
