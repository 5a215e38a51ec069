import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { DEFAULT_IDEMPOTENCY_TTL_HOURS } from './domain/idempotency.js';
import { DEFAULT_READ_BUDGET_PER_MINUTE, JOB_READ_COST } from './domain/read-budget.js';
import { AllowlistError, coversEveryAddress, parseAllowlist } from './domain/ip-allowlist.js';

export interface Config {
  nodeEnv: string;
  production: boolean;
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | null;
  /** What each connection to DATABASE_URL is on the server's side: a session, or a pooler's transaction (PgBouncer). */
  databasePoolMode: 'session' | 'transaction';
  redisUrl: string | null;
  /** Put before every key the gateway uses in Redis (with a `:`), so deployments sharing one Redis database stay apart; empty: none. */
  redisKeyPrefix: string;
  upstreamUrl: string | null;
  upstreamApiKey: string | null;
  /** Whole-request deadline for one upstream call (connect, headers and body). */
  upstreamTimeoutMs: number;
  upstreamConnectTimeoutMs: number;
  /** Upstream duplications the gateway as a whole sends per window. */
  upstreamRateLimit: number;
  upstreamRateWindowSeconds: number;
  /** Upstream reads (campaign list pages and details) one workspace may cause per window: all share one key. */
  upstreamReadRateLimit: number;
  upstreamReadRateWindowSeconds: number;
  duplicateRateLimit: number;
  duplicateRateWindowSeconds: number;
  workerConcurrency: number;
  jobLeaseMs: number;
  jobMaxAttempts: number;
  /**
   * On SIGTERM/SIGINT, before anything stops: how long `/readyz` fails while every route still serves, so load
   * balancers stop sending requests before the listener closes.
   */
  shutdownDrainMs: number;
  /** On SIGTERM/SIGINT, after the drain: how long in-flight requests and running jobs get to finish. */
  shutdownGraceMs: number;
  bodyLimitBytes: number;
  /** How long a client has to send a whole request, headers and body: a slow sender cannot hold a connection for ever. */
  requestTimeoutMs: number;
  idempotencyTtlMs: number;
  jobRetentionMs: number;
  eventRetentionMs: number;
  retentionIntervalMs: number;
  logLevel: string;
  /** `auto`: readable lines in development on a terminal, JSON lines otherwise. */
  logFormat: 'auto' | 'json' | 'pretty';
  /** How each line's `time` is written: epoch milliseconds, or an ISO 8601 string (UTC). */
  logTime: 'epoch' | 'iso';
  /** Whether the GraphQL explorer and introspection are served. */
  explorer: boolean;
  /** First start with an empty store: create the `demo` workspace and print an admin key. */
  seedDemo: boolean;
  /** Whom X-Forwarded-For is believed from: nobody (false), or these proxies. */
  trustProxy: false | string[];
  /** Browser origins allowed to call the API (CORS); none by default. */
  corsOrigins: string[];
  /** Failed authentications allowed per client (IPv4 address, IPv6 /64) per window, then it is blocked. */
  authFailureLimit: number;
  authFailureWindowSeconds: number;
  authFailureBlockSeconds: number;
  graphqlMaxDepth: number;
  graphqlMaxCost: number;
  graphqlMaxAliases: number;
  /** duplicateCampaign fields one GraphQL operation may hold (each still takes a quota point). */
  graphqlMaxDuplicatesPerOperation: number;
  /**
   * Estimated cost a workspace's reads may spend per minute, queries by their estimated cost and REST's job reads as
   * the same query; 0 for no budget.
   */
  readBudgetPerMinute: number;
  /** Security event downloads this instance serves at once, all workspaces together. */
  downloadConcurrency: number;
  /** Security event downloads one workspace may have in progress at once on this instance. */
  downloadConcurrencyPerWorkspace: number;
  /** Variables in the environment that look like misspellings of one the gateway reads (`meant`), for a warning at start. */
  misspelledVariables: { name: string; meant: string }[];
}

