import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { FILE_MOVED } from './outage.js';

/** Which file a path named when the store opened it: device and inode. */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
}

export function identify(filename: string): FileIdentity {
  const { dev, ino } = statSync(filename, { bigint: true });
  return { dev, ino };
}

/**
 * Throws unless the file at `filename` is still the one `opened` identifies. An open connection keeps
 * working on a file that was deleted (its directory removed) or replaced, so without this check writes would
 * succeed into a file no restart will find. Errors carry the file system's code: ENOENT when nothing is at the
 * path any more, ESTALE when another file is.
 */
export function assertSameFile(filename: string, opened: FileIdentity): void {
  let current: FileIdentity;
  try {
    current = identify(filename);
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw Object.assign(new Error(`The database file is no longer at ${filename}: ${message}`), { name: FILE_MOVED, code });
  }
  if (current.dev !== opened.dev || current.ino !== opened.ino) {
    throw Object.assign(new Error(`The database file at ${filename} was replaced by another file since it was opened`), { name: FILE_MOVED, code: 'ESTALE' });
  }
}

/** The first 16 bytes of every SQLite database file. */
const SQLITE_MAGIC = 'SQLite format 3\u0000';

/**
 * Throws when the database file at `filename` is not in WAL mode while a `-wal` file that holds anything is beside
 * it. The store puts every file it opens in WAL mode (bytes 18 and 19 of the header are 2); one that is not, such as
 * a `store backup` copy just restored, has no log of its own, so that `-wal` is the log of the database the copy
 * replaced, left by a gateway that did not stop cleanly. SQLite would read that log's pages over the copy's, which
 * damages it, and the next checkpoint would write them into it for good.
 */
export function assertNoStrayWal(filename: string): void {
  const header = Buffer.alloc(100);
  const fd = openSync(filename, 'r');
  let length: number;
  try {
    length = readSync(fd, header, 0, header.length, 0);
  } finally {
    closeSync(fd);
  }
  // A new (empty) file, or one that is no SQLite database: SQLite says what is wrong with it.
  if (length < header.length || header.toString('latin1', 0, 16) !== SQLITE_MAGIC) return;
  if (header[18] === 2 && header[19] === 2) return;
  const wal = `${filename}-wal`;
  if ((statSync(wal, { throwIfNoEntry: false })?.size ?? 0) === 0) return;
  throw new Error(
    `${filename} is not in WAL mode, as a restored backup is not, but ${wal} beside it holds the log of the database it replaced, ` +
      `which would damage it: delete ${wal} and ${filename}-shm, then start again`,
  );
}
