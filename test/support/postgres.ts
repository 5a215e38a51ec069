import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { PostgresStore } from '../../src/adapters/postgres/store.js';

/** The PostgreSQL the suites use; when it is missing they skip, except under CI where they fail. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;
export const skipWithoutPostgres = !TEST_DATABASE_URL && !process.env.CI;

function requireUrl(): string {
  if (!TEST_DATABASE_URL) throw new Error('TEST_DATABASE_URL is not set');
  return TEST_DATABASE_URL;
}

export async function withAdmin<T>(work: (client: pg.Client) => Promise<T>, url = requireUrl()): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${randomUUID().replace(/-/g, '').slice(0, 12)}`;

/** A fresh, empty schema in the test database; the store keeps its tables there. */
export async function createTestSchema(): Promise<{ url: string; schema: string; drop(): Promise<void> }> {
  const url = requireUrl();
  const schema = uniqueName('cgw_test');
  await withAdmin((client) => client.query(`CREATE SCHEMA ${schema}`));
  return { url, schema, drop: () => withAdmin((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)).then(() => undefined) };
}

/** A fresh, empty database on the test server, for suites whose gateways run as separate processes. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const base = requireUrl();
  const name = uniqueName('cgw_test');
  await withAdmin((client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => withAdmin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

/** A store that keeps the job queue's time by the times its calls give, as the store contract drives them. */
export const openPostgresStore = (url: string, schema?: string) => new PostgresStore({ connectionString: url, schema, poolSize: 4, jobTime: 'caller' });

/** The SQL of the README's "PostgreSQL roles", for `runtime` in `schema` of `database`, the tables owned by `owner`. */
export function readmeGrants(names: { runtime: string; owner: string; schema: string; database: string; password: string }): string {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('### PostgreSQL roles'));
  // The block that grants the runtime role; the one before it makes the database, its owner and the schema.
  const sql = [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((block) => block[1]).find((block) => block.includes('CREATE ROLE gateway_app'))!;
  return sql
    .replace(/'change me'/g, `'${names.password}'`)
    .replace(/\bgateway_app\b/g, names.runtime)
    .replace(/\bgateway_owner\b/g, names.owner)
    .replace(/\bSCHEMA app\b/g, `SCHEMA ${names.schema}`)
    .replace(/search_path = app\b/g, `search_path = ${names.schema}`)
    .replace(/\bDATABASE gateway\b/g, `DATABASE ${names.database}`);
}
