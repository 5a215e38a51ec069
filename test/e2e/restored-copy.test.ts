import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { cliProcess } from '../support/cli.js';
import { waitFor } from '../support/gateway.js';
import { spawnGateway, startFailureOf, type GatewayProcess } from '../support/process.js';
import { rest } from '../support/transports.js';

/** A store backup restored in place of the database of a real gateway process, and that gateway started on it again. */
describe('a gateway started on a restored backup', () => {
  let places: string[] = [];
  let processes: GatewayProcess[] = [];

  afterEach(() => {
    for (const gateway of processes) gateway.child.kill('SIGKILL');
    for (const place of places) rmSync(place, { recursive: true, force: true });
    places = [];
    processes = [];
  });

  /** A first start on a new data directory, with the demo workspace's key and campaign from its banner. */
  async function firstStart() {
    const parent = mkdtempSync(join(tmpdir(), 'cgw-restore-'));
    places.push(parent);
    const env = { DATA_DIR: join(parent, 'data'), DUPLICATE_RATE_LIMIT: '1000' };
    const gateway = await start(env);
    const key = /^\s+(cgw_[0-9A-Za-z]+)$/m.exec(gateway.output())![1];
    const campaignId = /"campaign_id":"([0-9a-f-]{36})"/.exec(gateway.output())![1];
    return { env, gateway, key, campaignId, file: join(env.DATA_DIR, 'gateway.db'), backup: join(parent, 'backup.db') };
  }

  async function start(env: Record<string, string>) {
    const gateway = await spawnGateway(env);
    processes.push(gateway);
    return gateway;
  }

  type Started = Awaited<ReturnType<typeof firstStart>>;

  /** Jobs accepted (202) over REST, named after `when`. */
  async function accepted({ gateway, key, campaignId }: Started, when: string): Promise<string[]> {
    const ids: string[] = [];
    for (let index = 0; index < 5; index += 1) {
      const outcome = await rest.duplicate(gateway.baseUrl, key, { campaignId, name: `${when} ${index}` });
      expect(outcome.status).toBe(202);
      ids.push(outcome.jobId!);
    }
    return ids;
  }

  /** `store backup` as an operator runs it, while the gateway runs: the restore steps it prints name the files. */
  async function backUp({ env, backup, file }: Started) {
    const { code, stdout } = await cliProcess(['store', 'backup', backup], env);
    expect(code).toBe(0);
    expect(stdout).toContain(
      `delete ${file}-wal and ${file}-shm (either may be missing), put the copy in place of ${file} and chown it to the gateway's user, ` +
        'then follow "After a restore" in the README before the gateways send jobs again',
    );
  }

  /** What a start on the copy beside the old `-wal` writes before it exits with 1: one line naming the files to delete. */
  const refusal = (file: string) =>
    `dist/main.js exited with 1 before listening:\ncampaign-gateway: failed to start: ${file} is not in WAL mode, as a restored backup is not, ` +
    `but ${file}-wal beside it holds the log of the database it replaced, which would damage it: delete ${file}-wal and ${file}-shm, then start again\n`;

  /** Deletes what the refusal names, starts the gateway, and checks the store holds what the backup held and nothing after. */
  async function restoreAsTold(started: Started, message: string, backedUp: string[], lost: string[]) {
    const [, wal, shm] = /delete (\S+) and (\S+), then start again\n$/.exec(message)!;
    rmSync(wal);
    rmSync(shm, { force: true });
    const restored = await start(started.env);
    const job = (jobId: string) => rest.job(restored.baseUrl, started.key, jobId);
    for (const jobId of backedUp) await waitFor(async () => (await job(jobId)).job?.status === 'SUCCEEDED');
    for (const jobId of lost) expect((await job(jobId)).status).toBe(404);
    restored.child.kill('SIGTERM');
    expect((await restored.exited).code).toBe(0);
    const db = new Database(started.file, { readonly: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      db.close();
    }
  }

  it('refuses to start beside the WAL of a gateway that did not stop cleanly, and once the files it names are deleted has every job accepted before the backup', async () => {
    const started = await firstStart();
    const backedUp = await accepted(started, 'before the backup');
    await backUp(started);
    const lost = await accepted(started, 'after the backup');
    started.gateway.child.kill('SIGKILL');
    await started.gateway.exited;

    // Put in place, with the old -wal and -shm left beside it.
    renameSync(started.backup, started.file);
    const copy = readFileSync(started.file);
    const message = await startFailureOf(started.env);
    expect(message).toBe(refusal(started.file));
    expect(readFileSync(started.file).equals(copy)).toBe(true);

    await restoreAsTold(started, message, backedUp, lost);
  });

  it('keeps its WAL out of a backup moved over its file while it runs, and the copy restores once that WAL is deleted', async () => {
    const started = await firstStart();
    const backedUp = await accepted(started, 'before the backup');
    await backUp(started);
    const lost = await accepted(started, 'after the backup');

    renameSync(started.backup, started.file);
    const copy = readFileSync(started.file);
    started.gateway.child.kill('SIGTERM');
    expect((await started.gateway.exited).code).toBe(0);
    // Nothing of the database it had open went into the copy when it closed: its WAL is still beside the copy.
    expect(readFileSync(started.file).equals(copy)).toBe(true);

    const message = await startFailureOf(started.env);
    expect(message).toBe(refusal(started.file));
    await restoreAsTold(started, message, backedUp, lost);
  });
});
