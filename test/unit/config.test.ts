import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, SECRET_VARIABLES } from '../../src/config.js';

describe('configuration', () => {
  it('starts on port 4000 of 127.0.0.1 with a quota of 100 a minute when no variable is set', () => {
    expect(loadConfig({})).toMatchObject({ port: 4000, host: '127.0.0.1', duplicateRateLimit: 100, duplicateRateWindowSeconds: 60 });
  });

  it.each([
    ['PORT', '70000', 'must be a whole number from 0 to 65535'],
    ['DUPLICATE_RATE_LIMIT', '0', 'must be a whole number from 1 to 1000000000'],
    ['GRAPHQL_EXPLORER', 'maybe', 'must be true or false'],
  ])('stops start-up on %s=%s with a ConfigError naming the variable, what it takes and the value', (name, value, takes) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(`invalid configuration: ${name} ${takes}, got '${value}'`);
  });

  it('stops start-up on a DATABASE_URL that is not PostgreSQL', () => {
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow('invalid configuration: DATABASE_URL must start with postgres:// or postgresql://');
  });

  it.each([
    ['DATABASE_URL', '', 'the embedded SQLite store'],
    ['REDIS_URL', ' \n', 'limits kept in this process or the database'],
  ])('stops a production start on %s set but empty, naming it, and leaves it to fall back elsewhere', (name, value, fallback) => {
    expect(() => loadConfig({ NODE_ENV: 'production', [name]: value })).toThrow(
      `invalid configuration: ${name} is set but empty: give it a URL, or unset it to run on ${fallback}`,
    );
    expect(loadConfig({ NODE_ENV: 'development', [name]: value })).toMatchObject({ databaseUrl: null, redisUrl: null });
    expect(loadConfig({ NODE_ENV: 'production' })).toMatchObject({ databaseUrl: null, redisUrl: null });
  });

  it("names the variables that look like misspellings of the gateway's own, and nothing else a container has", () => {
    const env = {
      DATABSE_URL: 'postgres://gateway:secret@db/gateway',
      log_level: 'debug',
      REDIS_URI: 'redis://cache',
      SHUTDOWN_GRACE_SECOND: '20',
      HOST: '0.0.0.0',
      HOSTNAME: 'gateway-7d9f-abcde',
      HOME: '/home/node',
      PATH: '/usr/local/bin:/usr/bin',
      PWD: '/app',
      TERM: 'xterm',
      NODE_OPTIONS: '--max-old-space-size=384',
      NODE_VERSION: '20.18.0',
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_PORT: 'tcp://10.96.0.1:443',
      DATABASE_HOST: 'db',
      DATABASE_USER: 'gateway',
      REDIS_PORT: 'tcp://10.96.0.7:6379',
      REDIS_SERVICE_HOST: '10.96.0.7',
      GATEWAY_OPERATOR: 'alice',
    };
    expect(loadConfig(env).misspelledVariables).toEqual([
      { name: 'DATABSE_URL', meant: 'DATABASE_URL' },
      { name: 'log_level', meant: 'LOG_LEVEL' },
      { name: 'REDIS_URI', meant: 'REDIS_URL' },
      { name: 'SHUTDOWN_GRACE_SECOND', meant: 'SHUTDOWN_GRACE_SECONDS' },
    ]);
    expect(loadConfig({}).misspelledVariables).toEqual([]);
  });
});

