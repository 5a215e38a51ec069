import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
  async destroy(store) {
    await store.close();
    const filename = files.get(store as SqliteStore)!;
    files.delete(store as SqliteStore);
    rmSync(join(filename, '..'), { recursive: true, force: true });
  },
});
