import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, componentLines, http, json, recordingLogger, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key-obs-7c41e0';

describe('upstream mode: what an operator sees of upstream calls and the jobs they decide', () => {
  let fake: FakeBraze;
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let lines: string[];

  beforeAll(async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const recorded = recordingLogger();
    lines = recorded.lines;
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY }, { logger: recorded.logger });
    ws = await gateway.workspace();
  });
  afterAll(async () => {
    await gateway?.close();
    await fake?.close();
  });

  const enqueue = async (campaignId: string): Promise<string> => {
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: campaignId, name: 'observed copy' }),
    });
    expect(response.status).toBe(202);
    return response.body.job_id;
  };

  it('names the job in the warning about its failed upstream call, and logs the job failing for good as a warning with its error', async () => {
    const jobId = await enqueue('cmp-unknown');
    const finished = await waitFor(async () => componentLines(lines, 'worker').find((line) => line.msg === 'job finished' && line.jobId === jobId));
    expect(finished).toMatchObject({
      level: 40,
      status: 'FAILED',
      attempts: 1,
      error: { code: 'UPSTREAM_BAD_REQUEST', message: 'The upstream answered 400: Invalid campaign_id' },
    });
    const warning = componentLines(lines, 'upstream').find((line) => line.msg === 'upstream call failed');
    expect(warning).toMatchObject({ level: 40, jobId, method: 'POST', path: '/campaigns/duplicate', status: 400, error: { code: 'UPSTREAM_BAD_REQUEST' } });
  });
});
