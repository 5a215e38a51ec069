import pg from 'pg';

/**
 * Holds table locks in an open transaction on a connection of its own. With `campaigns` locked, workers
 * claim jobs but cannot write their copies, so jobs stay RUNNING for as long as the test needs them to.
 */
export async function holdLocks(url: string, tables: string[]): Promise<{ lock(table: string): Promise<void>; release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('BEGIN');
  const lock = async (table: string) => {
    await client.query(`LOCK TABLE ${table} IN EXCLUSIVE MODE`);
  };
  for (const table of tables) await lock(table);
  return {
    lock,
    async release() {
      await client.query('COMMIT');
      await client.end();
    },
  };
}

/**
 * Holds the advisory lock (`key`, hashtext(`text`)) in an open transaction on a connection of its own, as an instance
 * frozen in the middle of a transaction that took it holds it.
 */
export async function holdAdvisoryLock(url: string, key: number, text: string): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url, application_name: 'lock-holder' });
  await client.connect();
  await client.query('BEGIN');
  await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [key, text]);
  return {
    async release() {
      await client.query('COMMIT');
      await client.end();
    },
  };
}
