import { describe, expect, it } from 'vitest';
import { AdminService, ROTATION_ATTEMPTS, type RotatedKey } from '../../src/domain/admin.js';
import { AlreadyExistsError, GatewayError } from '../../src/domain/errors.js';
import { hashApiKey } from '../../src/domain/keys.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { workspaceFixture } from '../support/fixtures.js';
import { STORES } from '../support/stores.js';
import { rest } from '../support/transports.js';

/**
 * `store`, where another command does `meanwhile` right after the admin service has looked (`look`): two CLI runs
 * at the same moment, made to meet every time.
 */
function racing(store: GatewayStore, look: 'listWorkspaces' | 'findWorkspace' | 'findApiKey', meanwhile: () => Promise<unknown>): GatewayStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property !== look) return typeof value === 'function' ? value.bind(target) : value;
      return async (...args: unknown[]) => {
        const seen = await value.apply(target, args);
        await meanwhile();
        return seen;
      };
    },
  });
}

const refusal = async (work: Promise<unknown>) => {
  const error = await work.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(GatewayError);
  // AlreadyExistsError is what the CLI's --json calls ALREADY_EXISTS.
  return { code: error instanceof AlreadyExistsError ? 'ALREADY_EXISTS' : (error as GatewayError).code, message: (error as GatewayError).message };
};

describe.each(STORES)('the admin service racing another command, on $name', ({ skip, open }) => {
  it.skipIf(skip)('refuses a workspace made meanwhile as one that exists, and a key of one deleted meanwhile, or its second deletion, as no workspace', async () => {
    const { store, drop } = await open();
    try {
      const clock = { now: () => new Date() };
      const admin = (racer: GatewayStore) => new AdminService(racer, clock);
      const made = admin(racing(store, 'listWorkspaces', () => store.createWorkspace({ ...workspaceFixture(), name: 'acme' })));
      // The words and code of the command that finds the name taken before it tries.
      expect(await refusal(made.createWorkspace('acme'))).toEqual({ code: 'ALREADY_EXISTS', message: "Workspace 'acme' already exists" });
      expect(await refusal(admin(store).createWorkspace('acme'))).toEqual({ code: 'ALREADY_EXISTS', message: "Workspace 'acme' already exists" });

      const doomed = await admin(store).createWorkspace('doomed');
      const deleted = admin(racing(store, 'findWorkspace', () => store.deleteWorkspace(doomed.id, new Date())));
      const key = { workspace: 'doomed', name: 'ci', permissions: ['campaigns.list'] };
      expect(await refusal(deleted.createKey(key))).toEqual({ code: 'NOT_FOUND', message: "No workspace 'doomed'" });
      expect(await refusal(admin(store).createKey(key))).toEqual({ code: 'NOT_FOUND', message: "No workspace 'doomed'" });
      expect(await store.listApiKeys()).toEqual([]);

      // Two `workspaces delete` at once: the one that finds the workspace gone in its transaction deleted nothing.
      const twice = await admin(store).createWorkspace('twice');
      const erased = admin(racing(store, 'findWorkspace', () => store.deleteWorkspace(twice.id, new Date())));
      expect(await refusal(erased.deleteWorkspace('twice', 'twice'))).toEqual({ code: 'NOT_FOUND', message: "No workspace 'twice'" });
      expect(await refusal(admin(store).deleteWorkspace('twice', 'twice'))).toEqual({ code: 'NOT_FOUND', message: "No workspace 'twice'" });
    } finally {
      await store.close();
      await drop();
    }
  });
});