/** Start-up stops with this one line when the environment is wrong. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`invalid configuration: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got '${raw}'`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got '${raw}'`);
  return value;
}

/** The words a switch is set with, either way; undefined for anything else. */
function switchValue(raw: string): boolean | undefined {
  const word = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(word)) return true;
  if (['0', 'false', 'no', 'off'].includes(word)) return false;
  return undefined;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = switchValue(raw);
  if (value === undefined) throw new ConfigError(name, `must be true or false, got '${raw}'`);
  return value;
}

/** One of `values` (any case), the first when unset. */
function oneOf<T extends string>(env: Env, name: string, values: readonly T[]): T {
  const value = env[name]?.trim().toLowerCase() || values[0];
  if (!values.includes(value as T)) throw new ConfigError(name, `must be one of ${values.join(', ')}, got '${env[name]}'`);
  return value as T;
}

/** `label` names where the value came from in a refusal, which never repeats the value: a URL may hold a password. */
function url(env: Env, name: string, protocols: string[], label = name): string | null {
  const raw = env[name]?.trim();
  if (!raw) return null;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(label, 'must be a URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(label, `must start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
  }
  return raw;
}

/**
 * The variables that may hold a secret. Each may be given instead as `<NAME>_FILE`, the path of a file holding
 * the value (a Docker or Kubernetes secret), as the official postgres image takes them: a value in the
 * environment shows in `docker inspect`, /proc/<pid>/environ and crash reports.
 */
export const SECRET_VARIABLES = ['DATABASE_URL', 'REDIS_URL', 'UPSTREAM_API_KEY'] as const;

const fileVariable = (name: string): string => `${name}_FILE`;

/**
 * The environment with each secret given as `<NAME>_FILE` read into `<NAME>`, its trailing newlines left out (as
 * a shell's `$(< file)` does), and the names of those read so. A refusal names the variables and the path, never
 * what the file holds.
 */
function readSecretFiles(env: Env): { env: Env; fromFile: Set<string> } {
  const resolved: Env = { ...env };
  const fromFile = new Set<string>();
  for (const name of SECRET_VARIABLES) {
    const path = env[fileVariable(name)]?.trim();
    if (!path) continue;
    if (env[name]?.trim()) throw new ConfigError(fileVariable(name), `and ${name} are both set: give the value in one of them only`);
    let contents: string;
    try {
      contents = readFileSync(path, 'utf8');
    } catch (error) {
      throw new ConfigError(fileVariable(name), `names a file that cannot be read: ${path} (${(error as NodeJS.ErrnoException).code ?? 'unknown error'})`);
    }
    const value = contents.replace(/(\r?\n)+$/, '');
    if (!value.trim()) throw new ConfigError(fileVariable(name), `names an empty file: ${path}`);
    resolved[name] = value;
    fromFile.add(name);
  }
  return { env: resolved, fromFile };
}

const TRUST_PROXY_TAKES = 'false or the addresses/CIDR ranges of the proxies in front of the gateway';

/**
 * Whose X-Forwarded-For to believe: nobody, or the proxies named. The client is then the nearest address,
 * counting back from the gateway, that is not one of them. Believing every peer (`true`) would take the header's first address,
 * which the client writes itself, behind a load balancer too, so it is refused; fastify refuses a hop
 * count for the same reason (it cannot tell a proxy from a client that reached the gateway directly).
 */
function trustProxy(env: Env): Config['trustProxy'] {
  const raw = env.TRUST_PROXY?.trim();
  if (!raw) return false;
  const trustsEveryone = (what: string) =>
    new ConfigError(
      'TRUST_PROXY',
      `must be ${TRUST_PROXY_TAKES}: ${what} would take each client's address from the first X-Forwarded-For entry, which the client can write itself`,
    );
  if (/^[a-z0-9]+$/i.test(raw)) {
    const value = switchValue(raw);
    if (value === false) return false;
    if (value === true) throw trustsEveryone(`'${raw}'`);
    throw new ConfigError('TRUST_PROXY', `must be ${TRUST_PROXY_TAKES}, got '${raw}'`);
  }
  let ranges: string[];
  try {
    ranges = parseAllowlist(raw.split(','));
  } catch (error) {
    if (error instanceof AllowlistError) throw new ConfigError('TRUST_PROXY', `must be ${TRUST_PROXY_TAKES}: ${error.message}`);
    throw error;
  }
  if (coversEveryAddress(ranges)) throw trustsEveryone(`'${raw}', every address,`);
  return ranges;
}

