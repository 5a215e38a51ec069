/**
 * How long `listEvents` takes on a store of 1,000,000 events (30 days of one workspace, ending an hour ago), for the
 * queries a poller and a download send. A read of the embedded store holds the event loop for as long as it takes,
 * so on SQLite these times are also how long every other request waits. Most events are of two common types; two
 * others are rare (ten of each), as failures and refusals are. Most are caused by one key; ten, spread over the
 * 30 days, by another key, used now and then.
 *
 *   npx tsx bench/event-window.ts [--dir /tmp/cgw-event-window] [--events 1000000] [--runs 15]
 *   npx tsx bench/event-window.ts --postgres postgres://… [--schema cgw_event_window] [--busier 400000]
 *
 * The store is made once (in `dir`, or in `schema` of the PostgreSQL database; rows written straight into it) and
 * reused by later runs (delete it to make it again after a change to what this script seeds). `--busier N` adds, after the first workspace's events, N newer events of another workspace,
 * all of the two types rare in the first (a workspace under attack, refused and failing).
 */
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { PostgresStore } from '../src/adapters/postgres/store.js';
import { SqliteStore } from '../src/adapters/sqlite/store.js';
import { AdminService } from '../src/domain/admin.js';
import type { GatewayStore, ListOptions } from '../src/domain/ports.js';
import { DOWNLOAD_BATCH_SIZE } from '../src/domain/service.js';
import type { SecurityEventFilter, SecurityEventType } from '../src/domain/types.js';
import { databaseFile } from './lib/store.js';
import { printTimes, timeCalls } from './lib/timing.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/cgw-event-window' },
    postgres: { type: 'string' },
    schema: { type: 'string', default: 'cgw_event_window' },
    events: { type: 'string', default: '1000000' },
    busier: { type: 'string', default: '0' },
    runs: { type: 'string', default: '15' },
  },
});
const events = Number(values.events);
const busier = Number(values.busier);
const runs = Number(values.runs);
const DAY = 86_400_000;
const RARE: SecurityEventType[] = ['CAMPAIGN_DUPLICATION_FAILED', 'PERMISSION_DENIED'];
/** One event in this many is of each rare type, and one in this many is the occasional key's. */
const RARITY = 100_000;
/** Which event of every RARITY the occasional key causes (the rare types' are 1 and 3). */
const OCCASIONAL = 5;

interface Seeded {
  workspaceId: string;
  keyId: string;
  /** The key that caused ten of the workspace's events. */
  occasionalKeyId: string;
  /** When the newest event of the workspace was stamped. */
  newest: number;
}

/** The workspace and its keys are made by the gateway's own code, stamped before the first event, as in real use. */
async function prepare(store: GatewayStore, name: string, at: number): Promise<Omit<Seeded, 'newest'>> {
  await store.migrate();
  const admin = new AdminService(store, { now: () => new Date(at - 60_000) });
  const workspace = await admin.createWorkspace(name);
  const key = async (name: string) => (await admin.createKey({ workspace: workspace.id, name, permissions: ['security_events.read'] })).record.id;
  return { workspaceId: workspace.id, keyId: await key('auditor'), occasionalKeyId: await key('occasional') };
}

/** The type of event number `index`: alternately requested and duplicated, but for the rare ones. */
function typeOf(index: number): SecurityEventType {
  if (index % RARITY === 1) return RARE[0];
  if (index % RARITY === 3) return RARE[1];
  return index % 2 === 0 ? 'CAMPAIGN_DUPLICATION_REQUESTED' : 'CAMPAIGN_DUPLICATED';
}