describe.each(STORES)('rotations of one key at the same moment, on $name', ({ skip, startGateway }) => {
  it.skipIf(skip)('each say what they replaced, in the order they committed, and leave one earlier secret working', async () => {
    const gw = await startGateway({ WORKER_CONCURRENCY: '0', DUPLICATE_RATE_LIMIT: '10000' });
    try {
      const ws = await gw.workspace('rotated at once', ['campaigns.duplicate']);
      const status = async (key: string) => (await rest.duplicate(gw.baseUrl, key, { campaignId: ws.campaign.id, name: 'Copy' })).status;
      const RACING = 6;
      const rotations = await Promise.all(
        Array.from({ length: RACING }, (_, index) => gw.app.admin.rotateKey(ws.keyId, 3600_000, { reason: `rotation ${index}` })),
      );

      // Oldest first: the order the rotations committed in.
      const events = (await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: ws.keyId, types: ['API_KEY_ROTATED'] }, { first: 20 })).reverse();
      expect(events).toHaveLength(RACING);
      const committed = events.map((event) => rotations[Number(/^rotation (\d+)$/.exec(String(event.details.reason))![1])]);
      expect(new Set(committed).size).toBe(RACING);
      const iso = (at: Date | null) => at?.toISOString() ?? null;
      committed.forEach((rotation: RotatedKey, index) => {
        const before = committed[index - 1];
        expect(rotation.record.previousHash).toBe(before ? before.record.hash : hashApiKey(ws.key));
        expect(rotation.record.previousHashExpiresAt).toEqual(rotation.previousValidUntil);
        expect(rotation.cutShortUntil).toEqual(before ? before.previousValidUntil : null);
        expect(events[index].details.previousValidUntil).toBe(iso(rotation.previousValidUntil));
        expect(events[index].details.earlierSecretCutShortFrom).toBe(before ? iso(before.previousValidUntil) : undefined);
      });

      const [last, previous] = [committed[RACING - 1], committed[RACING - 2]];
      expect(await gw.app.store.findApiKey(ws.keyId)).toMatchObject({
        hash: last.record.hash,
        previousHash: previous.record.hash,
        previousHashExpiresAt: last.previousValidUntil,
      });
      expect(await status(last.key)).toBe(202);
      expect(await status(previous.key)).toBe(202);
      for (const replaced of [ws.key, ...committed.slice(0, -2).map((rotation) => rotation.key)]) expect(await status(replaced)).toBe(401);
    } finally {
      await gw.close();
    }
  });

  it.skipIf(skip)('refuses a rotation that another rotation beats every time it tries, changing nothing and claiming nothing', async () => {
    const gw = await startGateway({ WORKER_CONCURRENCY: '0' });
    try {
      const ws = await gw.workspace('rotated meanwhile', ['campaigns.duplicate']);
      const { store } = gw.app;
      const clock = { now: () => new Date() };
      const beaten = new AdminService(
        racing(store, 'findApiKey', () => new AdminService(store, clock).rotateKey(ws.keyId, 60_000, { reason: 'meanwhile' })),
        clock,
      );
      expect(await refusal(beaten.rotateKey(ws.keyId, 3600_000, { reason: 'beaten' }))).toEqual({
        code: 'UNAVAILABLE',
        message: `Key '${ws.keyId}' was rotated by other commands each of the ${ROTATION_ATTEMPTS} times this rotation tried: it changed nothing; try again`,
      });
      // One rotation meanwhile per attempt, and one more on the read after the last, which tells a revocation from a rotation.
      const events = await store.listEvents(ws.workspace.id, { apiKeyId: ws.keyId, types: ['API_KEY_ROTATED'] }, { first: 20 });
      expect(events.map((event) => event.details.reason)).toEqual(Array.from({ length: ROTATION_ATTEMPTS + 1 }, () => 'meanwhile'));

      // Beaten by rotations, then by a revocation on its last attempt: refused as a revoked key.
      const revokedLast = await ws.addKey(['campaigns.duplicate'], 'revoked on the last attempt');
      let reads = 0;
      const revoked = new AdminService(
        racing(store, 'findApiKey', () =>
          ++reads < ROTATION_ATTEMPTS ? new AdminService(store, clock).rotateKey(revokedLast.keyId) : new AdminService(store, clock).revokeKey(revokedLast.keyId),
        ),
        clock,
      );
      expect(await refusal(revoked.rotateKey(revokedLast.keyId, 3600_000))).toEqual({
        code: 'BAD_USER_INPUT',
        message: `Key '${revokedLast.keyId}' is revoked; create a new one`,
      });
    } finally {
      await gw.close();
    }
  });
});