function origins(env: Env, name: string): string[] {
  const raw = env[name]?.trim();
  if (!raw) return [];
  return raw.split(',').map((entry) => {
    const origin = entry.trim();
    let parsed: URL | null = null;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = null;
    }
    // Exact origins only: a wildcard would let any site call the API with a key it holds.
    if (!parsed || !['http:', 'https:'].includes(parsed.protocol) || parsed.origin !== origin) {
      throw new ConfigError(name, `must be a comma-separated list of origins like https://app.example.com, got '${origin}'`);
    }
    return origin;
  });
}

const REDIS_KEY_PREFIX_MAX = 64;

/**
 * Letters, digits and `.`, `_`, `-`, `:` inside: no space, nothing an ACL key pattern (`~<prefix>:*`) would read
 * as a wildcard, and no `:` at an end, which would double the one the gateway puts after it.
 */
function redisKeyPrefix(env: Env): string {
  const raw = env.REDIS_KEY_PREFIX?.trim();
  if (!raw) return '';
  if (raw.length > REDIS_KEY_PREFIX_MAX || !/^[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)*$/.test(raw)) {
    throw new ConfigError(
      'REDIS_KEY_PREFIX',
      `must be up to ${REDIS_KEY_PREFIX_MAX} letters, digits, '.', '_', '-', and ':' other than at either end, got '${raw}'`,
    );
  }
  return raw;
}

const HOST_NAME = z.hostname();

/**
 * An address or a name to listen on, as `listen()` takes it: no port, no scheme, no brackets. Dotted numbers
 * are an IPv4 address or a mistake (`10.0.0.256`, `127.1`), never a name to look up.
 */
function host(env: Env): string {
  const raw = env.HOST?.trim();
  if (!raw) return '127.0.0.1';
  const valid = /^[\d.]+$/.test(raw)
    ? ipaddr.IPv4.isValidFourPartDecimal(raw)
    : ipaddr.IPv6.isValid(raw) || HOST_NAME.safeParse(raw).success;
  if (!valid) throw new ConfigError('HOST', `must be an IP address or a host name, without a port or a scheme, got '${raw}'`);
  return raw;
}

/** What is at the path ('none' also under a file); undefined when that cannot be told, which the store then reports. */
function kind(path: string): 'directory' | 'other' | 'none' | undefined {
  try {
    const found = statSync(path, { throwIfNoEntry: false });
    return found ? (found.isDirectory() ? 'directory' : 'other') : 'none';
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOTDIR' ? 'none' : undefined;
  }
}

/**
 * The embedded store's directory. What is already there must be a directory, and so must the nearest existing
 * parent of one yet to be made: the store would otherwise fail to open with an error naming only a path. With a
 * database it is unused, and not looked at.
 */
function dataDir(env: Env, databaseUrl: string | null): string {
  const raw = env.DATA_DIR?.trim() || './data';
  const dir = resolve(raw);
  if (databaseUrl) return dir;
  for (let path = dir; path !== dirname(path); path = dirname(path)) {
    const found = kind(path);
    if (found === 'other') {
      const which = path === dir ? 'which is not a directory' : `but ${path} is not a directory`;
      throw new ConfigError('DATA_DIR', `must be a directory, got '${raw}', ${which}`);
    }
    if (found !== 'none') break;
  }
  return dir;
}

/**
 * DATABASE_URL or REDIS_URL (or its `_FILE`) set to nothing, and so neither giving a value: in production a mistake
 * (a secret that did not resolve, a template left empty), which would otherwise run on the embedded store or with
 * the quota in memory without a word.
 */
function refuseEmptyInProduction(env: Env, production: boolean): void {
  if (!production) return;
  const fallbacks = { DATABASE_URL: 'the embedded SQLite store', REDIS_URL: 'limits kept in this process or the database' };
  for (const [name, fallback] of Object.entries(fallbacks)) {
    if (env[name]?.trim()) continue;
    const empty = [name, fileVariable(name)].find((variable) => env[variable] !== undefined);
    if (empty) {
      const what = empty === name ? 'a URL' : 'the path of a file holding the URL';
      throw new ConfigError(empty, `is set but empty: give it ${what}, or unset it to run on ${fallback}`);
    }
  }
}

