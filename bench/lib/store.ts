import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { AdminService } from '../../src/domain/admin.js';
import { PERMISSIONS } from '../../src/domain/permissions.js';
import { systemClock } from '../../src/domain/ports.js';

/** Where the gateway keeps its SQLite file for a given DATA_DIR (see createStore in src/app.ts). */
export const databaseFile = (dataDir: string): string => join(dataDir, 'gateway.db');

export interface BenchWorkspace {
  workspaceId: string;
  key: string;
  keyId: string;
  campaignId: string;
}

/** A workspace with one campaign, its tags and an all-permissions key, made through the gateway's own code. */
export async function prepareWorkspace(dataDir: string, name: string): Promise<BenchWorkspace> {
  const store = new SqliteStore({ filename: databaseFile(dataDir) });
  try {
    await store.migrate();
    const admin = new AdminService(store, systemClock);
    const workspace = await admin.createWorkspace(name);
    await store.upsertTags(workspace.id, ['promo', 'newsletter']);
    const campaign = await admin.addCampaign(workspace.id, {
      name: 'Welcome series',
      description: 'Three onboarding emails',
      tagNames: ['onboarding', 'email'],
      body: { channels: ['email'], messages: 3, schedule: { type: 'action_based', trigger: 'sign_up' } },
    });
    const { key, record } = await admin.createKey({ workspace: workspace.id, name: 'bench', permissions: [...PERMISSIONS] });
    return { workspaceId: workspace.id, key, keyId: record.id, campaignId: campaign.id };
  } finally {
    await store.close();
  }
}

/** Seeded jobs get ids derived from their number, so a poller can name any of them without a list. */
export const seededJobId = (index: number): string => `00000000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
const seededEventId = (index: number): string => `00000000-0000-4000-9000-${index.toString(16).padStart(12, '0')}`;

function open(dataDir: string): Database.Database {
  const db = new Database(databaseFile(dataDir));
  db.pragma('busy_timeout = 10000');
  // Seeding is set-up, not what is measured: it need not wait for the disk.
  db.pragma('synchronous = OFF');
  db.pragma('cache_size = -262144');
  return db;
}

const jobColumns = `id, workspace_id, status, source_campaign_id, name, description, tag_names, channel, api_key_id,
  api_key_name, ip, attempts, run_at, created_at, updated_at, finished_at, result_campaign_id`;
const eventColumns = 'id, workspace_id, type, occurred_at, api_key_id, api_key_name, channel, ip, job_id, campaign_id, details';

/**
 * Finished jobs, each with its CAMPAIGN_DUPLICATION_REQUESTED and CAMPAIGN_DUPLICATED events, straight into
 * SQLite in one transaction: jobs number `fromJob` to `toJob - 1`, two events each.
 */
export function seedFinishedJobs(dataDir: string, workspace: BenchWorkspace, fromJob: number, toJob: number): void {
  const db = open(dataDir);
  try {
    const insertJob = db.prepare(`INSERT INTO jobs (${jobColumns}) VALUES (?, ?, 'SUCCEEDED', ?, ?, NULL, ?, 'REST', ?, 'bench', '127.0.0.1', 1, ?, ?, ?, ?, ?)`);
    const insertEvent = db.prepare(`INSERT INTO security_events (${eventColumns}) VALUES (?, ?, ?, ?, ?, 'bench', 'REST', '127.0.0.1', ?, ?, ?)`);
    const start = Date.now() - (toJob - fromJob) * 2;
    db.transaction(() => {
      for (let index = fromJob; index < toJob; index += 1) {
        const jobId = seededJobId(index);
        const name = `Copy ${index}`;
        const requestedAt = start + (index - fromJob) * 2;
        insertJob.run(jobId, workspace.workspaceId, workspace.campaignId, name, '["promo"]', workspace.keyId, requestedAt, requestedAt, requestedAt + 1, requestedAt + 1, jobId);
        insertEvent.run(seededEventId(2 * index), workspace.workspaceId, 'CAMPAIGN_DUPLICATION_REQUESTED', requestedAt, workspace.keyId, jobId, workspace.campaignId,
          JSON.stringify({ name, description: null, tagNames: ['promo'] }));
        insertEvent.run(seededEventId(2 * index + 1), workspace.workspaceId, 'CAMPAIGN_DUPLICATED', requestedAt + 1, workspace.keyId, jobId, workspace.campaignId,
          JSON.stringify({ sourceCampaignId: workspace.campaignId, resultCampaignId: jobId, name, attempts: 1 }));
      }
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}

/** Pending jobs (with their request events) as the accept path leaves them, for the worker to drain. */
export function seedPendingJobs(dataDir: string, workspace: BenchWorkspace, count: number): void {
  const db = open(dataDir);
  try {
    const insertJob = db.prepare(`INSERT INTO jobs (${jobColumns}) VALUES (?, ?, 'PENDING', ?, ?, NULL, ?, 'REST', ?, 'bench', '127.0.0.1', 0, ?, ?, ?, NULL, NULL)`);
    const insertEvent = db.prepare(`INSERT INTO security_events (${eventColumns}) VALUES (?, ?, 'CAMPAIGN_DUPLICATION_REQUESTED', ?, ?, 'bench', 'REST', '127.0.0.1', ?, ?, ?)`);
    const now = Date.now();
    db.transaction(() => {
      for (let index = 0; index < count; index += 1) {
        const jobId = seededJobId(index);
        const name = `Copy ${index}`;
        insertJob.run(jobId, workspace.workspaceId, workspace.campaignId, name, '["promo"]', workspace.keyId, now, now, now);
        insertEvent.run(seededEventId(index), workspace.workspaceId, now, workspace.keyId, jobId, workspace.campaignId,
          JSON.stringify({ name, description: null, tagNames: ['promo'] }));
      }
    })();
  } finally {
    db.close();
  }
}

/** Jobs still pending or running; cheap enough to ask often (both statuses have a partial index). */
export function unfinishedJobs(dataDir: string): number {
  const db = new Database(databaseFile(dataDir), { readonly: true });
  try {
    const row = db
      .prepare(`SELECT (SELECT COUNT(*) FROM jobs WHERE status = 'PENDING') + (SELECT COUNT(*) FROM jobs WHERE status = 'RUNNING') AS n`)
      .get() as { n: number };
    return row.n;
  } finally {
    db.close();
  }
}

export interface QueueState {
  unfinished: number;
  failed: number;
  succeeded: number;
  lastFinishedAt: number | null;
}

export function queueState(dataDir: string): QueueState {
  const db = new Database(databaseFile(dataDir), { readonly: true });
  try {
    const row = db
      .prepare(
        `SELECT SUM(status IN ('PENDING', 'RUNNING')) AS unfinished, SUM(status = 'FAILED') AS failed,
           SUM(status = 'SUCCEEDED') AS succeeded, MAX(finished_at) AS lastFinishedAt FROM jobs`,
      )
      .get() as { unfinished: number | null; failed: number | null; succeeded: number | null; lastFinishedAt: number | null };
    return { unfinished: row.unfinished ?? 0, failed: row.failed ?? 0, succeeded: row.succeeded ?? 0, lastFinishedAt: row.lastFinishedAt };
  } finally {
    db.close();
  }
}
