import { describe } from 'vitest';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { storeContract } from './store.contract.js';

const schemas = new Map<PostgresStore, Awaited<ReturnType<typeof createTestSchema>>>();

describe.skipIf(skipWithoutPostgres)('postgres', () => {
  storeContract('postgres', {
    async create() {
      const schema = await createTestSchema();
      const store = openPostgresStore(schema.url, schema.schema);
      schemas.set(store, schema);
      return store;
    },
    async open(store) {
      const { url, schema } = schemas.get(store as PostgresStore)!;
      return openPostgresStore(url, schema);
    },
    async setSchemaVersion(store, version) {
      const { url, schema } = schemas.get(store as PostgresStore)!;
      await withAdmin((client) => client.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES ($1)`, [version]), url);
    },
    async destroy(store) {
      await store.close();
      await schemas.get(store as PostgresStore)!.drop();
      schemas.delete(store as PostgresStore);
    },
  });
});
