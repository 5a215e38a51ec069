import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';

const RECORD_IMPORTS = fileURLToPath(new URL('./fixtures/record-imports.mjs', import.meta.url));

/**
 * What a command on the embedded store never uses: the gateway's HTTP side, which would double every command's
 * start-up time, the PostgreSQL and Redis drivers, which would add half as much again, and upstream mode's HTTP client.
 */
const UNUSED_BY_AN_EMBEDDED_STORE_COMMAND = [
  ...['fastify', '@apollo/server', '@as-integrations/fastify', 'type-graphql', 'graphql', 'graphql-scalars', 'prom-client', 'graphiql'],
  ...['pg', 'ioredis', 'undici'],
];

describe("the CLI's start-up", () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-start-up-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the embedded store and its limiters, not the HTTP server, GraphQL or the other stores\' drivers', async () => {
    const record = join(dir, 'imports.txt');
    const run = await cliProcess(['workspaces', 'create', 'acme'], {
      DATA_DIR: join(dir, 'data'),
      NODE_OPTIONS: `--import ${RECORD_IMPORTS}`,
      RECORD_IMPORTS_TO: record,
    });
    expect(run, run.stderr).toMatchObject({ code: EXIT.ok });
    const packages = new Set(
      readFileSync(record, 'utf8')
        .split('\n')
        .map((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1])
        .filter((name) => name !== undefined),
    );
    expect(packages).toContain('better-sqlite3');
    expect(UNUSED_BY_AN_EMBEDDED_STORE_COMMAND.filter((name) => packages.has(name))).toEqual([]);
  });
});
