import { chmodSync, chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedStorePaths, writeRefusal } from '../../src/adapters/sqlite/file-modes.js';
import { componentLines, recordingLogger, startGateway } from '../support/gateway.js';

// Inside a directory of the test's own (mode 0700), so that opening the data directory up exposes nothing.
const root = mkdtempSync(join(tmpdir(), 'cgw-modes-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const modeOf = (path: string) => statSync(path).mode & 0o777;

/** Starts and stops a gateway on `dataDir`; what its store logged at warn level and above. */
async function startUpWarnings(dataDir: string): Promise<Record<string, any>[]> {
  const { logger, lines } = recordingLogger('warn');
  const gateway = await startGateway({ DATA_DIR: dataDir }, { logger });
  await gateway.close();
  return componentLines(lines, 'store');
}

describe.skipIf(process.platform === 'win32')('the modes of DATA_DIR and its database file', () => {
  it('are 0700 and 0600 when the gateway makes them, and nothing is said', async () => {
    const dataDir = join(root, 'fresh', 'data');
    expect(await startUpWarnings(dataDir)).toEqual([]);
    expect(modeOf(dataDir)).toBe(0o700);
    expect(modeOf(join(dataDir, 'gateway.db'))).toBe(0o600);
    expect(modeOf(join(dataDir, 'gateway.lock'))).toBe(0o600);
  });

  /** A DATA_DIR a gateway made, then opened to others (0755) with its lock file too (0644), as `cp` leaves a copy. */
  async function openedLock(name: string) {
    const dataDir = join(root, name);
    const lock = join(dataDir, 'gateway.lock');
    await startUpWarnings(dataDir);
    chmodSync(dataDir, 0o755);
    chmodSync(lock, 0o644);
    const openDir = { path: dataDir, mode: '0755', fix: `chmod 700 ${dataDir}` };
    return { dataDir, lock, openDir, openLock: { path: lock, mode: '0644', fix: `chmod 600 ${lock}` } };
  }

  it('makes its own lock file 0600 again: others who may open it may lock it, and no gateway would start', async () => {
    const { dataDir, lock, openDir, openLock } = await openedLock('copied-lock');
    expect(sharedStorePaths(join(dataDir, 'gateway.db'))).toEqual([openDir, openLock]);

    expect((await startUpWarnings(dataDir)).map((warning) => warning.paths)).toEqual([[openDir]]);
    expect(modeOf(lock)).toBe(0o600);
  });

  it.skipIf(process.getuid?.() !== 0)('names a lock file of another owner that others may open, and leaves it as it is', async () => {
    const { dataDir, lock, openDir, openLock } = await openedLock('foreign-lock');
    chownSync(lock, 65534, 65534);

    expect((await startUpWarnings(dataDir)).map((warning) => warning.paths)).toEqual([[openDir, openLock]]);
    expect(modeOf(lock)).toBe(0o644);
  });

  it('are kept when other users may read them (an older layout), with one warning that names each path, its mode and the fix', async () => {
    const dataDir = join(root, 'older');
    const file = join(dataDir, 'gateway.db');
    await startUpWarnings(dataDir);
    chmodSync(dataDir, 0o755);
    chmodSync(file, 0o644);

    const warnings = await startUpWarnings(dataDir);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].level).toBe(40);
    expect(warnings[0].paths).toEqual([
      { path: dataDir, mode: '0755', fix: `chmod 700 ${dataDir}` },
      { path: file, mode: '0644', fix: `chmod 600 ${file}` },
    ]);
    expect(warnings[0].msg).toContain(`${dataDir} is mode 0755 (chmod 700 ${dataDir})`);
    expect(warnings[0].msg).toContain(`${file} is mode 0644 (chmod 600 ${file})`);
    expect([modeOf(dataDir), modeOf(file)]).toEqual([0o755, 0o644]);
    // Modes mean nothing on Windows: nothing to say there.
    expect(sharedStorePaths(file, 'win32')).toEqual([]);

    chmodSync(dataDir, 0o750);
    chmodSync(file, 0o600);
    expect((await startUpWarnings(dataDir)).map((warning) => warning.paths)).toEqual([[{ path: dataDir, mode: '0750', fix: `chmod 700 ${dataDir}` }]]);

    // A directory others may not pass through keeps a readable file from them: nothing to say about either.
    chmodSync(dataDir, 0o700);
    chmodSync(file, 0o644);
    expect(await startUpWarnings(dataDir)).toEqual([]);

    // Others may not list the directory, but may open a file whose name they know.
    chmodSync(dataDir, 0o711);
    expect((await startUpWarnings(dataDir)).map((warning) => warning.paths)).toEqual([
      [
        { path: dataDir, mode: '0711', fix: `chmod 700 ${dataDir}` },
        { path: file, mode: '0644', fix: `chmod 600 ${file}` },
      ],
    ]);

    chmodSync(dataDir, 0o700);
    chmodSync(file, 0o600);
    expect(await startUpWarnings(dataDir)).toEqual([]);
  });
});

describe.skipIf(process.platform === 'win32')('the advice for a store path this process may not write', () => {
  // Constructed, so that each kind of advice is checked whoever runs the tests (root gets no chown/chmod advice from the OS).
  const uid = process.getuid!();
  const stats = (owner: number, mode: number, directory = false) => ({ uid: owner, mode, isDirectory: () => directory });
  const path = '/srv/gateway data/gateway.db';

  it('is chown and chmod for a file of another owner without the owner write bit, in that order', () => {
    expect(writeRefusal(path, stats(uid + 1, 0o100400), 'EACCES')).toBe(`chown ${uid} '${path}' && chmod u+w '${path}'`);
    expect(writeRefusal(path, stats(uid + 1, 0o100600), 'EACCES')).toBe(`chown ${uid} '${path}'`);
    expect(writeRefusal(path, stats(uid, 0o100400), 'EACCES')).toBe(`chmod u+w '${path}'`);
    // A directory is written through its entries: it needs the search bit too.
    expect(writeRefusal('/srv/data', stats(uid, 0o40500, true), 'EACCES')).toBe('chmod u+wx /srv/data');
    // Its own, writable by its mode, and still refused (an ACL, a security module): nothing to name.
    expect(writeRefusal(path, stats(uid, 0o100600), 'EACCES')).toBe('let this process write it');
  });

  it('is chattr for a file the OS refuses whatever its mode (immutable or append-only)', () => {
    expect(writeRefusal(path, stats(uid + 1, 0o100400), 'EPERM')).toBe(`immutable or append-only; chattr -i -a '${path}'`);
  });

  it('is a remount for a read-only file system', () => {
    expect(writeRefusal(path, stats(uid + 1, 0o100400), 'EROFS')).toBe('a read-only file system; remount it read-write');
  });
});
