/**
 * Every store the gateway runs on, for suites that run against each: its name, whether it is skipped here (its
 * service is missing outside CI; in CI a missing service fails the suite instead), a fresh migrated store of the
 * kind, and a gateway started on one.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, type AppOverrides } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { startGateway, type StartOptions, type TestGateway } from './gateway.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres } from './postgres.js';

export interface StoreKind {
  name: 'SQLite' | 'PostgreSQL';
  /** True when its service is missing outside CI. */
  skip: boolean;
  /** A fresh, migrated store of this kind; `drop` removes what it made (close the store first). */
  open(): Promise<{ store: GatewayStore; drop(): Promise<void> }>;
  /** startGateway (test/support/gateway.ts) on a fresh store of this kind; its close() removes the store too. */
  startGateway(env?: Record<string, string>, overrides?: Omit<AppOverrides, 'store'>, options?: StartOptions): Promise<TestGateway>;
}

export const sqlite: StoreKind = {
  name: 'SQLite',
  skip: false,
  async open() {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-store-'));
    const store = await createStore(loadConfig({ DATA_DIR: dir }), { olderSchema: 'upgrade' });
    return { store, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  },
  startGateway,
};

export const postgres = {
  name: 'PostgreSQL',
  skip: skipWithoutPostgres,
  async open(): Promise<{ store: PostgresStore; drop(): Promise<void> }> {
    const schema = await createTestSchema();
    const store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    return { store, drop: schema.drop };
  },
  async startGateway(env: Record<string, string> = {}, overrides: Omit<AppOverrides, 'store'> = {}, options: StartOptions = {}): Promise<TestGateway> {
    const { store, drop } = await postgres.open();
    let gateway: TestGateway;
    try {
      gateway = await startGateway(env, { ...overrides, store: options.wrapStore ? options.wrapStore(store) : store }, { tuned: options.tuned });
    } catch (error) {
      // The gateway closes a store it was given only once it has started.
      await store.close();
      await drop();
      throw error;
    }
    return {
      ...gateway,
      async close() {
        await gateway.close();
        await drop();
      },
    };
  },
} satisfies StoreKind;

export const STORES: readonly StoreKind[] = [sqlite, postgres];
