import { describe, expect, it } from 'vitest';
import { AdminService } from '../../src/domain/admin.js';
import { AlreadyExistsError, GatewayError } from '../../src/domain/errors.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { workspaceFixture } from '../support/fixtures.js';
import { STORES } from '../support/stores.js';

/**
 * `store`, where another command does `meanwhile` right after the admin service has looked (`look`): two CLI runs
 * at the same moment, made to meet every time.
 */
function racing(store: GatewayStore, look: 'listWorkspaces' | 'findWorkspace', meanwhile: () => Promise<unknown>): GatewayStore {
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
