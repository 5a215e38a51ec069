import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { storeContract } from './store.contract.js';

const dirs = new Map<SqliteStore, string>();

storeContract('sqlite', {
  async create() {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-store-'));
    const store = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await store.migrate();
    dirs.set(store, dir);
    return store;
  },
  async destroy(store) {
    await store.close();
    rmSync(dirs.get(store as SqliteStore)!, { recursive: true, force: true });
  },
});