/** Read by the CLI, not by loadConfig. */
const OTHER_VARIABLES = ['GATEWAY_OPERATOR'];

/** Edits (insertions, deletions, substitutions, swaps of two neighbours) from `a` to `b`. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i += 1) {
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = rows[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      rows[i][j] = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, substitution);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) rows[i][j] = Math.min(rows[i][j], rows[i - 2][j - 2] + 1);
    }
  }
  return rows[a.length][b.length];
}

/**
 * Names in the environment that the gateway does not read but that are one edit (two, for a name of more than 6
 * letters) from one it does, starting with the same two letters, in any case: `DATABSE_URL`, `log_level`. What
 * else a container has (HOSTNAME, HOME, PATH, KUBERNETES_*, a service's DATABASE_HOST) is further away.
 */
function misspelledVariables(env: Env, known: ReadonlySet<string>): Config['misspelledVariables'] {
  const found: Config['misspelledVariables'] = [];
  for (const name of Object.keys(env)) {
    if (known.has(name)) continue;
    const upper = name.toUpperCase();
    const meant = [...known].find(
      (candidate) => candidate.slice(0, 2) === upper.slice(0, 2) && editDistance(upper, candidate) <= (candidate.length > 6 ? 2 : 1),
    );
    if (meant) found.push({ name, meant });
  }
  return found;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** The longest a gateway takes to stop once signalled: the drain, the grace, then 5 s for closing the rest. */
export const longestStopMs = (config: Config): number => config.shutdownDrainMs + config.shutdownGraceMs + 5000;

export function loadConfig(environment: Env = process.env): Config {
  // Every name read is recorded, so that the misspelling check knows each variable without a list kept beside.
  const read = new Set<string>([...OTHER_VARIABLES, ...SECRET_VARIABLES.map(fileVariable)]);
  const secrets = readSecretFiles(environment);
  const label = (name: string) => (secrets.fromFile.has(name) ? `${name} (read from the file in ${fileVariable(name)})` : name);
  const env = new Proxy(secrets.env, {
    get: (target, name) => {
      if (typeof name === 'string') read.add(name);
      return target[name as string];
    },
  });
  const nodeEnv = env.NODE_ENV?.trim() || 'development';
  // Anything but the two names of a developer's machine (Production, prod, staging) gets production's safe defaults.
  const production = !['development', 'test'].includes(nodeEnv.toLowerCase());
  refuseEmptyInProduction(env, production);
  const logLevel = env.LOG_LEVEL?.trim().toLowerCase() || 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got '${env.LOG_LEVEL}'`);
  const logFormat = oneOf(env, 'LOG_FORMAT', ['auto', 'json', 'pretty'] as const);
  const logTime = oneOf(env, 'LOG_TIME', ['epoch', 'iso'] as const);
  const upstreamUrl = url(env, 'UPSTREAM_URL', ['http:', 'https:']);
  if (upstreamUrl && /[?#]/.test(upstreamUrl)) throw new ConfigError('UPSTREAM_URL', 'must not have a query or a fragment');
  const upstreamApiKey = env.UPSTREAM_API_KEY?.trim() || null;
  if (upstreamUrl && !upstreamApiKey) throw new ConfigError('UPSTREAM_API_KEY', 'must be set when UPSTREAM_URL is set');
  // Sent in the Authorization header, which cannot carry anything else: every call would fail, as unreachable.
  if (upstreamApiKey && !/^[\x21-\x7e]+$/.test(upstreamApiKey)) {
    throw new ConfigError(label('UPSTREAM_API_KEY'), 'must be visible ASCII characters only, with no space: it is sent in an HTTP header');
  }
  const upstreamTimeoutMs = integer(env, 'UPSTREAM_TIMEOUT_MS', 10_000, 50, 600_000);
  // A lease shorter than an upstream call would let a second worker claim a job while the first still waits on it:
  // unset, it follows the timeout.
  const jobLeaseMs = integer(env, 'JOB_LEASE_SECONDS', upstreamUrl ? Math.max(30, Math.ceil(upstreamTimeoutMs / 1000) + 5) : 30, 1, 3600) * 1000;
  if (upstreamUrl && jobLeaseMs < upstreamTimeoutMs + 5000) {
    throw new ConfigError('JOB_LEASE_SECONDS', `must be at least 5 seconds longer than UPSTREAM_TIMEOUT_MS (${upstreamTimeoutMs} ms)`);
  }
  // Upstream, calls still in flight when the grace ends would be handed back and sent to Braze a second time
  // by the next worker: the grace outlasts the longest call.
  const shutdownGraceMs = integer(env, 'SHUTDOWN_GRACE_SECONDS', upstreamUrl ? Math.max(10, Math.ceil(upstreamTimeoutMs / 1000) + 5) : 10, 1, 3600) * 1000;
  if (upstreamUrl && shutdownGraceMs <= upstreamTimeoutMs) {
    throw new ConfigError('SHUTDOWN_GRACE_SECONDS', `must be longer than UPSTREAM_TIMEOUT_MS (${upstreamTimeoutMs} ms)`);
  }
  const idempotencyTtlMs = integer(env, 'IDEMPOTENCY_TTL_HOURS', DEFAULT_IDEMPOTENCY_TTL_HOURS, 1, 24 * 30) * 3600_000;
  const jobRetentionMs = integer(env, 'JOB_RETENTION_DAYS', 7, 1, 3650) * 86_400_000;
  // A key kept longer than its job would answer a retry with "that job no longer exists" instead of the job.
  if (idempotencyTtlMs > jobRetentionMs) {
    throw new ConfigError('IDEMPOTENCY_TTL_HOURS', `must not be longer than JOB_RETENTION_DAYS (${jobRetentionMs / 86_400_000} days)`);
  }
  // Unset, it follows a job retention longer than its 90 days, so that raising one never stops start-up.
  const eventRetentionMs = integer(env, 'EVENT_RETENTION_DAYS', Math.max(90, jobRetentionMs / 86_400_000), 1, 3650) * 86_400_000;
  // Events are the record of what happened to a job: a job still kept must still show its events.
  if (eventRetentionMs < jobRetentionMs) {
    throw new ConfigError('EVENT_RETENTION_DAYS', `must not be shorter than JOB_RETENTION_DAYS (${jobRetentionMs / 86_400_000} days)`);
  }
  const graphqlMaxCost = integer(env, 'GRAPHQL_MAX_COST', 10_000, 1, 10_000_000);
  const mostReadBudgetPerMinute = 1_000_000_000;
  // Unset, it allows at least 100 of the costliest queries a minute, so that a raised GRAPHQL_MAX_COST never stops start-up.
  const readBudgetDefault = Math.min(mostReadBudgetPerMinute, Math.max(DEFAULT_READ_BUDGET_PER_MINUTE, 100 * graphqlMaxCost));
  const readBudgetPerMinute = integer(env, 'READ_BUDGET_PER_MINUTE', readBudgetDefault, 0, mostReadBudgetPerMinute);
  // A budget smaller than one allowed read would refuse that read for good, however long its caller waited.
  const costliestRead = Math.max(graphqlMaxCost, JOB_READ_COST);
  if (readBudgetPerMinute > 0 && readBudgetPerMinute < costliestRead) {
    throw new ConfigError(
      'READ_BUDGET_PER_MINUTE',
      `must be 0 (no budget) or at least ${costliestRead}, the costlier of GRAPHQL_MAX_COST (${graphqlMaxCost}) and a REST job read (${JOB_READ_COST})`,
    );
  }
  const downloadConcurrency = integer(env, 'DOWNLOAD_CONCURRENCY', 8, 1, 1000);
  const downloadConcurrencyPerWorkspace = integer(env, 'DOWNLOAD_CONCURRENCY_PER_WORKSPACE', Math.min(2, downloadConcurrency), 1, 1000);
  if (downloadConcurrencyPerWorkspace > downloadConcurrency) {
    throw new ConfigError('DOWNLOAD_CONCURRENCY_PER_WORKSPACE', `must not be more than DOWNLOAD_CONCURRENCY (${downloadConcurrency})`);
  }
  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:'], label('DATABASE_URL'));
  const databasePoolMode = oneOf(env, 'DATABASE_POOL_MODE', ['session', 'transaction'] as const);
  const config: Omit<Config, 'misspelledVariables'> = {
    nodeEnv,
    production,
    port: integer(env, 'PORT', 4000, 0, 65535),
    host: host(env),
    dataDir: dataDir(env, databaseUrl),
    databaseUrl,
    databasePoolMode,
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:'], label('REDIS_URL')),
    redisKeyPrefix: redisKeyPrefix(env),
    upstreamUrl,
    upstreamApiKey,
    upstreamTimeoutMs,
    upstreamConnectTimeoutMs: integer(env, 'UPSTREAM_CONNECT_TIMEOUT_MS', Math.min(5000, upstreamTimeoutMs), 50, upstreamTimeoutMs),
    upstreamRateLimit: integer(env, 'UPSTREAM_RATE_LIMIT', 100, 1, 1_000_000_000),
    upstreamRateWindowSeconds: integer(env, 'UPSTREAM_RATE_WINDOW_SECONDS', 60, 1, 86_400),
    upstreamReadRateLimit: integer(env, 'UPSTREAM_READ_RATE_LIMIT', 60, 1, 1_000_000_000),
    upstreamReadRateWindowSeconds: integer(env, 'UPSTREAM_READ_RATE_WINDOW_SECONDS', 60, 1, 86_400),
    duplicateRateLimit: integer(env, 'DUPLICATE_RATE_LIMIT', 100, 1, 1_000_000_000),
    duplicateRateWindowSeconds: integer(env, 'DUPLICATE_RATE_WINDOW_SECONDS', 60, 1, 86_400),
    // A local job is a few milliseconds of store work, and the jobs finishing together share one commit: many
    // in flight drain a queue fast. Upstream, each one holds a connection to Braze.
    workerConcurrency: integer(env, 'WORKER_CONCURRENCY', upstreamUrl ? 4 : 32, 0, 1000),
    jobLeaseMs,
    // 10 attempts keep a job retrying for 4 to 9 minutes (backoff from 1 s, doubling, jittered), so an upstream
    // outage of a few minutes does not fail the jobs accepted during it.
    jobMaxAttempts: integer(env, 'JOB_MAX_ATTEMPTS', 10, 1, 100),
    shutdownGraceMs,
    shutdownDrainMs: integer(env, 'SHUTDOWN_DRAIN_SECONDS', 0, 0, 3600) * 1000,
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 64 * 1024, 1024, 10 * 1024 * 1024),
    requestTimeoutMs: integer(env, 'REQUEST_TIMEOUT_SECONDS', 30, 1, 600) * 1000,
    idempotencyTtlMs,
    jobRetentionMs,
    eventRetentionMs,
    retentionIntervalMs: integer(env, 'RETENTION_INTERVAL_MINUTES', 10, 1, 1440) * 60_000,
    logLevel,
    logFormat,
    logTime,
    explorer: boolean(env, 'GRAPHQL_EXPLORER', !production),
    // The demo key is printed to stdout: a production log must never carry one.
    seedDemo: boolean(env, 'SEED_DEMO', !production),
    trustProxy: trustProxy(env),
    corsOrigins: origins(env, 'CORS_ORIGINS'),
    authFailureLimit: integer(env, 'AUTH_FAILURE_LIMIT', 20, 1, 1_000_000),
    authFailureWindowSeconds: integer(env, 'AUTH_FAILURE_WINDOW_SECONDS', 60, 1, 86_400),
    authFailureBlockSeconds: integer(env, 'AUTH_FAILURE_BLOCK_SECONDS', 300, 1, 86_400),
    graphqlMaxDepth: integer(env, 'GRAPHQL_MAX_DEPTH', 10, 2, 100),
    graphqlMaxCost,
    graphqlMaxAliases: integer(env, 'GRAPHQL_MAX_ALIASES', 30, 0, 1000),
    graphqlMaxDuplicatesPerOperation: integer(env, 'GRAPHQL_MAX_DUPLICATES_PER_OPERATION', 5, 1, 100),
    readBudgetPerMinute,
    downloadConcurrency,
    downloadConcurrencyPerWorkspace,
  };
  return { ...config, misspelledVariables: misspelledVariables(environment, read) };
}