async function seedSqlite(filename: string): Promise<void> {
  const newest = Date.now() - 3600_000;
  const oldest = newest - 30 * DAY;
  const store = new SqliteStore({ filename });
  const { workspaceId, keyId, occasionalKeyId } = await prepare(store, 'event-window', oldest);
  const other = busier > 0 ? await prepare(store, 'busier', oldest) : undefined;
  await store.close();
  const db = new Database(filename);
  db.pragma('synchronous = OFF');
  const insert = db.prepare(
    `INSERT INTO security_events (id, workspace_id, type, occurred_at, api_key_id, api_key_name, channel, ip, job_id, campaign_id, details)
     VALUES (?, ?, ?, ?, ?, 'auditor', 'REST', '127.0.0.1', ?, 'source', ?)`,
  );
  const step = (newest - oldest) / (events - 1);
  db.transaction(() => {
    for (let index = 0; index < events; index += 1) {
      insert.run(`event-${index}`, workspaceId, typeOf(index), Math.round(oldest + index * step), index % RARITY === OCCASIONAL ? occasionalKeyId : keyId, `job-${index >> 1}`,
        JSON.stringify({ name: `Copy ${index >> 1}`, tagNames: ['promo'] }));
    }
    for (let index = 0; index < busier; index += 1) {
      insert.run(`busier-${index}`, other!.workspaceId, RARE[index % 2], newest, other!.keyId, `busier-job-${index >> 1}`, '{}');
    }
  })();
  db.prepare('CREATE TABLE event_window (workspace_id TEXT, key_id TEXT, occasional_key_id TEXT, newest INTEGER)').run();
  db.prepare('INSERT INTO event_window VALUES (?, ?, ?, ?)').run(workspaceId, keyId, occasionalKeyId, newest);
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

async function openSqlite(): Promise<{ store: GatewayStore; seeded: Seeded }> {
  const filename = databaseFile(values.dir!);
  if (!existsSync(filename)) await seedSqlite(filename);
  const meta = new Database(filename, { readonly: true });
  const seeded = meta.prepare('SELECT workspace_id AS workspaceId, key_id AS keyId, occasional_key_id AS occasionalKeyId, newest FROM event_window').get() as Seeded;
  meta.close();
  return { store: new SqliteStore({ filename }), seeded };
}

/** The same events as seedSqlite, made by PostgreSQL itself (generate_series), then analysed as autovacuum would. */
async function openPostgres(connectionString: string): Promise<{ store: GatewayStore; seeded: Seeded }> {
  const schema = values.schema!;
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query(`SET search_path = ${schema}`);
    const made = await client.query("SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'event_window'", [schema]);
    if (made.rowCount === 0) {
      const newest = Date.now() - 3600_000;
      const oldest = newest - 30 * DAY;
      const store = new PostgresStore({ connectionString, schema });
      const { workspaceId, keyId, occasionalKeyId } = await prepare(store, 'event-window', oldest);
      const other = busier > 0 ? await prepare(store, 'busier', oldest) : undefined;
      await store.close();
      const type = `CASE WHEN i % ${RARITY} = 1 THEN '${RARE[0]}' WHEN i % ${RARITY} = 3 THEN '${RARE[1]}'
        WHEN i % 2 = 0 THEN 'CAMPAIGN_DUPLICATION_REQUESTED' ELSE 'CAMPAIGN_DUPLICATED' END`;
      const insert = `INSERT INTO security_events (id, workspace_id, type, occurred_at, api_key_id, api_key_name, channel, ip, job_id, campaign_id, details)`;
      await client.query(
        `${insert} SELECT 'event-' || i, $1, ${type}, to_timestamp(($3::float8 + i * $4::float8) / 1000),
           CASE WHEN i % ${RARITY} = ${OCCASIONAL} THEN $6 ELSE $2 END, 'auditor', 'REST', '127.0.0.1',
           'job-' || (i >> 1), 'source', jsonb_build_object('name', 'Copy ' || (i >> 1), 'tagNames', jsonb_build_array('promo'))
         FROM generate_series(0, $5::int - 1) AS i ORDER BY i`,
        [workspaceId, keyId, oldest, (newest - oldest) / (events - 1), events, occasionalKeyId],
      );
      if (other) {
        await client.query(
          `${insert} SELECT 'busier-' || i, $1, CASE WHEN i % 2 = 0 THEN $5 ELSE $6 END, to_timestamp($3::float8 / 1000), $2, 'auditor', 'REST', '127.0.0.1',
             'busier-job-' || (i >> 1), 'source', '{}'
           FROM generate_series(0, $4::int - 1) AS i ORDER BY i`,
          [other.workspaceId, other.keyId, newest, busier, ...RARE],
        );
      }
      await client.query('VACUUM ANALYZE security_events');
      await client.query('CREATE TABLE event_window (workspace_id text, key_id text, occasional_key_id text, newest bigint)');
      await client.query('INSERT INTO event_window VALUES ($1, $2, $3, $4)', [workspaceId, keyId, occasionalKeyId, newest]);
    }
    const { rows } = await client.query(
      'SELECT workspace_id AS "workspaceId", key_id AS "keyId", occasional_key_id AS "occasionalKeyId", newest FROM event_window',
    );
    return { store: new PostgresStore({ connectionString, schema, poolSize: 12 }), seeded: { ...rows[0], newest: Number(rows[0].newest) } };
  } finally {
    await client.end();
  }
}

