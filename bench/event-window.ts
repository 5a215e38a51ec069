/**
 * How long `listEvents` takes on a SQLite store of 1,000,000 events (30 days of one workspace, ending an hour ago),
 * for the queries a poller and a download send. A read of the embedded store holds the event loop for as long as it
 * takes, so these times are also how long every other request waits.
 *
 *   npx tsx bench/event-window.ts [--dir /tmp/cgw-event-window] [--events 1000000] [--runs 15]
 *
 * The store is made once in `dir` (rows written straight into SQLite in one transaction) and reused by later runs.
 */
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/adapters/sqlite/store.js';
import { AdminService } from '../src/domain/admin.js';
import type { ListOptions } from '../src/domain/ports.js';
import { DOWNLOAD_BATCH_SIZE } from '../src/domain/service.js';
import type { SecurityEventFilter } from '../src/domain/types.js';
import { databaseFile } from './lib/store.js';

const { values } = parseArgs({
  options: { dir: { type: 'string', default: '/tmp/cgw-event-window' }, events: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '15' } },
});
const dir = values.dir!;
const events = Number(values.events);
const runs = Number(values.runs);
const DAY = 86_400_000;
const filename = databaseFile(dir);

/** The workspace and its key are made by the gateway's own code, stamped before the first event, as in real use. */
async function seed(): Promise<void> {
  const newest = Date.now() - 3600_000;
  const oldest = newest - 30 * DAY;
  const store = new SqliteStore({ filename });
  await store.migrate();
  const admin = new AdminService(store, { now: () => new Date(oldest - 60_000) });
  const workspace = await admin.createWorkspace('event-window');
  const { record } = await admin.createKey({ workspace: workspace.id, name: 'auditor', permissions: ['security_events.read'] });
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
      const requested = index % 2 === 0;
      insert.run(
        `event-${index}`,
        workspace.id,
        requested ? 'CAMPAIGN_DUPLICATION_REQUESTED' : 'CAMPAIGN_DUPLICATED',
        Math.round(oldest + index * step),
        record.id,
        `job-${index >> 1}`,
        JSON.stringify({ name: `Copy ${index >> 1}`, tagNames: ['promo'] }),
      );
    }
  })();
  db.prepare('CREATE TABLE event_window (workspace_id TEXT, key_id TEXT, newest INTEGER)').run();
  db.prepare('INSERT INTO event_window VALUES (?, ?, ?)').run(workspace.id, record.id, newest);
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

if (!existsSync(filename)) await seed();
const meta = new Database(filename, { readonly: true });
const seeded = meta.prepare('SELECT workspace_id AS workspaceId, key_id AS keyId, newest FROM event_window').get() as {
  workspaceId: string;
  keyId: string;
  /** When the newest event was stamped. */
  newest: number;
};
meta.close();

const store = new SqliteStore({ filename });
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
];

const median = (samples: number[]) => [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)];
console.log(`${events} events; median of ${runs} runs after one warm-up`);
for (const [name, filter, options] of cases) {
  let rows = 0;
  const samples: number[] = [];
  for (let run = 0; run <= runs; run += 1) {
    const started = performance.now();
    rows = (await store.listEvents(seeded.workspaceId, filter, options)).length;
    if (run > 0) samples.push(performance.now() - started);
    await new Promise((resolve) => setImmediate(resolve));
  }
  console.log(`${name.padEnd(44)} ${String(rows).padStart(3)} rows  ${median(samples).toFixed(2).padStart(8)} ms  (max ${Math.max(...samples).toFixed(2)} ms)`);
}
await store.close();