describe("the README's configuration table", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  // Thousands are written 65,535 in the table and 65535 in the refusal.
  const rows = new Map(
    [...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| [^|]+ \| ([^|]+) \|/gm)].map(([, variable, allowed]) => [variable, allowed.trim().replace(/(\d),(?=\d{3})/g, '$1')]),
  );
  const source = readFileSync(new URL('../../src/config.ts', import.meta.url), 'utf8');
  const variables = [
    ...new Set([...source.matchAll(/\benv(?:\.|, ')([A-Z][A-Z0-9_]+)/g)].map((match) => match[1])),
    ...SECRET_VARIABLES.map((name) => `${name}_FILE`),
  ];

  it('lists every variable the configuration reads, and no other', () => {
    expect([...rows.keys()].sort()).toEqual(variables.sort());
  });

  it("gives each whole number the range the configuration allows, read from the configuration's own refusal", () => {
    const ranges: string[] = [];
    for (const variable of variables) {
      // The longest timeout, so that a bound that follows it is at its widest.
      const refusal = (() => {
        try {
          loadConfig({ UPSTREAM_TIMEOUT_MS: '600000', [variable]: 'not a number' });
          return '';
        } catch (error) {
          return (error as Error).message;
        }
      })();
      const range = /must be a whole number from (\d+) to (\d+)/.exec(refusal);
      if (!range) {
        expect(rows.get(variable), variable).not.toMatch(/^\d+ to \d+/);
        continue;
      }
      ranges.push(variable);
      expect(rows.get(variable), variable).toMatch(new RegExp(`^${range[1]} to ${range[2]}(;|,|$)`));
    }
    expect(ranges).toEqual(expect.arrayContaining(['PORT', 'IDEMPOTENCY_TTL_HOURS', 'UPSTREAM_CONNECT_TIMEOUT_MS', 'DOWNLOAD_CONCURRENCY_PER_WORKSPACE']));
  });
});

describe('listening configuration', () => {
  it.each(['127.0.0.1', '0.0.0.0', '::', '::1', 'fe80::1%eth0', 'localhost', 'gateway-1.internal', ' 10.0.0.5 '])('listens on HOST=%j', (value) => {
    expect(loadConfig({ HOST: value }).host).toBe(value.trim());
  });

  it.each(['0.0.0.0:4000', 'localhost:4000', 'http://0.0.0.0', '[::1]', '10.0.0.256', '127.1', 'gate_way', 'a b'])(
    'stops start-up on HOST=%j with one line naming it and the value',
    (value) => {
      expect(() => loadConfig({ HOST: value })).toThrow(
        `invalid configuration: HOST must be an IP address or a host name, without a port or a scheme, got '${value}'`,
      );
    },
  );

  it.each([
    ['INFO', 'info'],
    ['Debug', 'debug'],
    [' warn ', 'warn'],
  ])('takes LOG_LEVEL=%j in any case, as LOG_FORMAT and NODE_ENV', (value, level) => {
    expect(loadConfig({ LOG_LEVEL: value }).logLevel).toBe(level);
  });

  it('writes epoch milliseconds unless LOG_TIME says iso, in any case', () => {
    expect(loadConfig({}).logTime).toBe('epoch');
    expect(loadConfig({ LOG_TIME: ' ISO ' }).logTime).toBe('iso');
    expect(loadConfig({ LOG_TIME: 'epoch' }).logTime).toBe('epoch');
  });

  it.each([
    ['LOG_LEVEL', 'loud', 'fatal, error, warn, info, debug, trace, silent'],
    ['LOG_FORMAT', 'xml', 'auto, json, pretty'],
    ['DATABASE_POOL_MODE', 'statement', 'session, transaction'],
    ['LOG_TIME', 'rfc3339', 'epoch, iso'],
  ])('says which %s it got when it is none it knows', (name, value, known) => {
    expect(() => loadConfig({ [name]: value })).toThrow(`invalid configuration: ${name} must be one of ${known}, got '${value}'`);
  });
});

describe('secrets from files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-secrets-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  /** A file holding `contents`, as a mounted Docker or Kubernetes secret is. */
  const secretFile = (name: string, contents: string) => {
    const path = join(dir, name);
    writeFileSync(path, contents);
    return path;
  };
  const refusal = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as Error).message;
    }
    throw new Error('the configuration was taken');
  };

  it('takes each secret from the file its _FILE variable names, without the trailing newline', () => {
    const config = loadConfig({
      DATABASE_URL_FILE: secretFile('database-url', 'postgres://gateway:s3cret@db/gateway\n'),
      REDIS_URL_FILE: secretFile('redis-url', 'rediss://:r3dis@cache:6380/2\r\n'),
      UPSTREAM_URL: 'https://rest.iad-01.braze.com',
      UPSTREAM_API_KEY_FILE: secretFile('braze-key', 'braze-key-123\n\n'),
    });
    expect(config).toMatchObject({
      databaseUrl: 'postgres://gateway:s3cret@db/gateway',
      redisUrl: 'rediss://:r3dis@cache:6380/2',
      upstreamApiKey: 'braze-key-123',
    });
    expect(config.misspelledVariables).toEqual([]);
  });

  it('stops start-up when a secret is given both ways, naming both variables and neither value', () => {
    const message = refusal({ REDIS_URL: 'redis://:in-env@cache', REDIS_URL_FILE: secretFile('both', 'redis://:in-file@cache\n') });
    expect(message).toBe('invalid configuration: REDIS_URL_FILE and REDIS_URL are both set: give the value in one of them only');
  });

  it('takes the file when the variable itself is set but empty, as an unset one, in production too', () => {
    const path = secretFile('over-empty', 'postgres://gateway:s3cret@db/gateway\n');
    expect(loadConfig({ NODE_ENV: 'production', DATABASE_URL: '', DATABASE_URL_FILE: path }).databaseUrl).toBe('postgres://gateway:s3cret@db/gateway');
  });

  it('stops start-up on a file that cannot be read, naming the file and the error code', () => {
    const missing = join(dir, 'missing');
    expect(refusal({ DATABASE_URL_FILE: missing })).toBe(`invalid configuration: DATABASE_URL_FILE names a file that cannot be read: ${missing} (ENOENT)`);
    const directory = join(dir, 'a-directory');
    mkdirSync(directory);
    expect(refusal({ UPSTREAM_API_KEY_FILE: directory })).toBe(
      `invalid configuration: UPSTREAM_API_KEY_FILE names a file that cannot be read: ${directory} (EISDIR)`,
    );
  });

  it.each(['', '\n', ' \n\n'])('stops start-up on a file holding %j, naming the file', (contents) => {
    const path = secretFile('empty', contents);
    expect(refusal({ REDIS_URL_FILE: path })).toBe(`invalid configuration: REDIS_URL_FILE names an empty file: ${path}`);
  });

  it("refuses a file's value as it does the variable's, saying where it came from and not what it holds", () => {
    const message = refusal({ DATABASE_URL_FILE: secretFile('mysql', 'mysql://gateway:s3cret@db/gateway\n') });
    expect(message).toBe('invalid configuration: DATABASE_URL (read from the file in DATABASE_URL_FILE) must start with postgres:// or postgresql://');
  });

  it.each(['braze✓key', 'braze key', 'braze\u0000key'])('refuses an UPSTREAM_API_KEY no HTTP header can carry (%j), without repeating it', (key) => {
    const expected = 'invalid configuration: UPSTREAM_API_KEY must be visible ASCII characters only, with no space: it is sent in an HTTP header';
    expect(refusal({ UPSTREAM_URL: 'https://rest.iad-01.braze.com', UPSTREAM_API_KEY: key })).toBe(expected);
    expect(refusal({ UPSTREAM_URL: 'https://rest.iad-01.braze.com', UPSTREAM_API_KEY_FILE: secretFile('odd-key', `${key}\n`) })).toBe(
      expected.replace('UPSTREAM_API_KEY', 'UPSTREAM_API_KEY (read from the file in UPSTREAM_API_KEY_FILE)'),
    );
  });

  it('stops a production start on a _FILE variable set but empty, as on the variable itself', () => {
    expect(refusal({ NODE_ENV: 'production', DATABASE_URL_FILE: '' })).toBe(
      "invalid configuration: DATABASE_URL_FILE is set but empty: give it the path of a file holding the URL, or unset it to run on the embedded SQLite store",
    );
    expect(loadConfig({ NODE_ENV: 'development', DATABASE_URL_FILE: ' ' }).databaseUrl).toBeNull();
  });

  it('does not take the _FILE variables for misspellings, and names a misspelling of one', () => {
    const path = secretFile('key', 'braze-key-123\n');
    expect(loadConfig({ UPSTREAM_API_KEY_FILE: path, REDIS_URL_FILE: '' }).misspelledVariables).toEqual([]);
    expect(loadConfig({ DATABASE_URL_FIEL: path }).misspelledVariables).toEqual([{ name: 'DATABASE_URL_FIEL', meant: 'DATABASE_URL_FILE' }]);
  });
});

