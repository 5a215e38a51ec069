import { openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { AlreadyExistsError, GatewayError } from '../domain/errors.js';

/**
 * Makes `destination`, only its owner may read it, and opens it for writing: what the CLI writes there (a backup, an
 * export) holds a customer's data. Never an existing file. The refusals say what was not done (`nothing`, like
 * 'backed up'), `what` writes ('a backup') never overwriting a file, as errors a script can tell apart (the CLI's --json).
 */
export function createNewFile(destination: string, what: string, nothing: string): number {
  requireFileName(destination, what, nothing);
  try {
    return openSync(destination, 'wx', 0o600);
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code === 'EEXIST') throw new AlreadyExistsError(`${destination} already exists: ${what} never overwrites a file`);
    const directory = dirname(resolve(destination));
    if (code === 'ENOENT') throw new GatewayError('BAD_USER_INPUT', `the directory ${directory} does not exist: make it first; nothing was ${nothing}`);
    if (code === 'ENOTDIR') throw new GatewayError('BAD_USER_INPUT', `${directory} is not a directory (a file is in its path): nothing was ${nothing}`);
    if (code === 'EACCES' || code === 'EPERM') throw new GatewayError('BAD_USER_INPUT', `cannot create ${destination}: permission denied; nothing was ${nothing}`);
    if (code === 'EROFS') throw new GatewayError('BAD_USER_INPUT', `cannot create ${destination}: the file system is read-only; nothing was ${nothing}`);
    throw error;
  }
}

/** Refuses a name that names no file, as createNewFile does, for a command to refuse before it does anything else. */
export function requireFileName(destination: string, what: string, nothing: string): void {
  // An empty templated variable: opening '' would blame a directory the operator never named.
  if (destination === '') throw new GatewayError('BAD_USER_INPUT', `${what} names no file: give it a file name; nothing was ${nothing}`);
}
