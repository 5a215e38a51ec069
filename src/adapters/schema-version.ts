/**
 * Why a store refuses a database a newer gateway has migrated: this version would misread what that one
 * wrote (a new event type, a new column it never fills), and carry on as if all were well.
 */
export const newerSchema = (database: string, found: number, known: number): Error =>
  new Error(
    `${database} has schema version ${found}, newer than this gateway's ${known}: a newer campaign-gateway has updated it. ` +
      'Run that version, or restore the backup taken before the upgrade; downgrading is not supported',
  );
