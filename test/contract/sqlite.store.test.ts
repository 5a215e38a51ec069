import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { storeContract } from './store.contract.js';

const files = new Map<SqliteStore, string>();

storeContract('sqlite', {
  async create() {
    const filename = join(mkdtempSync(join(tmpdir(), 'cgw-store-')), 'gateway.db');
    const store = new SqliteStore({ filename });
    files.set(store, filename);
    return store;
  },
  async open(store) {
    return new SqliteStore({ filename: files.get(store as SqliteStore)! });
  },
  async setSchemaVersion(store, version) {
    const db = new Database(files.get(store as SqliteStore)!);
    db.pragma(`user_version = ${version}`);
    db.close();
  },
  async rowsNaming(store, ids) {
    const db = new Database(files.get(store as SqliteStore)!, { readonly: true });
    try {
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").pluck().all() as string[];
      return Object.fromEntries(
        tables.map((table) => {
          const columns = db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all(table) as string[];
          const naming = columns.flatMap((column) => ids.map(() => `instr(CAST("${column}" AS TEXT), ?) > 0`)).join(' OR ');
          const params = columns.flatMap(() => ids);
          return [table, Number(db.prepare(`SELECT count(*) FROM "${table}" WHERE ${naming}`).pluck().get(...params))];
        }),
      );
    } finally {
      db.close();
    }
  },
  async destroy(store) {
    await store.close();
    const filename = files.get(store as SqliteStore)!;
    files.delete(store as SqliteStore);
    rmSync(join(filename, '..'), { recursive: true, force: true });
  },
});
