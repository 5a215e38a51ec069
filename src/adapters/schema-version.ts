import type { NewerSchema, OlderSchema } from '../domain/ports.js';

/** A store refused for the version of its schema, not for a failure of the database holding it. */
export class SchemaVersionRefusal extends Error {}

/**
 * Why a store refuses a database a newer gateway has migrated: this version would misread what that one
 * wrote (a new event type, a new column it never fills), and carry on as if all were well.
 */
export const newerSchema = (database: string, found: number, known: number): Error =>
  new SchemaVersionRefusal(`${updatedBy(database, found, known)}. Run that version, or restore the backup taken before the upgrade; downgrading is not supported`);

const updatedBy = (database: string, found: number, known: number): string =>
  `${database} has schema version ${found}, newer than this gateway's ${known}: a newer campaign-gateway has updated it`;

/**
 * Why a store opened without upgrading refuses a database an older gateway left: upgrading is for the gateway
 * of this version as it starts, once the older ones are stopped and the store is backed up.
 */
export const olderSchema = (database: string, found: number, known: number): Error =>
  new SchemaVersionRefusal(
    `${database} is at schema version ${found} and this version needs ${known}: back it up, then start this version's gateway, ` +
      'which upgrades it (see "Upgrading" in the README). It was left as it is',
  );

/**
 * Why a store refuses a database that claims schema version `version` but lacks what its migrations make
 * (`missing`, such as `column jobs.waiting`, `index jobs_turn`), and what to do about it (`remedy`).
 */
export const incompleteSchema = (database: string, version: number, missing: string[], remedy: string): Error =>
  new SchemaVersionRefusal(
    `${database} is at schema version ${version} but lacks ${missing.join(', ')}: ` +
      `it was changed by hand or made by an early development version of the gateway. ${remedy}`,
  );

/**
 * The refusal, if any, of a database at schema version `found` by code that knows `known` versions. Version 0
 * is a store with no schema yet: making it is no upgrade, so it is never refused as older.
 */
export function schemaRefusal(database: string, found: number, known: number, older: OlderSchema): Error | null {
  if (found > known) return newerSchema(database, found, known);
  if (found > 0 && found < known && older === 'refuse') return olderSchema(database, found, known);
  return null;
}

/**
 * What a running gateway says once a newer one has migrated its store under it (a rolling upgrade): null while
 * `found` is at most `known`.
 */
export function migratedUnder(database: string, found: number, known: number): NewerSchema | null {
  if (found <= known) return null;
  return {
    found,
    known,
    message:
      `${updatedBy(database, found, known)} since this one started. ` +
      'This instance is not ready and claims no jobs; replace it with the newer version (see "Upgrading" in the README)',
  };
}