describe('REDIS_KEY_PREFIX', () => {
  it('is empty unless set, keeping the key names of earlier versions', () => {
    expect(loadConfig({}).redisKeyPrefix).toBe('');
    expect(loadConfig({ REDIS_KEY_PREFIX: ' ' }).redisKeyPrefix).toBe('');
  });

  it.each(['staging', 'acme:production-2', 'eu.gateway_1', ' padded ', 'x'.repeat(64)])('takes %j', (value) => {
    expect(loadConfig({ REDIS_KEY_PREFIX: value }).redisKeyPrefix).toBe(value.trim());
  });

  it.each(['staging:', ':staging', 'a::b', 'prod*', 'a b', 'a{b}', 'ü', 'x'.repeat(65)])('stops start-up on %j with one line saying what it takes', (value) => {
    expect(() => loadConfig({ REDIS_KEY_PREFIX: value })).toThrow(
      `invalid configuration: REDIS_KEY_PREFIX must be up to 64 letters, digits, '.', '_', '-', and ':' other than at either end, got '${value}'`,
    );
  });
});

describe('DATA_DIR', () => {
  const parent = mkdtempSync(join(tmpdir(), 'cgw-config-'));
  const file = join(parent, 'a-file');
  writeFileSync(file, '');
  afterAll(() => rmSync(parent, { recursive: true, force: true }));

  it('takes a directory, or one yet to be made', () => {
    expect(loadConfig({ DATA_DIR: parent }).dataDir).toBe(parent);
    expect(loadConfig({ DATA_DIR: join(parent, 'new', 'data') }).dataDir).toBe(join(parent, 'new', 'data'));
  });

  it('stops start-up with one line naming DATA_DIR when it is a file, or under one', () => {
    expect(() => loadConfig({ DATA_DIR: file })).toThrow(`invalid configuration: DATA_DIR must be a directory, got '${file}', which is not a directory`);
    expect(() => loadConfig({ DATA_DIR: join(file, 'data') })).toThrow(
      `invalid configuration: DATA_DIR must be a directory, got '${join(file, 'data')}', but ${file} is not a directory`,
    );
  });

  it('is not looked at with a database, which it is unused with', () => {
    expect(loadConfig({ DATA_DIR: file, DATABASE_URL: 'postgres://gateway@127.0.0.1/gateway' }).dataDir).toBe(file);
  });
});

