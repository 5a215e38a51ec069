/**
 * How long `listCampaigns` takes on PostgreSQL for a workspace whose campaigns share the table with another, busier
 * workspace's newer ones: the `campaigns` query's first page and the pages after a cursor. Every duplication makes a
 * campaign, so a workspace duplicating at its quota makes 144,000 a day.
 *
 *   npx tsx bench/campaign-list.ts --postgres postgres://… [--schema cgw_campaign_list] [--campaigns 1000000] [--busier 400000] [--runs 15]
 *
 * The store is made once in `schema` (rows written straight into it, then analysed as autovacuum would) and reused
 * by later runs; drop the schema to make it again. The workspace has `campaigns` campaigns, then the busier one
 * `busier` newer ones, then the workspace 20 newest: its first page reaches past the busier workspace's campaigns.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { PostgresStore } from '../src/adapters/postgres/store.js';
import { AdminService } from '../src/domain/admin.js';
import { timeCalls } from './lib/timing.js';

const { values } = parseArgs({
  options: {
    postgres: { type: 'string' },
    schema: { type: 'string', default: 'cgw_campaign_list' },
    campaigns: { type: 'string', default: '1000000' },
    busier: { type: 'string', default: '400000' },
    runs: { type: 'string', default: '15' },
  },
});
if (values.postgres === undefined) throw new Error('--postgres URL is required');
const [connectionString, schema, runs] = [values.postgres, values.schema!, Number(values.runs)];
const RECENT = 20;

async function seed(client: pg.Client): Promise<void> {
  const store = new PostgresStore({ connectionString, schema });
  await store.migrate();
  const admin = new AdminService(store, { now: () => new Date() });
  const quiet = await admin.createWorkspace('campaign-list');
  const busy = await admin.createWorkspace('busier');
  await store.close();
  const insert = (workspaceId: string, prefix: string, count: number) =>
    client.query(
      `INSERT INTO campaigns (id, workspace_id, name, description, tag_names, draft, body, created_at, updated_at, duplicated_from)
       SELECT $2 || i, $1, 'Copy ' || i, 'for the EU', '["promo"]', true, '{"channels": ["email"], "messages": 3}', now(), now(), 'source'
       FROM generate_series(1, $3::int) AS i ORDER BY i`,
      [workspaceId, prefix, count],
    );
  await insert(quiet.id, 'campaign-', Number(values.campaigns));
  await insert(busy.id, 'busier-', Number(values.busier));
  await insert(quiet.id, 'recent-', RECENT);
  await client.query('VACUUM ANALYZE campaigns');
}

const client = new pg.Client({ connectionString });
await client.connect();
let workspaces: Record<string, string>;
let older: number;
try {
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await client.query(`SET search_path = ${schema}`);
  const made = await client.query("SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'workspaces'", [schema]);
  if (made.rowCount === 0) await seed(client);
  const { rows } = await client.query('SELECT id, name FROM workspaces');
  workspaces = Object.fromEntries(rows.map((row) => [row.name, row.id]));
  const { rows: counts } = await client.query('SELECT workspace_id, count(*) FROM campaigns GROUP BY workspace_id');
  const count = (name: string) => Number(counts.find((row) => row.workspace_id === workspaces[name])?.count);
  older = count('campaign-list') - RECENT;
  console.log(`postgres: ${count('campaign-list')} campaigns and ${count('busier')} of a busier workspace; median of ${runs} runs after one warm-up`);
} finally {
  await client.end();
}

const store = new PostgresStore({ connectionString, schema });
const [quiet, busy] = [workspaces['campaign-list'], workspaces.busier];
const cases: [string, string, { first: number; beforeId?: string }][] = [
  ['first page', quiet, { first: 51 }],
  ['after the 10th newest (a cursor)', quiet, { first: 51, beforeId: `recent-${RECENT - 9}` }],
  ['after an older one (a cursor)', quiet, { first: 51, beforeId: `campaign-${Math.ceil(older / 2)}` }],
  ['the busier workspace, first page', busy, { first: 51 }],
];
for (const [name, workspaceId, options] of cases) await timeCalls(name, runs, () => store.listCampaigns(workspaceId, options));
await store.close();
