import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { decodeOffsetCursor, decodeRowCursor, encodeCursor } from '../../src/domain/cursor.js';
import { GatewayError } from '../../src/domain/errors.js';
import { KeyTurns } from '../../src/domain/idempotency.js';
import { AdminService } from '../../src/domain/admin.js';
import { LocalDuplicator } from '../../src/duplicators/local.js';
import { parseDuplicateInput, quoted } from '../../src/domain/validation.js';
import { sqlite } from '../support/stores.js';
import { campaignFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { backoffDelay, RETRY_BACKOFF } from '../../src/jobs/worker.js';

describe('duplicate input', () => {
  it('trims the name, keeps one copy of each tag, and takes one string as one tag', () => {
    expect(parseDuplicateInput({ campaignId: 'c', name: '  n  ', tagNames: ['a', ' a', 'b'] })).toEqual({
      campaignId: 'c',
      name: 'n',
      description: null,
      tagNames: ['a', 'b'],
    });
    expect(parseDuplicateInput({ campaignId: 'c', name: 'n', tagNames: 'solo' }).tagNames).toEqual(['solo']);
  });

  it.each([
    ['not an object', 'hello', 'body'],
    ['an array', [1, 2], 'body'],
    ['null', null, 'body'],
    ['a number as campaign id', { campaignId: 5, name: 'n' }, 'campaignId'],
    ['tags as an object', { campaignId: 'c', name: 'n', tagNames: { a: 1 } }, 'tagNames'],
    ['a number as description', { campaignId: 'c', name: 'n', description: 3 }, 'description'],
    ['a lone surrogate in the name', { campaignId: 'c', name: 'a\ud800b' }, 'name'],
  ])('refuses %s, naming the field', (_label, raw, field) => {
    try {
      parseDuplicateInput(raw);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(GatewayError);
      expect((error as GatewayError).code).toBe('BAD_USER_INPUT');
      expect((error as GatewayError).issues.map((issue) => issue.field)).toContain(field);
    }
  });
});

describe('a value quoted for people to read', () => {
  it.each([
    ['promo\u200B', "'promo\\u200B'"],
    ['x\u0301', "'x\\u0301'"],
    ['a\u00A0b c', "'a\\u00A0b c'"],
    ['flag\u{E0067}', "'flag\\u{E0067}'"],
    ['\uD800', "'\\uD800'"],
    ['Spring sale 🎉', "'Spring sale 🎉'"],
    ['हिंदी', "'हिंदी'"],
    ['שָׁלוֹם', "'שָׁלוֹם'"],
  ])('%j is %s: invisible characters and marks on Latin letters escaped, other scripts as written', (value, expected) => {
    expect(quoted(value)).toBe(expected);
  });

  it("escapes them in a job's unknown tag, for support to see what the job was given", async () => {
    const { store, drop } = await sqlite.open();
    try {
      const workspace = workspaceFixture();
      await store.createWorkspace(workspace);
      const campaign = campaignFixture(workspace.id);
      await store.insertCampaign(campaign);
      await store.upsertTags(workspace.id, ['promo']);
      const job = jobFixture(workspace.id, { sourceCampaignId: campaign.id, tagNames: ['promo\u200B'] });
      const result = await new LocalDuplicator(store, { now: () => new Date() }).duplicate(job);
      expect(result).toEqual({ kind: 'permanent', error: { code: 'TAG_NOT_FOUND', message: "Unknown tag 'promo\\u200B'" } });
    } finally {
      await store.close();
      await drop();
    }
  });
});

describe('campaigns an operator adds', () => {
  it('keep their name, description and tags composed (NFC), as duplications name them', async () => {
    const { store, drop } = await sqlite.open();
    try {
      const admin = new AdminService(store, { now: () => new Date() });
      const workspace = await admin.createWorkspace('composed');
      const campaign = await admin.addCampaign(workspace.id, { name: 'Cafe\u0301', description: 'cre\u0300me', tagNames: ['cafe\u0301'], body: {} });
      expect(campaign).toMatchObject({ name: 'Caf\u00e9', description: 'cr\u00e8me', tagNames: ['caf\u00e9'] });
      expect(await store.missingTags(workspace.id, ['caf\u00e9'])).toEqual([]);
    } finally {
      await store.close();
      await drop();
    }
  });
});

describe('cursors', () => {
  it('round-trip and refuse anything they did not make', () => {
    const id = '01a2263d-3fc5-75f0-af90-5fc632e1800d';
    expect(decodeRowCursor('e', encodeCursor('e', id))).toBe(id);
    expect(decodeRowCursor('e', null)).toBeUndefined();
    expect(decodeOffsetCursor('c', encodeCursor('c', 1234))).toBe(1234);
    expect(() => decodeRowCursor('e', encodeCursor('c', id))).toThrow(GatewayError);
    expect(() => decodeRowCursor('e', encodeCursor('e', 'no spaces or quotes "'))).toThrow(GatewayError);
    expect(() => decodeOffsetCursor('c', encodeCursor('c', id))).toThrow(GatewayError);
    // The sequence numbers cursors once carried are refused, not read as ids that match nothing.
    expect(() => decodeRowCursor('e', encodeCursor('e', 12))).toThrow(GatewayError);
    expect(() => decodeRowCursor('e', 'not-a-cursor')).toThrow(GatewayError);
  });
});

describe('backoff', () => {
  const options = { backoffBaseMs: 1000, backoffMaxMs: 60_000 };

  it('doubles per attempt within jitter, caps, and never undercuts the upstream', () => {
    expect(backoffDelay(1, options, 0, () => 0)).toBe(500);
    expect(backoffDelay(1, options, 0, () => 1)).toBe(1000);
    expect(backoffDelay(4, options, 0, () => 1)).toBe(8000);
    expect(backoffDelay(20, options, 0, () => 1)).toBe(60_000);
    expect(backoffDelay(1, options, 30_000, () => 1)).toBe(30_000);
  });

  it('keeps a job retrying for 4 to 9 minutes by default, so an upstream outage of minutes fails no job', () => {
    const { jobMaxAttempts } = loadConfig({});
    const waits = (jitter: number) => {
      let total = 0;
      for (let attempt = 1; attempt < jobMaxAttempts; attempt += 1) total += backoffDelay(attempt, RETRY_BACKOFF, 0, () => jitter);
      return total;
    };
    expect(waits(0)).toBeGreaterThanOrEqual(4 * 60_000);
    expect(waits(1)).toBeLessThan(9 * 60_000);
  });
});

describe('key turns', () => {
  it('gives a key to one holder at a time, in the order they asked, each end counting once', async () => {
    const turns = new KeyTurns();
    const order: string[] = [];
    const endFirst = await turns.take('k');
    const second = turns.take('k').then((end) => (order.push('second'), end));
    const third = turns.take('k').then((end) => (order.push('third'), end));
    // Another key is not held up.
    (await turns.take('other'))();
    await nextTurn();
    expect(order).toEqual([]);
    endFirst();
    const endSecond = await second;
    endFirst();
    await nextTurn();
    expect(order).toEqual(['second']);
    endSecond();
    (await third)();
    expect(order).toEqual(['second', 'third']);
  });
});
