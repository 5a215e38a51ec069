import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A path of the embedded store that other users of the machine may read or write, and the command that closes it. */
export interface SharedStorePath {
  path: string;
  /** Octal, as chmod takes it: `0755`. */
  mode: string;
  fix: string;
}

/** Any access for group or others. */
const SHARED_BITS = 0o077;
/** Group or others may pass through a directory to a file whose name they know. */
const TRAVERSABLE_BITS = 0o011;
/** Group or others may read or write a file. */
const FILE_SHARED_BITS = 0o066;

const shellWord = (text: string): string => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`);

const modeOf = (path: string): number | undefined => statSync(path, { throwIfNoEntry: false })?.mode;

const shared = (path: string, mode: number, privateMode: string): SharedStorePath => ({
  path,
  mode: (mode & 0o7777).toString(8).padStart(4, '0'),
  fix: `chmod ${privateMode} ${shellWord(path)}`,
});

/**
 * The database file's directory and the file itself, where other users of the machine can reach them: the
 * store holds key hashes and security events. The file counts only when the directory lets them through to
 * it, so a file left 0644 in a 0700 directory is nothing to warn about. None on Windows, where modes mean
 * nothing, and none for a path not there.
 */
export function sharedStorePaths(filename: string, platform: NodeJS.Platform = process.platform): SharedStorePath[] {
  if (platform === 'win32') return [];
  const file = resolve(filename);
  const directory = dirname(file);
  const directoryMode = modeOf(directory);
  if (directoryMode === undefined || (directoryMode & SHARED_BITS) === 0) return [];
  const fileMode = modeOf(file);
  const fileReachable = (directoryMode & TRAVERSABLE_BITS) !== 0 && fileMode !== undefined && (fileMode & FILE_SHARED_BITS) !== 0;
  return [shared(directory, directoryMode, '700'), ...(fileReachable ? [shared(file, fileMode, '600')] : [])];
}
