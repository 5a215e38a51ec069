import { lstatSync, openSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { AlreadyExistsError, GatewayError } from '../domain/errors.js';

/** The refusal of a file name that is taken, as createNewFile and checkNewFile both give it. */
export const alreadyExists = (destination: string, what: string) => new AlreadyExistsError(`${destination} already exists: ${what} never overwrites a file`);

const noDirectory = (destination: string, nothing: string) =>
  new GatewayError('BAD_USER_INPUT', `the directory ${dirname(resolve(destination))} does not exist: make it first; nothing was ${nothing}`);

const notADirectory = (destination: string, nothing: string) =>
  new GatewayError('BAD_USER_INPUT', `${dirname(resolve(destination))} is not a directory (a file is in its path): nothing was ${nothing}`);

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
    if (code === 'EEXIST') throw alreadyExists(destination, what);
    if (code === 'ENOENT') throw noDirectory(destination, nothing);
    if (code === 'ENOTDIR') throw notADirectory(destination, nothing);
    const refused = accessRefusal(code);
    if (refused !== undefined) throw new GatewayError('BAD_USER_INPUT', `cannot create ${destination}: ${refused}; nothing was ${nothing}`);
    throw error;
  }
}

/** Why the file system refused this process a file (`code`, an errno's), in words; undefined for any other failure. */
export function accessRefusal(code: string | undefined): string | undefined {
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EROFS') return 'the file system is read-only';
  return undefined;
}

/** Refuses a name that names no file: opening it would blame something else. */
function requireFileName(destination: string, what: string, nothing: string): void {
  // An empty templated variable: opening '' would blame a directory the operator never named.
  if (destination === '') throw new GatewayError('BAD_USER_INPUT', `${what} names no file: give it a file name; nothing was ${nothing}`);
}

/**
 * Refuses, as createNewFile would, a name that is taken or whose directory is missing, for a command to refuse it
 * before it opens the store: with the store down it would otherwise be refused for the store instead. createNewFile's
 * `wx` open stays the authority: the file may appear, or the directory go, in between, and any other failure (a
 * permission) is left to it.
 */
export function checkNewFile(destination: string, what: string, nothing: string): void {
  requireFileName(destination, what, nothing);
  let existing: Stats | undefined;
  try {
    // lstat: `wx` refuses a symbolic link even when what it points to is missing.
    existing = lstatSync(destination, { throwIfNoEntry: false });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') throw notADirectory(destination, nothing);
    return;
  }
  if (existing !== undefined) throw alreadyExists(destination, what);
  const parent = statSync(dirname(resolve(destination)), { throwIfNoEntry: false });
  if (parent === undefined) throw noDirectory(destination, nothing);
  if (!parent.isDirectory()) throw notADirectory(destination, nothing);
}
