import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A path of the embedded store that other users of the machine may read or write, and the command that closes it. */
export interface SharedStorePath {
  path: string;
  /** Octal, as chmod takes it: `0755`. */
  mode: string;
  fix: string;
}

/** Read or write for group or others. */
const SHARED_BITS = 0o066;

const shellWord = (text: string): string => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`);

/**
 * The database file's directory and the file itself, where group or others may read or write them: the store
 * holds key hashes and security events. None on Windows, where modes mean nothing, and none for a path not there.
 */
export function sharedStorePaths(filename: string, platform: NodeJS.Platform = process.platform): SharedStorePath[] {
  if (platform === 'win32') return [];
  const file = resolve(filename);
  return [
    { path: dirname(file), private: '700' },
    { path: file, private: '600' },
  ].flatMap(({ path, private: privateMode }) => {
    const mode = statSync(path, { throwIfNoEntry: false })?.mode;
    if (mode === undefined || (mode & SHARED_BITS) === 0) return [];
    return [{ path, mode: (mode & 0o7777).toString(8).padStart(4, '0'), fix: `chmod ${privateMode} ${shellWord(path)}` }];
  });
}
