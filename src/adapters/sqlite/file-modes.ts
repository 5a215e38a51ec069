import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { lockFile } from './data-dir-lock.js';

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

/** Octal, as chmod takes it: `0755`. */
const octal = (mode: number): string => (mode & 0o7777).toString(8).padStart(4, '0');

const modeOf = (path: string): number | undefined => statSync(path, { throwIfNoEntry: false })?.mode;

const shared = (path: string, mode: number, privateMode: string): SharedStorePath => ({
  path,
  mode: octal(mode),
  fix: `chmod ${privateMode} ${shellWord(path)}`,
});

/**
 * The database file's directory, the file itself and the gateway's lock file, where other users of the machine
 * can reach them: the store holds key hashes and security events, and a lock file they can open they can lock,
 * which stops the gateway starting. A file counts only when the directory lets them through to it, so a file left
 * 0644 in a 0700 directory is nothing to warn about. None on Windows, where modes mean nothing, and none for a
 * path not there.
 */
export function sharedStorePaths(filename: string, platform: NodeJS.Platform = process.platform): SharedStorePath[] {
  if (platform === 'win32') return [];
  const file = resolve(filename);
  const directory = dirname(file);
  const directoryMode = modeOf(directory);
  if (directoryMode === undefined || (directoryMode & SHARED_BITS) === 0) return [];
  const reachable = [file, lockFile(directory)].flatMap((path) => {
    const mode = modeOf(path);
    return (directoryMode & TRAVERSABLE_BITS) !== 0 && mode !== undefined && (mode & FILE_SHARED_BITS) !== 0 ? [shared(path, mode, '600')] : [];
  });
  return [shared(directory, directoryMode, '700'), ...reachable];
}

/** Why the OS refused to let this process write `path`, and what to do about it. */
export function writeRefusal(path: string, stats: Pick<Stats, 'uid' | 'mode' | 'isDirectory'>, code: string | undefined): string {
  const word = shellWord(path);
  if (code === 'EROFS') return 'a read-only file system; remount it read-write';
  if (code === 'EPERM') return `immutable or append-only; chattr -i -a ${word}`;
  const uid = process.getuid?.();
  const steps = [
    ...(uid !== undefined && stats.uid !== uid ? [`chown ${uid} ${word}`] : []),
    ...((stats.mode & 0o200) === 0 ? [`chmod ${stats.isDirectory() ? 'u+wx' : 'u+w'} ${word}`] : []),
  ];
  return steps.length > 0 ? steps.join(' && ') : 'let this process write it';
}

/**
 * Throws, naming each path with its owner and mode and what to do, when this process cannot write a path of the
 * embedded store that is there: the database file's directory (SQLite makes and removes the -wal and -shm in it),
 * the file, its -wal and -shm, and `others` (the gateway's lock). SQLite opens a database file it cannot write
 * read-only without a word, and then refuses every write; and a -wal or -shm it makes takes the database file's
 * mode, so one start on a read-only file leaves them read-only for the next. The OS answers for this process
 * (modes, owner, ACLs, an immutable file, a read-only mount); for root only the last two refuse.
 */
export function assertStoreWritable(filename: string, others: string[] = []): void {
  const file = resolve(filename);
  const refused = [dirname(file), file, `${file}-wal`, `${file}-shm`, ...others].flatMap((path) => {
    const stats = statSync(path, { throwIfNoEntry: false });
    if (!stats) return [];
    try {
      accessSync(path, constants.W_OK);
      return [];
    } catch (error) {
      return [`${path} (owner uid ${stats.uid}, mode ${octal(stats.mode)}; ${writeRefusal(path, stats, (error as NodeJS.ErrnoException).code)})`];
    }
  });
  if (refused.length === 0) return;
  const uid = process.getuid?.();
  throw new Error(
    `the embedded store is not writable by this process${uid === undefined ? '' : ` (uid ${uid})`}, and SQLite would open it read-only ` +
      `and refuse every write: ${refused.join(', ')}; fix each, then start again`,
  );
}