describe('security configuration', () => {
  it('has safe defaults', () => {
    expect(loadConfig({})).toMatchObject({
      trustProxy: false,
      corsOrigins: [],
      authFailureLimit: 20,
      authFailureWindowSeconds: 60,
      authFailureBlockSeconds: 300,
      graphqlMaxDepth: 10,
      graphqlMaxCost: 10_000,
      graphqlMaxAliases: 30,
      graphqlMaxDuplicatesPerOperation: 5,
      downloadConcurrency: 8,
      downloadConcurrencyPerWorkspace: 2,
      explorer: true,
    });
    expect(loadConfig({ NODE_ENV: 'production' }).explorer).toBe(false);
  });

  it.each([
    ['production', true],
    ['Production', true],
    ['prod', true],
    ['staging', true],
    ['development', false],
    ['test', false],
    ['', false],
  ])('treats NODE_ENV=%j as production: %s, with production defaults', (value, production) => {
    const config = loadConfig({ NODE_ENV: value });
    expect(config.production).toBe(production);
    expect(config.explorer).toBe(!production);
    // The demo workspace's key is printed to stdout: never by default where stdout is a production log.
    expect(config.seedDemo).toBe(!production);
  });

  it('keeps idempotency keys no longer than the jobs they answer with', () => {
    expect(loadConfig({ IDEMPOTENCY_TTL_HOURS: '168', JOB_RETENTION_DAYS: '7' }).idempotencyTtlMs).toBe(168 * 3600_000);
    expect(() => loadConfig({ IDEMPOTENCY_TTL_HOURS: '720', JOB_RETENTION_DAYS: '1' })).toThrow(
      'invalid configuration: IDEMPOTENCY_TTL_HOURS must not be longer than JOB_RETENTION_DAYS (1 days)',
    );
  });

  it('keeps events at least as long as the jobs they tell about', () => {
    expect(loadConfig({ EVENT_RETENTION_DAYS: '7', JOB_RETENTION_DAYS: '7' }).eventRetentionMs).toBe(7 * 86_400_000);
    expect(loadConfig({ JOB_RETENTION_DAYS: '7' }).eventRetentionMs).toBe(90 * 86_400_000);
    expect(loadConfig({ JOB_RETENTION_DAYS: '120' }).eventRetentionMs).toBe(120 * 86_400_000);
    expect(() => loadConfig({ EVENT_RETENTION_DAYS: '1', JOB_RETENTION_DAYS: '7' })).toThrow(
      'invalid configuration: EVENT_RETENTION_DAYS must not be shorter than JOB_RETENTION_DAYS (7 days)',
    );
  });

  it('keeps the downloads of one workspace within those of the instance', () => {
    expect(loadConfig({ DOWNLOAD_CONCURRENCY: '1' })).toMatchObject({ downloadConcurrency: 1, downloadConcurrencyPerWorkspace: 1 });
    expect(loadConfig({ DOWNLOAD_CONCURRENCY: '4', DOWNLOAD_CONCURRENCY_PER_WORKSPACE: '4' }).downloadConcurrencyPerWorkspace).toBe(4);
    expect(() => loadConfig({ DOWNLOAD_CONCURRENCY: '4', DOWNLOAD_CONCURRENCY_PER_WORKSPACE: '5' })).toThrow(
      'invalid configuration: DOWNLOAD_CONCURRENCY_PER_WORKSPACE must not be more than DOWNLOAD_CONCURRENCY (4)',
    );
  });

  it('refuses a read budget smaller than the costliest read it would have to take', () => {
    expect(loadConfig({}).readBudgetPerMinute).toBe(1_000_000);
    expect(loadConfig({ READ_BUDGET_PER_MINUTE: '0' }).readBudgetPerMinute).toBe(0);
    expect(loadConfig({ READ_BUDGET_PER_MINUTE: '500', GRAPHQL_MAX_COST: '500' }).readBudgetPerMinute).toBe(500);
    // Unset, it follows a raised GRAPHQL_MAX_COST: 100 of the costliest queries a minute.
    expect(loadConfig({ GRAPHQL_MAX_COST: '2000000' }).readBudgetPerMinute).toBe(200_000_000);
    expect(loadConfig({ GRAPHQL_MAX_COST: '10000000' }).readBudgetPerMinute).toBe(1_000_000_000);
    expect(() => loadConfig({ READ_BUDGET_PER_MINUTE: '9999' })).toThrow(
      'invalid configuration: READ_BUDGET_PER_MINUTE must be 0 (no budget) or at least 10000, the costlier of GRAPHQL_MAX_COST (10000) and a REST job read (20)',
    );
    expect(() => loadConfig({ READ_BUDGET_PER_MINUTE: '10', GRAPHQL_MAX_COST: '10' })).toThrow(
      'invalid configuration: READ_BUDGET_PER_MINUTE must be 0 (no budget) or at least 20, the costlier of GRAPHQL_MAX_COST (10) and a REST job read (20)',
    );
  });

  it.each([
    ['off', false],
    ['0', false],
    ['10.0.0.1', ['10.0.0.1/32']],
    ['10.0.0.0/8, ::1', ['10.0.0.0/8', '::1/128']],
  ] as const)('reads TRUST_PROXY=%s', (value, expected) => {
    expect(loadConfig({ TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });

  it.each([
    ['TRUST_PROXY', '2'],
    ['TRUST_PROXY', '10.0.0.0/40'],
    ['TRUST_PROXY', 'proxy.internal'],
    ['AUTH_FAILURE_LIMIT', '0'],
    ['AUTH_FAILURE_WINDOW_SECONDS', 'a minute'],
    ['AUTH_FAILURE_BLOCK_SECONDS', '-5'],
    ['GRAPHQL_MAX_DEPTH', '1'],
    ['GRAPHQL_MAX_COST', '0'],
    ['GRAPHQL_MAX_ALIASES', '1.5'],
    ['GRAPHQL_MAX_DUPLICATES_PER_OPERATION', '0'],
    ['DOWNLOAD_CONCURRENCY', '0'],
    ['DOWNLOAD_CONCURRENCY_PER_WORKSPACE', 'two'],
    ['TRUST_PROXY', 'maybe'],
    ['TRUST_PROXY', 'true'],
    ['TRUST_PROXY', '1'],
    ['TRUST_PROXY', '0.0.0.0/0'],
    ['TRUST_PROXY', '10.0.0.1, ::/0'],
    ['TRUST_PROXY', '::ffff:0:0/96'],
    ['TRUST_PROXY', '0.0.0.0/1,128.0.0.0/1'],
    ['TRUST_PROXY', '128.0.0.0/1,::ffff:0:0/97'],
    ['TRUST_PROXY', '::/1,8000::/1'],
  ])('stops start-up on %s=%s with one line naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^invalid configuration: ${name} `));
  });

  it('says what TRUST_PROXY takes when given a word it does not know', () => {
    expect(() => loadConfig({ TRUST_PROXY: 'maybe' })).toThrow(
      "TRUST_PROXY must be false or the addresses/CIDR ranges of the proxies in front of the gateway, got 'maybe'",
    );
  });

  it('refuses TRUST_PROXY=true, saying why: the first X-Forwarded-For entry is the client\'s to write', () => {
    expect(() => loadConfig({ TRUST_PROXY: 'true' })).toThrow(
      "TRUST_PROXY must be false or the addresses/CIDR ranges of the proxies in front of the gateway: 'true' would take each client's address from the first X-Forwarded-For entry, which the client can write itself",
    );
  });

  it('refuses a TRUST_PROXY range of every address, as it refuses true', () => {
    expect(() => loadConfig({ TRUST_PROXY: '10.0.0.1,0.0.0.0/0' })).toThrow(
      "TRUST_PROXY must be false or the addresses/CIDR ranges of the proxies in front of the gateway: '10.0.0.1,0.0.0.0/0', every address, would take each client's address from the first X-Forwarded-For entry, which the client can write itself",
    );
    expect(loadConfig({ TRUST_PROXY: '0.0.0.0/1, 10.0.0.0/8, ::ffff:10.0.0.0/104' }).trustProxy).toEqual(['0.0.0.0/1', '10.0.0.0/8', '::ffff:a00:0/104']);
  });
});

describe('shutdown configuration', () => {
  it('drains for SHUTDOWN_DRAIN_SECONDS, none by default', () => {
    expect(loadConfig({}).shutdownDrainMs).toBe(0);
    expect(loadConfig({ SHUTDOWN_DRAIN_SECONDS: '15' }).shutdownDrainMs).toBe(15_000);
  });

  it.each(['-1', '1.5', 'soon', '3601'])('stops start-up on SHUTDOWN_DRAIN_SECONDS=%s with one line naming the variable', (value) => {
    expect(() => loadConfig({ SHUTDOWN_DRAIN_SECONDS: value })).toThrow(
      `invalid configuration: SHUTDOWN_DRAIN_SECONDS must be a whole number from 0 to 3600, got '${value}'`,
    );
  });
});

describe('retention configuration', () => {
  it('sweeps every RETENTION_INTERVAL_MINUTES, 10 by default and 1 at the least', () => {
    expect(loadConfig({}).retentionIntervalMs).toBe(10 * 60_000);
    expect(loadConfig({ RETENTION_INTERVAL_MINUTES: '1' }).retentionIntervalMs).toBe(60_000);
  });

  it.each(['0', '-1', '1.5', 'hourly', '1441'])('stops start-up on RETENTION_INTERVAL_MINUTES=%s with one line naming the variable', (value) => {
    expect(() => loadConfig({ RETENTION_INTERVAL_MINUTES: value })).toThrow(
      `invalid configuration: RETENTION_INTERVAL_MINUTES must be a whole number from 1 to 1440, got '${value}'`,
    );
  });
});