const { store, seeded } = values.postgres ? await openPostgres(values.postgres) : await openSqlite();
const now = Date.now();
const firstOfLastDay = (await store.listEvents(seeded.workspaceId, { since: new Date(seeded.newest - DAY) }, { first: 1_000_000 })).at(-1)!;
const cases: [string, SecurityEventFilter, ListOptions][] = [
  ['first page, no filter', {}, { first: 51 }],
  ['since 1 min ago (empty)', { since: new Date(now - 60_000) }, { first: 51 }],
  ['since 1 min ago, jobId (empty)', { since: new Date(now - 60_000), jobId: 'job-3' }, { first: 51 }],
  ['since 1 min ago, apiKeyId (empty)', { since: new Date(now - 60_000), apiKeyId: seeded.keyId }, { first: 51 }],
  ['since 1 min ago, 2 types (empty)', { since: new Date(now - 60_000), types: ['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_FAILED'] }, { first: 51 }],
  ['download of tomorrow (empty)', { since: new Date(now + DAY), until: new Date(now + 2 * DAY) }, { first: DOWNLOAD_BATCH_SIZE }],
  [
    'last batch of a download of the last day',
    { since: new Date(seeded.newest - DAY), until: new Date(seeded.newest + 1) },
    { first: DOWNLOAD_BATCH_SIZE, beforeSeq: firstOfLastDay.seq + 10 },
  ],
  ['a day 10 days ago, first batch', { since: new Date(seeded.newest - 10 * DAY), until: new Date(seeded.newest - 9 * DAY) }, { first: DOWNLOAD_BATCH_SIZE }],
  ['2 rare types, first page', { types: RARE }, { first: 51 }],
  ['2 rare types, apiKeyId', { types: RARE, apiKeyId: seeded.keyId }, { first: 51 }],
  ['2 common types, first page', { types: ['CAMPAIGN_DUPLICATION_REQUESTED', 'CAMPAIGN_DUPLICATED'] }, { first: 51 }],
  ['apiKeyId, first page', { apiKeyId: seeded.keyId }, { first: 51 }],
  ['occasional key, the last 10 days', { apiKeyId: seeded.occasionalKeyId, since: new Date(seeded.newest - 10 * DAY) }, { first: 51 }],
  [
    'occasional key, 20 to 2 days ago',
    { apiKeyId: seeded.occasionalKeyId, since: new Date(seeded.newest - 20 * DAY), until: new Date(seeded.newest - 2 * DAY) },
    { first: 51 },
  ],
  ['occasional key, until 10 days ago', { apiKeyId: seeded.occasionalKeyId, until: new Date(seeded.newest - 10 * DAY) }, { first: 51 }],
  ['jobId and apiKeyId', { jobId: 'job-3', apiKeyId: seeded.keyId }, { first: 51 }],
  ['jobId, apiKeyId and one type', { jobId: 'job-3', apiKeyId: seeded.keyId, types: ['CAMPAIGN_DUPLICATED'] }, { first: 51 }],
];

console.log(`${store.kind}: ${events} events${busier > 0 ? ` and ${busier} newer of another workspace` : ''}; median of ${runs} runs after one warm-up`);
for (const [name, filter, options] of cases) await timeCalls(name, runs, () => store.listEvents(seeded.workspaceId, filter, options));
if (store.kind === 'postgres') {
  // Listings sent together share the pool (12 connections here) and the server: the slowest is what a caller waits.
  const together = 12;
  let rows = 0;
  const slowest: number[] = [];
  for (let run = 0; run <= runs; run += 1) {
    const times = await Promise.all(
      Array.from({ length: together }, async () => {
        const started = performance.now();
        rows = (await store.listEvents(seeded.workspaceId, { types: RARE }, { first: 51 })).length;
        return performance.now() - started;
      }),
    );
    if (run > 0) slowest.push(Math.max(...times));
  }
  printTimes(`${together} at once, 2 rare types (slowest)`, rows, slowest);
}
await store.close();
