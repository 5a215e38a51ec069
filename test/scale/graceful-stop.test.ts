import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, http, json, rawConnection, waitFor } from '../support/gateway.js';
import { isListening } from '../support/process.js';
import { sharedStores, type ChildGateway, type SharedStore } from './support.js';

const UPSTREAM_KEY = 'braze-upstream-key-graceful-stop';
const DUPLICATE = 'POST /campaigns/duplicate';

describe.each(sharedStores)('SIGTERM on $kind', ({ open }) => {
  let shared: SharedStore;
  let fake: FakeBraze;
  let gateway: ChildGateway;

  beforeAll(async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    shared = await open();
    // Upstream mode: a job is running for as long as the fake Braze holds its call, on either store. Its deadline
    // (and the grace period that follows from it, 25 s) is far beyond what the test takes.
    [gateway] = await shared.spawn(['stopping'], {
      WORKER_CONCURRENCY: '2',
      UPSTREAM_URL: fake.url,
      UPSTREAM_API_KEY: UPSTREAM_KEY,
      UPSTREAM_TIMEOUT_MS: '20000',
    });
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
    await fake?.close();
  });

  it('stops listening, completes the request in flight, finishes running jobs, leaves the rest queued and exits 0', async () => {
    const { workspace, key } = await shared.workspace();
    const body = (name: string) => JSON.stringify({ campaign_id: fake.campaigns[0].id, name });
    const head = (length: number) =>
      `POST /campaigns/duplicate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

    // A client that has begun sending a request when the signal comes and finishes it after: its connection is
    // not idle, so it stays open, and the request arrives while the gateway is stopping.
    const late = rawConnection(gateway.baseUrl);
    late.send('POST /campaigns/duplicate HTTP/1.1\r\nHost: 127.0.0.1\r\n');

    // The first two calls to Braze are held: their jobs are running when the signal comes.
    let answerUpstream!: () => void;
    const upstreamAnswers = new Promise<void>((resolve) => (answerUpstream = resolve));
    const held = { status: 202, json: { message: 'success' }, until: upstreamAnswers };
    fake.script(DUPLICATE, held, held);
    const queued: string[] = [];
    for (let i = 0; i < 4; i += 1) {
      const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(key) }, body: body(`queued ${i}`) });
      expect(accepted.status).toBe(202);
      queued.push(accepted.body.job_id);
    }
    await waitFor(async () => fake.requestsTo(DUPLICATE).length === 2);

    // A request still being received when the signal comes: let in, its body yet to arrive.
    const inFlightBody = body('in flight');
    const inFlight = rawConnection(gateway.baseUrl);
    inFlight.send(head(inFlightBody.length) + inFlightBody.slice(0, 10));
    await waitFor(async () => gateway.logs.some((line) => line.msg === 'incoming request' && line.req?.remotePort === inFlight.socket.localPort));

    gateway.signal('SIGTERM');
    await waitFor(async () => !(await isListening(gateway.port)));
    inFlight.send(inFlightBody.slice(10));
    const lateBody = body('too late');
    late.send(`Authorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${lateBody.length}\r\n\r\n${lateBody}`);
    const refused = await late.answer;
    const accepted = await inFlight.answer;
    answerUpstream();

    // Refused in the gateway's own shape, told when to retry (elsewhere), and hung up on.
    expect(refused.head).toMatch(/^HTTP\/1\.1 503 /);
    expect(refused.head).toMatch(/^retry-after: 1\r?$/im);
    expect(refused.head).toMatch(/^connection: close\r?$/im);
    expect(refused.head).toMatch(/^x-request-id: [0-9a-f-]{36}\r?$/im);
    expect(JSON.parse(refused.body)).toEqual({ message: 'The gateway is shutting down', code: 'UNAVAILABLE' });
    // Accepted, durably, and hung up on once answered.
    expect(accepted.head).toMatch(/^HTTP\/1\.1 202 /);
    expect(accepted.head).toMatch(/^connection: close\r?$/im);
    const inFlightJob: string = JSON.parse(accepted.body).job_id;
    // Exit code 1 would mean closing outlasted the grace period (main.ts gives up then).
    expect(await gateway.exited).toEqual({ code: 0, signal: null });

    const jobs = await Promise.all([...queued, inFlightJob].map((id) => shared.store.getJob(workspace.id, id)));
    expect(jobs.filter((job) => job?.status === 'SUCCEEDED')).toHaveLength(2);
    // Everything else is back in the queue, or never left it, owned by nobody, with no attempt spent.
    for (const job of jobs.filter((job) => job?.status !== 'SUCCEEDED')) {
      expect(job).toMatchObject({ status: 'PENDING', leaseOwner: null, attempts: 0 });
    }
    expect(jobs.find((job) => job?.id === inFlightJob)).toMatchObject({ status: 'PENDING', name: 'in flight' });
    // Only the calls that were running reached Braze.
    expect(fake.requestsTo(DUPLICATE)).toHaveLength(2);
  }, 120_000);
});
