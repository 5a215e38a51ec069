import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { http, startGateway, type TestGateway } from '../support/gateway.js';

describe('/readyz', () => {
  let gateway: TestGateway | undefined;
  const dirs: string[] = [];

  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('reports each dependency of the embedded default', async () => {
    gateway = await startGateway();
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      status: 'ready',
      checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } },
    });
  });

  it('answers 503 and names the dependency that is down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-ready-'));
    dirs.push(dir);
    const store = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await store.migrate();
    gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store });
    await store.close();
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(response.status).toBe(503);
    expect(response.body).toMatchObject({
      status: 'not ready',
      message: expect.stringMatching(/^store: failing/),
      checks: { store: { status: 'down' }, quota: { status: 'up' } },
    });
  });
});
