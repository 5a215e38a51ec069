import { hash } from 'node:crypto';
import { configure } from 'safe-stable-stringify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { ManualClock } from '../support/clock.js';
import { startGateway, storeHeldOn, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { STORES } from '../support/stores.js';
import { transports, type DuplicateArgs, type DuplicateOutcome } from '../support/transports.js';

let gateway: TestGateway;

beforeAll(async () => {
  gateway = await startGateway({ DUPLICATE_RATE_LIMIT: '1000' });
});

afterAll(async () => {
  await gateway?.close();
});

const requested = async (team: TestWorkspace, gw: TestGateway = gateway) =>
  (await gw.app.store.listEvents(team.workspace.id, { types: ['CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 200 })).length;

const HOUR = 3600_000;

/**
 * The request hash that versions before d92c320 stored: the input as the transport hands it to the service,
 * unnormalised (both transports pass the four fields under these names).
 */
const rawInputHash = (args: DuplicateArgs): string => hash('sha256', configure({ maximumDepth: 8 })(args) ?? 'null', 'hex');

/** A store whose first enqueueJob waits, its key reserved, until release(); `reached` once it waits. */
function firstEnqueueHeld(): { wrapStore: (store: GatewayStore) => GatewayStore; reached: Promise<void>; release: () => void } {
  let arrived!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((resolve) => (arrived = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  let holding = true;
  const wrapStore = (store: GatewayStore) =>
    storeHeldOn(store, ['enqueueJob'], () => {
      if (!holding) return undefined;
      holding = false;
      arrived();
      return released;
    });
  return { wrapStore, reached, release };
}

describe.each(transports)('idempotency keys over $name', (transport) => {
  it('returns the same job for a retried request without taking a second quota point', async () => {
    const team = await gateway.workspace();
    const args = { campaignId: team.campaign.id, name: 'retried', tagNames: ['promo'] };
    const first = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'order-42' });
    const again = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'order-42' });
    expect(first.jobId).not.toBeNull();
    expect(again.jobId).toBe(first.jobId);
    expect(again.status).toBe(first.status);
    expect(again.response.headers['x-ratelimit-remaining']).toBe(first.response.headers['x-ratelimit-remaining']);
    expect(await requested(team)).toBe(1);
  });

  it("answers a repeat after the job finished with the job's status now, not the one it was accepted with", async () => {
    const team = await gateway.workspace();
    const args = { campaignId: team.campaign.id, name: 'finished' };
    const first = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'done-1' });
    await waitFor(async () => (await transport.job(gateway.baseUrl, team.key, first.jobId!)).job?.status === 'SUCCEEDED');
    const again = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'done-1' });
    expect(again.jobId).toBe(first.jobId);
    const status = transport.name === 'REST' ? again.response.body.status : again.response.body.data.duplicateCampaign.job.status;
    expect(status).toBe(transport.name === 'REST' ? 'succeeded' : 'SUCCEEDED');
  });

  it('keeps a key for IDEMPOTENCY_TTL_HOURS: the same job until then, a new job after', async () => {
    const clock = new ManualClock();
    const short = await startGateway({ IDEMPOTENCY_TTL_HOURS: '1', WORKER_CONCURRENCY: '0' }, { clock });
    try {
      const team = await short.workspace();
      const args = { campaignId: team.campaign.id, name: 'hourly report' };
      const first = await transport.duplicate(short.baseUrl, team.key, args, { idempotencyKey: 'report-1' });
      expect(first.jobId).not.toBeNull();
      clock.advance(HOUR - 1);
      expect((await transport.duplicate(short.baseUrl, team.key, args, { idempotencyKey: 'report-1' })).jobId).toBe(first.jobId);
      clock.advance(1);
      const after = await transport.duplicate(short.baseUrl, team.key, args, { idempotencyKey: 'report-1' });
      expect(after.status).toBe(first.status);
      expect(after.jobId).not.toBeNull();
      expect(after.jobId).not.toBe(first.jobId);
      expect(await requested(team, short)).toBe(2);
    } finally {
      await short.close();
    }
  });

  it('tells a repeat sent while the first request is still being accepted to come back in a second: Retry-After over REST, retryAfterSeconds over GraphQL', async () => {
    // The first request waits, its key reserved, until the repeat has been answered.
    const { wrapStore, reached, release } = firstEnqueueHeld();
    const held = await startGateway({ WORKER_CONCURRENCY: '0' }, {}, { wrapStore });
    try {
      const team = await held.workspace();
      const args = { campaignId: team.campaign.id, name: 'slow to accept' };
      const first = transport.duplicate(held.baseUrl, team.key, args, { idempotencyKey: 'in-flight' });
      await reached;
      const repeat = await transport.duplicate(held.baseUrl, team.key, args, { idempotencyKey: 'in-flight' });
      release();
      expect((await first).jobId).not.toBeNull();
      expect(repeat.jobId).toBeNull();
      expect(repeat.code).toBe('CONFLICT');
      expect(repeat.message).toMatch(/still being processed/);
      if (transport.name === 'REST') {
        expect(repeat.status).toBe(409);
        expect(repeat.response.headers['retry-after']).toBe('1');
      } else {
        expect(repeat.response.body.errors[0].extensions.retryAfterSeconds).toBe(1);
      }
    } finally {
      release();
      await held.close();
    }
  });

  it('answers a repeat sent while the first request is being accepted the same whatever its input or key', async () => {
    const { wrapStore, reached, release } = firstEnqueueHeld();
    const held = await startGateway({ WORKER_CONCURRENCY: '0' }, {}, { wrapStore });
    try {
      const team = await held.workspace();
      const other = await team.addKey(['campaigns.duplicate']);
      const args = { campaignId: team.campaign.id, name: 'being accepted' };
      const first = transport.duplicate(held.baseUrl, team.key, args, { idempotencyKey: 'in-flight' });
      await reached;
      const answers = [];
      for (const key of [team.key, other.key]) {
        for (const input of [args, { ...args, name: 'a guess' }]) answers.push(await transport.duplicate(held.baseUrl, key, input, { idempotencyKey: 'in-flight' }));
      }
      release();
      expect((await first).jobId).not.toBeNull();
      for (const answer of answers) {
        expect([answer.code, answer.message]).toEqual(['CONFLICT', expect.stringMatching(/still being processed/)]);
        expect([answer.status, answer.response.body]).toEqual([answers[0].status, answers[0].response.body]);
      }
    } finally {
      release();
      await held.close();
    }
  });

  it("answers a request that stalled past a minute after reserving its key with the job of the retry that replaced it, giving its point back", async () => {
    const clock = new ManualClock();
    // The first request stalls, its key reserved, until its retry has been accepted.
    const { wrapStore, reached, release } = firstEnqueueHeld();
    const stalled = await startGateway({ DUPLICATE_RATE_LIMIT: '3', WORKER_CONCURRENCY: '0' }, { clock }, { wrapStore });
    try {
      const team = await stalled.workspace();
      const args = { campaignId: team.campaign.id, name: 'stalled, then retried' };
      const first = transport.duplicate(stalled.baseUrl, team.key, args, { idempotencyKey: 'stalled' });
      await reached;
      clock.advance(61_000);
      const retry = await transport.duplicate(stalled.baseUrl, team.key, args, { idempotencyKey: 'stalled' });
      expect(retry.jobId).not.toBeNull();
      release();
      const late = await first;
      expect(late.jobId).toBe(retry.jobId);
      expect(late.response.headers['x-ratelimit-remaining']).toBe('2');
      expect(await requested(team, stalled)).toBe(1);
    } finally {
      release();
      await stalled.close();
    }
  });

  it('refuses the same key with a different body as CONFLICT (422 over REST), without taking a point', async () => {
    const team = await gateway.workspace();
    const first = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'one' }, { idempotencyKey: 'k' });
    const other = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'two' }, { idempotencyKey: 'k' });
    expect(other.code).toBe('CONFLICT');
    if (transport.name === 'REST') expect(other.status).toBe(422);
    expect(other.message).toMatch(/different request/);
    expect(await requested(team)).toBe(1);
    expect(other.response.headers['x-ratelimit-remaining']).toBe(first.response.headers['x-ratelimit-remaining']);
  });

  it('writes nothing for a new request once the quota is spent, and still answers a repeat of an accepted one', async () => {
    const spent = await startGateway({ DUPLICATE_RATE_LIMIT: '1', WORKER_CONCURRENCY: '0' });
    try {
      const team = await spent.workspace();
      const args = { campaignId: team.campaign.id, name: 'within the quota' };
      const accepted = await transport.duplicate(spent.baseUrl, team.key, args, { idempotencyKey: 'kept' });
      expect(accepted.jobId).not.toBeNull();
      const reserve = vi.spyOn(spent.app.store, 'reserveIdempotencyKey');
      const release = vi.spyOn(spent.app.store, 'releaseIdempotencyKey');
      for (const key of ['new-1', 'new-2', 'new-3']) {
        const refused = await transport.duplicate(spent.baseUrl, team.key, { ...args, name: key }, { idempotencyKey: key });
        expect(refused.code).toBe('RATE_LIMITED');
      }
      expect(reserve).not.toHaveBeenCalled();
      expect(release).not.toHaveBeenCalled();
      expect(await spent.app.store.findIdempotencyKey(team.workspace.id, 'new-1')).toBeNull();
      const repeat = await transport.duplicate(spent.baseUrl, team.key, args, { idempotencyKey: 'kept' });
      expect(repeat.jobId).toBe(accepted.jobId);
      expect(repeat.response.headers['x-ratelimit-remaining']).toBe('0');
    } finally {
      await spent.close();
    }
  });

  it('answers concurrent repeats of an accepted request without touching the quota, so the last point goes to new work', async () => {
    const tight = await startGateway({ DUPLICATE_RATE_LIMIT: '3', WORKER_CONCURRENCY: '0' });
    try {
      const team = await tight.workspace();
      const args = { campaignId: team.campaign.id, name: 'sent once, repeated often' };
      const accepted = await transport.duplicate(tight.baseUrl, team.key, args, { idempotencyKey: 'repeated' });
      expect((await transport.duplicate(tight.baseUrl, team.key, { ...args, name: 'spends a point' })).jobId).not.toBeNull();
      // One point left. The repeats go out first: each one that took a point, even to give it back, would starve the new request.
      const repeats = Array.from({ length: 20 }, () => transport.duplicate(tight.baseUrl, team.key, args, { idempotencyKey: 'repeated' }));
      const fresh = await transport.duplicate(tight.baseUrl, team.key, { ...args, name: 'new work' });
      for (const repeat of await Promise.all(repeats)) {
        expect(repeat.jobId).toBe(accepted.jobId);
        expect(['0', '1']).toContain(repeat.response.headers['x-ratelimit-remaining']);
      }
      expect(fresh.code).toBeNull();
      expect(fresh.jobId).not.toBeNull();
      expect(fresh.response.headers['x-ratelimit-remaining']).toBe('0');
      const afterwards = await transport.duplicate(tight.baseUrl, team.key, args, { idempotencyKey: 'repeated' });
      expect(afterwards.response.headers['x-ratelimit-remaining']).toBe('0');
      expect(await requested(team, tight)).toBe(3);
    } finally {
      await tight.close();
    }
  });

  it('takes one point for concurrent first requests with one key: one job, the others in flight, none refused for the quota', async () => {
    // The ten are let past authentication together, so that each would look the key up before any reserved it.
    let gathering = false;
    let authenticating = 0;
    let allIn!: () => void;
    const together = new Promise<void>((resolve) => (allIn = resolve));
    const tight = await startGateway({ DUPLICATE_RATE_LIMIT: '3', WORKER_CONCURRENCY: '0' }, {}, {
      wrapStore: (store) =>
        storeHeldOn(store, ['findApiKeyByHash'], () => {
          if (!gathering) return undefined;
          authenticating += 1;
          if (authenticating === 10) {
            gathering = false;
            allIn();
          }
          return together;
        }),
    });
    try {
      const team = await tight.workspace();
      const args = { campaignId: team.campaign.id, name: 'sent ten times at once' };
      gathering = true;
      const outcomes = await Promise.all(
        Array.from({ length: 10 }, () => transport.duplicate(tight.baseUrl, team.key, args, { idempotencyKey: 'first-ten' })),
      );
      expect(new Set(outcomes.map((outcome) => outcome.jobId).filter(Boolean)).size).toBe(1);
      for (const outcome of outcomes.filter((o) => o.jobId === null)) {
        expect(outcome.code).toBe('CONFLICT');
        if (transport.name === 'REST') expect(outcome.status).toBe(409);
      }
      // The ten took one point of three: the next two new requests are accepted, and only the third is refused.
      for (const name of ['new 1', 'new 2']) expect((await transport.duplicate(tight.baseUrl, team.key, { ...args, name })).jobId).not.toBeNull();
      expect((await transport.duplicate(tight.baseUrl, team.key, { ...args, name: 'new 3' })).code).toBe('RATE_LIMITED');
      expect(await requested(team, tight)).toBe(3);
    } finally {
      await tight.close();
    }
  });

  it('gives back the point of a request the store could not take, and lets its key be used again at once', async () => {
    // First the store takes the reservation, then fails the job and the release alike; then it fails the reservation.
    let failing: string[] = ['enqueueJob', 'releaseIdempotencyKey'];
    const outage = () => Promise.reject(dependencyUnavailable(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' })));
    const flaky = await startGateway({ DUPLICATE_RATE_LIMIT: '5', WORKER_CONCURRENCY: '0' }, {}, {
      wrapStore: (store) =>
        new Proxy(store, { get: (target, property) => (failing.includes(String(property)) ? outage : Reflect.get(target, property, target)) }),
    });
    try {
      const team = await flaky.workspace();
      const args = { campaignId: team.campaign.id, name: 'through an outage' };
      expect((await transport.duplicate(flaky.baseUrl, team.key, args)).code).toBe('SERVICE_UNAVAILABLE');
      for (let attempt = 0; attempt < 3; attempt += 1) {
        expect((await transport.duplicate(flaky.baseUrl, team.key, args, { idempotencyKey: 'through-it' })).code).toBe('SERVICE_UNAVAILABLE');
      }
      failing = ['reserveIdempotencyKey'];
      expect((await transport.duplicate(flaky.baseUrl, team.key, args, { idempotencyKey: 'through-it' })).code).toBe('SERVICE_UNAVAILABLE');
      failing = [];
      const accepted = await transport.duplicate(flaky.baseUrl, team.key, args, { idempotencyKey: 'through-it' });
      expect(accepted.jobId).not.toBeNull();
      expect(accepted.response.headers['x-ratelimit-remaining']).toBe('4');
    } finally {
      await flaky.close();
    }
  });

  it("keeps the point of a request refused after taking it for what it asked: only the gateway's own outage gives it back", async () => {
    const team = await gateway.workspace();
    const remaining = (outcome: DuplicateOutcome) => outcome.response.headers['x-ratelimit-remaining'];
    const unknownCampaign = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: 'no-such-campaign', name: 'n' }, { idempotencyKey: 'refused-1' });
    expect(unknownCampaign.code).toBe('BAD_USER_INPUT');
    expect(remaining(unknownCampaign)).toBe('999');
    const unknownTag = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n', tagNames: ['no-such-tag'] }, { idempotencyKey: 'refused-2' });
    expect(unknownTag.code).toBe('BAD_USER_INPUT');
    expect(remaining(unknownTag)).toBe('998');
    // Spent in the quota itself, not only in the answers.
    const accepted = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' });
    expect(accepted.jobId).not.toBeNull();
    expect(remaining(accepted)).toBe('997');
  });

  it('stores nothing for a request that failed validation', async () => {
    const team = await gateway.workspace();
    const invalid = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: '' }, { idempotencyKey: 'retry-me' });
    expect(invalid.code).toBe('BAD_USER_INPUT');
    const fixed = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'fixed' }, { idempotencyKey: 'retry-me' });
    expect(fixed.jobId).not.toBeNull();
  });

  it('never hands a key a job it could not follow: another key of the workspace gets CONFLICT unless it sees every job', async () => {
    const team = await gateway.workspace();
    const args = { campaignId: team.campaign.id, name: 'mine' };
    const original = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'shared-in-team' });
    const duplicator = await team.addKey(['campaigns.duplicate']);
    const refused = await transport.duplicate(gateway.baseUrl, duplicator.key, args, { idempotencyKey: 'shared-in-team' });
    expect(refused.code).toBe('CONFLICT');
    if (transport.name === 'REST') expect(refused.status).toBe(422);
    expect(refused.message).toMatch(/another API key/);
    expect(JSON.stringify(refused.response.body)).not.toContain(original.jobId);
    // The same answer for any other input: it cannot tell that key whether it guessed the request right.
    const guessed = await transport.duplicate(gateway.baseUrl, duplicator.key, { ...args, name: 'a guess' }, { idempotencyKey: 'shared-in-team' });
    expect([guessed.status, guessed.response.body]).toEqual([refused.status, refused.response.body]);
    const auditor = await team.addKey(['campaigns.duplicate', 'security_events.read']);
    const replayed = await transport.duplicate(gateway.baseUrl, auditor.key, args, { idempotencyKey: 'shared-in-team' });
    expect(replayed.jobId).toBe(original.jobId);
    expect((await transport.job(gateway.baseUrl, auditor.key, replayed.jobId!)).job?.id).toBe(original.jobId);
    expect(await requested(team)).toBe(1);
  });

  it.each([
    ['one tag or a list of it', { tagNames: 'promo' }, { tagNames: ['promo'] }],
    ['a null description or none', { description: null }, {}],
    ['null tags or none', { tagNames: null }, {}],
    ['a name with or without surrounding spaces', { name: ' spaced ' }, { name: 'spaced' }],
  ])('treats %s as the same request', async (_label, first, second) => {
    const team = await gateway.workspace();
    const base = { campaignId: team.campaign.id, name: 'same' };
    const original = await transport.duplicate(gateway.baseUrl, team.key, { ...base, ...first }, { idempotencyKey: 'equivalent' });
    const again = await transport.duplicate(gateway.baseUrl, team.key, { ...base, ...second }, { idempotencyKey: 'equivalent' });
    expect(original.jobId).not.toBeNull();
    expect(again.jobId).toBe(original.jobId);
  });

  it.each<[string, DuplicateArgs]>([
    // GraphQL coerces one tag to a list before the service sees it: only REST ever hashed it as a string.
    ...(transport.name === 'REST' ? [['one tag as a string', { tagNames: 'newsletter' }] as [string, DuplicateArgs]] : []),
    ['a null description', { description: null }],
    ['a name with surrounding spaces', { name: ' s3 ' }],
    ['a null description and null tags', { description: null, tagNames: null }],
  ])('replays a key an older version stored with the raw-input hash, for the same request sent again with %s', async (_label, spelling) => {
    const team = await gateway.workspace();
    const args: DuplicateArgs = { campaignId: team.campaign.id, name: 's1', ...spelling };
    // The first request is stored as an older version stored it: same port calls, the raw-input hash.
    const { store } = gateway.app;
    const reserveAsStored = store.reserveIdempotencyKey.bind(store);
    const enqueueAsStored = store.enqueueJob.bind(store);
    let normalisedHash: string | undefined;
    const reserve = vi.spyOn(store, 'reserveIdempotencyKey').mockImplementationOnce((record, staleBefore) => {
      normalisedHash = record.requestHash;
      return reserveAsStored({ ...record, requestHash: rawInputHash(args) }, staleBefore);
    });
    const enqueue = vi
      .spyOn(store, 'enqueueJob')
      .mockImplementationOnce((job, event, reservation) => enqueueAsStored(job, event, reservation && { ...reservation, requestHash: rawInputHash(args) }));
    const original = await transport
      .duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'from-before' })
      .finally(() => [reserve, enqueue].forEach((spy) => spy.mockRestore()));
    expect(original.jobId).not.toBeNull();
    expect((await gateway.app.store.findIdempotencyKey(team.workspace.id, 'from-before'))?.requestHash).toBe(rawInputHash(args));
    // The spelling matters: the current hash of this input is another one.
    expect(normalisedHash).not.toBe(rawInputHash(args));

    const again = await transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'from-before' });
    expect(again.jobId).toBe(original.jobId);
    const other = await transport.duplicate(gateway.baseUrl, team.key, { ...args, name: 's2' }, { idempotencyKey: 'from-before' });
    expect(other.code).toBe('CONFLICT');
    if (transport.name === 'REST') expect(other.status).toBe(422);
    expect(await requested(team)).toBe(1);
  });

  it('scopes keys to the workspace', async () => {
    const a = await gateway.workspace();
    const b = await gateway.workspace();
    const first = await transport.duplicate(gateway.baseUrl, a.key, { campaignId: a.campaign.id, name: 'x' }, { idempotencyKey: 'shared' });
    const second = await transport.duplicate(gateway.baseUrl, b.key, { campaignId: b.campaign.id, name: 'x' }, { idempotencyKey: 'shared' });
    expect(second.jobId).not.toBeNull();
    expect(second.jobId).not.toBe(first.jobId);
  });

  it.each([['too long', 'k'.repeat(256)], ['with a space', 'a b'], ['empty', '']])('refuses a key that is %s', async (_label, key) => {
    const team = await gateway.workspace();
    const outcome = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'x' }, { idempotencyKey: key });
    expect(outcome.code).toBe('BAD_USER_INPUT');
    // Each transport names the input where the caller put it: a REST header, a GraphQL input field.
    const problem = 'must be 1 to 255 visible ASCII characters';
    expect(outcome.details).toEqual([transport.name === 'REST' ? `'Idempotency-Key' ${problem}` : `idempotencyKey: ${problem}`]);
    expect(await requested(team)).toBe(0);
    // Refused before the quota point: the workspace's quota is shown untouched.
    expect(outcome.response.headers['x-ratelimit-limit']).toBe('1000');
    expect(outcome.response.headers['x-ratelimit-remaining']).toBe('1000');
  });

  it('refuses an API key sent as the idempotency key, which would be kept as sent', async () => {
    const team = await gateway.workspace();
    const outcome = await transport.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'x' }, { idempotencyKey: team.key });
    expect(outcome.code).toBe('BAD_USER_INPUT');
    const problem = 'must not hold an API key';
    expect(outcome.details).toEqual([transport.name === 'REST' ? `'Idempotency-Key' ${problem}` : `idempotencyKey: ${problem}`]);
    expect(await requested(team)).toBe(0);
  });

  it('creates exactly one job from 50 simultaneous requests with one key', async () => {
    const team = await gateway.workspace();
    const args = { campaignId: team.campaign.id, name: 'burst' };
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () => transport.duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'burst-1' })),
    );
    const jobIds = new Set(outcomes.map((outcome) => outcome.jobId).filter(Boolean));
    expect(jobIds.size).toBe(1);
    for (const outcome of outcomes.filter((o) => o.jobId === null)) {
      expect(outcome.code).toBe('CONFLICT');
      if (transport.name === 'REST') expect(outcome.status).toBe(409);
    }
    expect(await requested(team)).toBe(1);
  });
});

