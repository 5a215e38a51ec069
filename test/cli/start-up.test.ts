import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';

const RECORD_IMPORTS = fileURLToPath(new URL('./fixtures/record-imports.mjs', import.meta.url));

/** What only the gateway's HTTP side uses: loading it would double every command's start-up time. */
const SERVER_ONLY_PACKAGES = ['fastify', '@apollo/server', '@as-integrations/fastify', 'type-graphql', 'graphql', 'graphql-scalars', 'prom-client', 'graphiql'];

describe("the CLI's start-up", () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-cli-start-up-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the store and the limiters, not the HTTP server or GraphQL', async () => {
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
    expect(SERVER_ONLY_PACKAGES.filter((name) => packages.has(name))).toEqual([]);
  });
});
