import { closeSync, openSync, rmSync } from 'node:fs';
import { openConnection } from './connection.js';

/**
 * Copies the embedded store to `destination` while gateways keep using it. VACUUM INTO reads one consistent
 * snapshot (in WAL mode without holding up writers) and writes a compact database with no WAL of its own, ready
 * to be put back as the store's file. The copy holds key hashes and events, so only its owner may read it.
 */
export function backupSqliteStore(filename: string, destination: string): void {
  // VACUUM INTO takes a missing or empty file: making it here first gives it its mode and never overwrites one.
  try {
    closeSync(openSync(destination, 'wx', 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${destination} already exists: a backup never overwrites a file`);
    throw error;
  }
  const db = openConnection(filename);
  try {
    db.prepare('VACUUM INTO ?').run(destination);
  } catch (error) {
    rmSync(destination, { force: true });
    throw error;
  } finally {
    db.close();
  }
}