it('treats the same key and body as one request whichever transport repeats it', async () => {
  const team = await gateway.workspace();
  const args = { campaignId: team.campaign.id, name: 'either way', description: 'd', tagNames: ['promo'] };
  const viaRest = await transports[0].duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'cross' });
  const viaGraphQL = await transports[1].duplicate(gateway.baseUrl, team.key, args, { idempotencyKey: 'cross' });
  expect(viaGraphQL.jobId).toBe(viaRest.jobId);
});

describe.each(STORES.filter((store) => !store.skip))('a reservation left by a request that died, on $name', (store) => {
  const clock = new ManualClock();
  let orphaned: TestGateway;

  beforeAll(async () => {
    orphaned = await store.startGateway({ WORKER_CONCURRENCY: '0' }, { clock });
  });

  afterAll(async () => {
    await orphaned?.close();
  });

  const retryAfter = (outcome: DuplicateOutcome): number =>
    Number(outcome.status === 409 ? outcome.response.headers['retry-after'] : outcome.response.body.errors[0].extensions.retryAfterSeconds);

  it.each(transports)('tells a retry over $name to wait a second while it is young, then as long as it has lasted, never past its minute', async (transport) => {
    const team = await orphaned.workspace();
    const args = { campaignId: team.campaign.id, name: 'accepted when the gateway was killed' };
    const key = `killed-${transport.name}`;
    // What a kill between the reservation and the job's commit leaves: a reservation without a job, which no
    // instance frees on PostgreSQL.
    const reservedAt = clock.now();
    const left = { workspaceId: team.workspace.id, key, requestHash: '0'.repeat(64), jobId: null, createdAt: reservedAt, expiresAt: new Date(reservedAt.getTime() + HOUR) };
    expect(await orphaned.app.store.reserveIdempotencyKey(left, reservedAt)).toBeNull();
    const waits: number[] = [];
    for (const ageMs of [0, 9_999, 10_000, 25_400, 50_500, 59_999]) {
      clock.advance(reservedAt.getTime() + ageMs - clock.now().getTime());
      const retry = await transport.duplicate(orphaned.baseUrl, team.key, args, { idempotencyKey: key });
      expect([retry.code, retry.jobId]).toEqual(['CONFLICT', null]);
      waits.push(retryAfter(retry));
    }
    expect(waits).toEqual([1, 1, 10, 26, 10, 1]);
    clock.advance(2);
    const past = await transport.duplicate(orphaned.baseUrl, team.key, args, { idempotencyKey: key });
    expect(past.jobId).not.toBeNull();
    expect(await requested(team, orphaned)).toBe(1);
  });
});
