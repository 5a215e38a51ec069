import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnGateway, startFailureOf, type GatewayProcess } from '../support/process.js';

const { TEST_REDIS_URL } = process.env;

/** A production start as a container makes it: configuration from the environment only. */
describe('a production start and its environment', () => {
  const dirs: string[] = [];
  const running: GatewayProcess[] = [];
  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-env-'));
    dirs.push(dir);
    return dir;
  };

  afterEach(async () => {
    for (const gateway of running.splice(0)) {
      gateway.child.kill('SIGKILL');
      await gateway.exited;
    }
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses DATABASE_URL set but empty, naming it, in one line and with exit code 1', async () => {
    const failure = await startFailureOf({ NODE_ENV: 'production', DATA_DIR: dataDir(), DATABASE_URL: '' });
    expect(failure).toMatch(/exited with 1 before listening:\ncampaign-gateway: invalid configuration: DATABASE_URL is set but empty: give it a URL, or unset it to run on the embedded SQLite store\n$/);
  });

  it('warns once of a misspelled variable without its value, and names the store and the quota backend it runs on', async () => {
    const gateway = await spawnGateway({ NODE_ENV: 'production', DATA_DIR: dataDir(), DATABSE_URL: 'postgres://gateway:hunter2-secret@db/gateway' });
    running.push(gateway);
    expect(gateway.logs.filter((line) => line.level >= 40)).toEqual([
      expect.objectContaining({
        level: 40,
        variables: { DATABSE_URL: 'DATABASE_URL' },
        msg: 'the gateway reads no variable named DATABSE_URL (did you mean DATABASE_URL?): it is ignored',
      }),
    ]);
    expect(gateway.output()).not.toContain('hunter2');
    expect(gateway.logs.find((line) => line.msg === 'campaign-gateway is listening')).toMatchObject({ store: 'sqlite', quota: 'memory' });
  });

  it.skipIf(!TEST_REDIS_URL && !process.env.CI)('names Redis as the quota backend when REDIS_URL is set', async () => {
    const gateway = await spawnGateway({ NODE_ENV: 'production', DATA_DIR: dataDir(), REDIS_URL: TEST_REDIS_URL!, REDIS_KEY_PREFIX: 'start-config-test' });
    running.push(gateway);
    expect(gateway.logs.find((line) => line.msg === 'campaign-gateway is listening')).toMatchObject({ store: 'sqlite', quota: 'redis' });
  });

  it('writes each line\'s time as epoch milliseconds by default, and as ISO 8601 with LOG_TIME=iso', async () => {
    const times: Record<string, unknown> = {};
    for (const logTime of ['', 'iso']) {
      const gateway = await spawnGateway({ NODE_ENV: 'production', DATA_DIR: dataDir(), LOG_TIME: logTime });
      running.push(gateway);
      times[logTime || 'default'] = gateway.logs.find((line) => line.msg === 'campaign-gateway is listening')!.time;
    }
    expect(times.default).toEqual(expect.any(Number));
    expect(new Date(times.default as number).getUTCFullYear()).toBeGreaterThanOrEqual(2024);
    expect(times.iso).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  it('refuses a LOG_TIME it does not know, in one line', async () => {
    const failure = await startFailureOf({ NODE_ENV: 'production', DATA_DIR: dataDir(), LOG_TIME: 'rfc3339' });
    expect(failure).toMatch(/exited with 1 before listening:\ncampaign-gateway: invalid configuration: LOG_TIME must be one of epoch, iso, got 'rfc3339'\n$/);
  });
});
