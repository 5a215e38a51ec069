import { statSync } from 'node:fs';
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
