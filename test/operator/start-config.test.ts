import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnGateway, startFailureOf, type GatewayProcess } from '../support/process.js';

const { TEST_REDIS_URL } = process.env;
const NOBODY = { uid: 65534, gid: 65534 };

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

  /** A file holding `contents` in a directory of its own, readable by anyone unless `mode` says otherwise. */
  const secretFile = (contents: string, mode = 0o644) => {
    const dir = dataDir();
    // The directory open to all, so that the file's own mode is what lets its reader in or not.
    chmodSync(dir, 0o755);
    const path = join(dir, 'secret');
    writeFileSync(path, contents);
    chmodSync(path, mode);
    return path;
  };

  it.skipIf(!TEST_REDIS_URL && !process.env.CI)('takes REDIS_URL from the file REDIS_URL_FILE names, and does not take that name for a misspelling', async () => {
    const gateway = await spawnGateway({
      NODE_ENV: 'production',
      DATA_DIR: dataDir(),
      REDIS_URL_FILE: secretFile(`${TEST_REDIS_URL!}\n`),
      REDIS_KEY_PREFIX: 'start-config-test',
    });
    running.push(gateway);
    expect(gateway.logs.find((line) => line.msg === 'campaign-gateway is listening')).toMatchObject({ store: 'sqlite', quota: 'redis' });
    expect(gateway.logs.filter((line) => line.level >= 40)).toEqual([]);
    expect(gateway.output()).not.toContain(TEST_REDIS_URL!);
  });

  it('refuses a secret given both in a variable and in a file, naming both variables and neither value', async () => {
    const path = secretFile('braze-key-in-file\n');
    const failure = await startFailureOf({
      NODE_ENV: 'production',
      DATA_DIR: dataDir(),
      UPSTREAM_URL: 'https://rest.iad-01.braze.com',
      UPSTREAM_API_KEY: 'braze-key-in-env',
      UPSTREAM_API_KEY_FILE: path,
    });
    expect(failure).toMatch(
      /exited with 1 before listening:\ncampaign-gateway: invalid configuration: UPSTREAM_API_KEY_FILE and UPSTREAM_API_KEY are both set: give the value in one of them only\n$/,
    );
    expect(failure).not.toContain('braze-key-in');
  });

  it('refuses a secret file its user may not read, naming the file and the error code and not what it holds', async () => {
    // Modes do not bind root: as root, the gateway runs as nobody, for whom the root-owned file is unreadable.
    const asRoot = process.getuid!() === 0;
    const path = secretFile('postgres://gateway:hunter2-secret@db/gateway\n', 0o600);
    const failure = await startFailureOf({ NODE_ENV: 'production', DATA_DIR: dataDir(), DATABASE_URL_FILE: path }, asRoot ? { user: NOBODY } : {});
    expect(failure).toMatch(/exited with 1 before listening:\ncampaign-gateway: /);
    expect(failure.endsWith(`campaign-gateway: invalid configuration: DATABASE_URL_FILE names a file that cannot be read: ${path} (EACCES)\n`)).toBe(true);
    expect(failure).not.toContain('hunter2');
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
