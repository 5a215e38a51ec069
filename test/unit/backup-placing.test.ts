import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { putInPlace } from '../../src/adapters/sqlite/backup.js';

/** What link(2) answers on a file system that has no hard links (FAT, some network shares). */
const noLinks = (): never => {
  throw Object.assign(new Error('operation not permitted, link'), { code: 'EPERM' });
};

describe('a written backup put in place', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const written = () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-backup-place-'));
    const partial = join(dir, 'backup.db.partial-0a1b2c3d');
    writeFileSync(partial, 'the copy');
    return { partial, destination: join(dir, 'backup.db') };
  };

  it('is linked to its name where the file system has links, and renamed where it has none', () => {
    for (const link of [undefined, noLinks]) {
      const { partial, destination } = written();
      putInPlace(partial, destination, link);
      expect(readFileSync(destination, 'utf8')).toBe('the copy');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('never replaces a file made at its name meanwhile, with links or without', () => {
    for (const link of [undefined, noLinks]) {
      const { partial, destination } = written();
      writeFileSync(destination, 'made meanwhile');
      expect(() => putInPlace(partial, destination, link)).toThrow(`${destination} already exists: a backup never overwrites a file`);
      expect(readFileSync(destination, 'utf8')).toBe('made meanwhile');
      expect(existsSync(partial)).toBe(true);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
