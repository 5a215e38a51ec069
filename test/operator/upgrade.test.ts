import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { SQLITE_MIGRATIONS } from '../../src/adapters/sqlite/migrations.js';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { startFailureOf } from '../support/process.js';

describe('starting on a store a newer gateway has migrated', () => {
  let dir: string;

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stops before listening, with one line naming the file and both schema versions', async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upgrade-'));
    const file = join(dir, 'gateway.db');
    const store = new SqliteStore({ filename: file });
    await store.migrate();
    await store.close();
    const database = new Database(file);
    database.pragma(`user_version = ${SQLITE_MIGRATIONS.length + 1}`);
    database.close();

    const failure = await startFailureOf({ DATA_DIR: dir, SEED_DEMO: 'false' });

    const [exit, line, ...rest] = failure.split('\n');
    expect(exit).toBe('src/main.ts exited with 1 before listening:');
    expect(line).toContain(
      `campaign-gateway: failed to start: the SQLite database ${file} has schema version ${SQLITE_MIGRATIONS.length + 1}, newer than this gateway's ${SQLITE_MIGRATIONS.length}`,
    );
    expect(line).toContain('downgrading is not supported');
    expect(rest).toEqual(['']);
  });
});
