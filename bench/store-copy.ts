/**
 * How fast `store copy` moves an embedded store into PostgreSQL, and the most memory it takes: a store of one
 * workspace with `jobs` finished jobs, two events each (seeded straight into SQLite, as bench/lib/store.ts does), copied
 * by the CLI as an operator runs it, under /usr/bin/time for its peak RSS, into a new database made for each run.
 *
 *   npx tsx bench/store-copy.ts --postgres postgres://… [--jobs 100000] [--runs 3] [--dir /tmp/cgw-store-copy]
 *
 * The store is made once in `dir` and reused by later runs (delete it to make it again).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { databaseFile, prepareWorkspace, seedFinishedJobs } from './lib/store.js';

const { values } = parseArgs({
  options: {
    postgres: { type: 'string' },
    jobs: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/tmp/cgw-store-copy' },
  },
});
if (!values.postgres) throw new Error('--postgres <URL of a database whose role may create databases> is required');
const dataDir = values.dir!;
if (!existsSync(databaseFile(dataDir))) {
  mkdirSync(dataDir, { recursive: true });
  const workspace = await prepareWorkspace(dataDir, 'bench');
  seedFinishedJobs(dataDir, workspace, 0, Number(values.jobs));
}

const admin = async (text: string) => {
  const client = new pg.Client({ connectionString: values.postgres });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
};

for (let run = 1; run <= Number(values.runs); run += 1) {
  const name = `cgw_store_copy_${process.pid}_${run}`;
  await admin(`CREATE DATABASE ${name}`);
  try {
    const url = new URL(values.postgres);
    url.pathname = `/${name}`;
    const copy = spawnSync('/usr/bin/time', ['-f', 'peak RSS %M KiB, %e s elapsed', 'node', '--import', 'tsx', 'src/cli/main.ts', 'store', 'copy', '--to', url.toString(), '--json'], {
      env: { ...process.env, DATA_DIR: dataDir },
      encoding: 'utf8',
    });
    if (copy.status !== 0) throw new Error(`the copy failed: ${copy.stderr}`);
    const summary = JSON.parse(copy.stdout);
    const rows = Object.values(summary.copied as Record<string, number>).reduce((sum, count) => sum + count, 0);
    const [, rss, elapsed] = /peak RSS (\d+) KiB, ([\d.]+) s elapsed/.exec(copy.stderr) ?? [];
    console.log(`run ${run}: ${rows} rows in ${summary.seconds} s, ${Math.round(rows / summary.seconds)} rows/s, peak RSS ${Math.round(Number(rss) / 1024)} MiB, ${elapsed} s for the whole command`);
  } finally {
    await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
}
