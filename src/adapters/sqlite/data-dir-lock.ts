import { chmodSync, closeSync, constants, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';

/** The file in DATA_DIR that a running gateway holds locked. */
export const lockFile = (dataDir: string): string => join(dataDir, 'gateway.lock');

/** DATA_DIR is held by another gateway process (or by another store of this one). */
export class DataDirHeld extends Error {
  constructor(
    readonly dataDir: string,
    readonly file: string,
  ) {
    super(
      `another gateway process uses DATA_DIR ${dataDir} (it holds ${file}): stop it first, or give this one a DATA_DIR of its own ` +
        '(instances that share a store run on DATABASE_URL)',
    );
  }
}

/**
 * Holds `dataDir` for one gateway process, or throws DataDirHeld when another holds it. Two gateways on one embedded
 * store keep jobs consistent, but each keeps its own quota and upstream pace in memory, so the limits would silently
 * be per process. The lock is SQLite's exclusive lock (an OS record lock) on a file of its own, taken by a
 * transaction left open: the OS lets it go when the process ends, however it ends, so a crash leaves nothing to clean
 * up. The store's own files are not locked: the CLI keeps using them while the gateway runs.
 */
export function holdDataDir(dataDir: string): { release(): void } {
  const file = lockFile(dataDir);
  // Made here for its mode, only when missing: closing a descriptor of the file would drop every lock this process
  // holds on it (POSIX record locks), a gateway's in this same process included.
  try {
    closeSync(openSync(file, constants.O_RDONLY | constants.O_CREAT | constants.O_EXCL, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    keepPrivate(file);
  }
  // No busy timeout: waiting is whenDataDirFree's, which lets the event loop run meanwhile.
  const db = new Database(file, { timeout: 0 });
  try {
    // The transaction writes nothing, so it needs no journal; on disk, one would sit beside the lock while the gateway
    // runs and after it is killed. (OFF is refused by better-sqlite3's defensive mode.)
    db.pragma('journal_mode = MEMORY');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
    throw new DataDirHeld(dataDir, file);
  }
  return { release: () => db.close() };
}

/**
 * An existing lock file made 0600 when this process owns it (one copied with `cp` is 0644): a local user who can open
 * it can take a shared lock on it, and no gateway starts while one is held. By its path, for the reason above: no
 * descriptor of it may be closed. One owned by another user is left to the start-up warning (sharedStorePaths).
 */
function keepPrivate(file: string): void {
  const stats = statSync(file);
  if (stats.uid === process.getuid?.() && (stats.mode & 0o077) !== 0) chmodSync(file, 0o600);
}

/** How often a start that finds DATA_DIR held tries again. */
const RETRY_MS = 100;

/**
 * `open()`, which holds DATA_DIR (holdDataDir), tried again while another process holds it, for up to `waitMs`: a
 * replacement started while the old gateway drains and stops (a rolling restart, an orchestrator that overlaps old
 * and new) starts once the old one is gone, instead of failing into a restart back-off. `onWait` is told once, when
 * the first try finds it held. After `waitMs`, the last refusal is thrown.
 */
export async function whenDataDirFree<T>(open: () => T, waitMs: number, onWait: (message: string) => void): Promise<T> {
  const deadline = performance.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      return open();
    } catch (error) {
      if (!(error instanceof DataDirHeld) || performance.now() >= deadline) throw error;
      if (!told) onWait(`another gateway process holds DATA_DIR ${error.dataDir} (${error.file}): waiting up to ${Math.ceil(waitMs / 1000)} s for it to exit`);
      told = true;
    }
    await delay(RETRY_MS);
  }
}
