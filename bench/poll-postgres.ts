import { parseArgs } from 'node:util';
import { PostgresStore } from '../src/adapters/postgres/store.js';
import { AdminService } from '../src/domain/admin.js';
import { PERMISSIONS } from '../src/domain/permissions.js';
import { systemClock } from '../src/domain/ports.js';
import { createTestSchema } from '../test/support/postgres.js';
import { runLoad } from './lib/load.js';
import { startGateway, stop } from './lib/processes.js';
import { isJobPolled, pollJob } from './lib/scenarios.js';

/**
 * The poll-job scenario of bench/profile.ts on a PostgreSQL store: a gateway process on a schema of its own in
 * TEST_DATABASE_URL, polled for jobs picked at random among finished ones, two events each.
 * `TEST_DATABASE_URL=… npx tsx bench/poll-postgres.ts --seconds 8 --connections 50`; `--read-budget 0` polls without the
 * read budget, which is otherwise taken (raised) as the gateway takes it.
 */
const JOBS = 5_000;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '8' }, connections: { type: 'string', default: '50' }, 'read-budget': { type: 'string', default: '1000000000' } },
  });
  const schema = await createTestSchema();
  const databaseUrl = `${schema.url}${schema.url.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema.schema}`;
  const store = new PostgresStore({ connectionString: databaseUrl });
  try {
    await store.migrate();
    const admin = new AdminService(store, systemClock);
    const workspace = await admin.createWorkspace('bench');
    const campaign = await admin.addCampaign(workspace.id, { name: 'Welcome', description: null, tagNames: ['promo'], body: { channels: ['email'] } });
    const { key, record } = await admin.createKey({ workspace: workspace.id, name: 'bench', permissions: [...PERMISSIONS] });
    const jobId = `('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))`;
    await store.pool.query(
      `INSERT INTO jobs (id, workspace_id, status, source_campaign_id, name, tag_names, channel, api_key_id, api_key_name, ip, attempts, run_at, created_at, updated_at, finished_at)
       SELECT ${jobId}, $1, 'SUCCEEDED', $2, 'Copy ' || i, '["promo"]', 'REST', $3, 'bench', '127.0.0.1', 1, now(), now(), now(), now() FROM generate_series(0, $4::int - 1) AS i`,
      [workspace.id, campaign.id, record.id, JOBS],
    );
    await store.pool.query(
      `INSERT INTO security_events (id, workspace_id, type, occurred_at, api_key_id, api_key_name, channel, ip, job_id, campaign_id, details)
       SELECT gen_random_uuid()::text, $1, t.type, now(), $3, 'bench', 'REST', '127.0.0.1', ${jobId}, $2, '{}'
       FROM generate_series(0, $4::int - 1) AS i CROSS JOIN (VALUES ('CAMPAIGN_DUPLICATION_REQUESTED', 0), ('CAMPAIGN_DUPLICATED', 1)) AS t (type, o) ORDER BY i, t.o`,
      [workspace.id, campaign.id, record.id, JOBS],
    );
    await store.pool.query('ANALYZE');
    const gateway = await startGateway('/nonexistent', { DATABASE_URL: databaseUrl, WORKER_CONCURRENCY: '0', READ_BUDGET_PER_MINUTE: values['read-budget'] });
    try {
      const result = await runLoad({
        url: gateway.baseUrl,
        connections: Number(values.connections),
        durationSeconds: Number(values.seconds),
        requests: [pollJob({ workspaceId: workspace.id, key, keyId: record.id, campaignId: campaign.id }, JOBS)],
        verifyBody: isJobPolled,
        serverPid: gateway.child.pid,
      });
      process.stdout.write(`poll-job on PostgreSQL: ${result.requestsPerSecond} req/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, server CPU ${result.cpuMicrosPerRequest.server} µs/req\n`);
    } finally {
      await stop(gateway);
    }
  } finally {
    await store.close();
    await schema.drop();
  }
}

await main();
