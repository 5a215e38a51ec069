import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, type Dispatcher } from 'undici';
import { expect } from 'vitest';
import { buildApp, createStore, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { AdminService } from '../../src/domain/admin.js';
import { PERMISSIONS } from '../../src/domain/permissions.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import type { Campaign, Workspace } from '../../src/domain/types.js';

export { waitFor } from './wait.js';

export interface TestGateway {
  app: App;
  config: Config;
  baseUrl: string;
  dataDir: string;
  /**
   * Creates a workspace with one campaign and a tag, and a key with the given permissions. With `asOf`, as at that
   * time: a test that writes events stamped in the past makes its workspace before them, since the gateway stamps
   * events as it writes them and the stores rely on it (EVENT_TIME_SKEW_MS).
   */
  workspace(name?: string, permissions?: string[], asOf?: Date): Promise<TestWorkspace>;
  close(): Promise<void>;
}

export interface TestWorkspace {
  workspace: Workspace;
  key: string;
  keyId: string;
  campaign: Campaign;
  /** Another key of the same workspace. */
  addKey(permissions: string[], name?: string): Promise<{ key: string; keyId: string }>;
}

let counter = 0;

/** A workspace with one campaign and a few tags, and a key with the given permissions, in any store. */
export async function createTestWorkspace(
  store: GatewayStore,
  admin: AdminService,
  name = `ws-${process.pid}-${++counter}`,
  permissions: string[] = [...PERMISSIONS],
): Promise<TestWorkspace> {
  const workspace = await admin.createWorkspace(name);
  const campaign = await admin.addCampaign(workspace.id, {
    name: `${name} welcome`,
    description: 'source campaign',
    tagNames: ['onboarding'],
    body: { channels: ['email'], messages: 2 },
  });
  await store.upsertTags(workspace.id, ['promo', 'newsletter']);
  const addKey = async (keyPermissions: string[], keyName = `key-${++counter}`) => {
    const created = await admin.createKey({ workspace: workspace.id, name: keyName, permissions: keyPermissions });
    return { key: created.key, keyId: created.record.id };
  };
  const { key, keyId } = await addKey(permissions, `${name} admin`);
  return { workspace, key, keyId, campaign, addKey };
}

export interface StartOptions {
  /** Wraps the store the gateway makes for itself (in `dataDir`, or what `env` selects), e.g. to hold or count calls. */
  wrapStore?: (store: GatewayStore) => GatewayStore;
  /** What the environment cannot set, such as a retention interval shorter than a minute. */
  tuned?: Partial<Config>;
}

/**
 * A real gateway listening on a loopback port, on a fresh SQLite store in a temporary directory
 * (or whatever `env` selects), with the worker running.
 */
export async function startGateway(env: Record<string, string> = {}, overrides: AppOverrides = {}, options: StartOptions = {}): Promise<TestGateway> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-test-'));
  const config = { ...loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: dataDir, PORT: '0', SEED_DEMO: 'false', ...env }), ...options.tuned };
  const store = options.wrapStore ? options.wrapStore(await createStore(config, { olderSchema: 'upgrade' })) : overrides.store;
  const app = await buildApp(config, { ...overrides, store });
  await app.http.listen({ port: 0, host: '127.0.0.1' });
  app.start();
  const address = app.http.server.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  const baseUrl = `http://127.0.0.1:${address.port}`;

  return {
    app,
    config,
    baseUrl,
    dataDir,
    workspace: (name, permissions, asOf) =>
      createTestWorkspace(app.store, asOf === undefined ? app.admin : new AdminService(app.store, { now: () => asOf }), name, permissions),
    async close() {
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
  text: string;
}

/** A real HTTP request with undici. */
export async function http(
  baseUrl: string,
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS',
  path: string,
  options: { headers?: Record<string, string>; body?: string | Buffer; dispatcher?: Dispatcher; signal?: AbortSignal } = {},
): Promise<HttpResult> {
  const response = await request(`${baseUrl}${path}`, {
    method,
    headers: options.headers,
    body: options.body,
    dispatcher: options.dispatcher,
    signal: options.signal,
  });
  const text = await response.body.text();
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: response.statusCode, headers: response.headers, body, text };
}

/** A connection to the gateway that sends bytes as they are, whenever the test says, for requests no HTTP client would send. */
export interface RawConnection {
  socket: Socket;
  /** Writes `raw`; `last` also ends this side of the connection. */
  send(raw: string, last?: boolean): void;
  /** Everything the gateway sent until it hung up, split into its head (status line and headers) and body. */
  answer: Promise<{ head: string; body: string }>;
}

export function rawConnection(baseUrl: string): RawConnection {
  const socket = connect(Number(new URL(baseUrl).port), '127.0.0.1');
  const answer = new Promise<string>((resolve, reject) => {
    let data = '';
    socket.on('data', (chunk) => (data += chunk.toString('latin1')));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  }).then((text) => {
    const end = text.indexOf('\r\n\r\n');
    return { head: text.slice(0, end), body: text.slice(end + 4) };
  });
  return {
    socket,
    send: (raw, last = false) => (last ? socket.end(raw, 'latin1') : socket.write(raw, 'latin1')),
    answer,
  };
}

/** One request sent as it is on a raw socket, and the gateway's answer. */
export function rawHttp(baseUrl: string, raw: string): Promise<{ head: string; body: string }> {
  const connection = rawConnection(baseUrl);
  connection.send(raw, true);
  return connection.answer;
}

/**
 * A job asked for on a raw connection, under `requestId`, with `next` written after it in the same write, as a
 * client pipelining its requests does; the connection is left open until the gateway hangs up. All it answered.
 */
export async function pipelinedAfterADuplicate(baseUrl: string, ws: TestWorkspace, requestId: string, next: string): Promise<string> {
  const body = JSON.stringify({ campaign_id: ws.campaign.id, name: 'pipelined copy' });
  const connection = rawConnection(baseUrl);
  connection.send(
    `POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ws.key}\r\nContent-Type: application/json\r\n` +
      `X-Request-Id: ${requestId}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}${next}`,
  );
  const { head, body: rest } = await connection.answer;
  connection.socket.destroy();
  return `${head}\r\n\r\n${rest}`;
}

/** The text of a /metrics scrape, checked to be a 200 in Prometheus's text format. */
export const scrape = async (gateway: TestGateway): Promise<string> => {
  const response = await http(gateway.baseUrl, 'GET', '/metrics');
  expect(response.status).toBe(200);
  expect(response.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  return response.text;
};

/** The value of one sample of the Prometheus text format, or undefined when the series is absent. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((pair) => [pair[1], pair[2]]));
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3]);
  }
  return undefined;
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** A key's secret with its last checksum character changed: never the key itself, whatever that character is. */
export const flipLastChecksumCharacter = (key: string) => key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A');
export const json = { 'content-type': 'application/json' };

export async function graphql(
  baseUrl: string,
  key: string | null,
  query: string,
  variables?: Record<string, unknown>,
  dispatcher?: Dispatcher,
): Promise<HttpResult> {
  return http(baseUrl, 'POST', '/graphql', {
    headers: { ...json, ...(key ? bearer(key) : {}) },
    body: JSON.stringify({ query, variables }),
    dispatcher,
  });
}

/**
 * The store with some of its methods failing while `failing(...args)` says so for a call: by default an honest
 * internal error, whose message must never reach a caller; `error` makes another one (an outage).
 */
export function storeFailingOn(
  store: GatewayStore,
  methods: (keyof GatewayStore)[],
  failing: (...args: unknown[]) => boolean,
  error: () => unknown = () => new Error('disk /var/secret/gateway.db exploded'),
): GatewayStore {
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (methods.includes(property as keyof GatewayStore) && failing(...args)) throw error();
        return value.apply(target, args);
      };
    },
  });
}

/**
 * The store with some of its methods waiting for `hold()` first, while it returns a promise: a request caught
 * half-way through, for as long as a test needs it there.
 */
export function storeHeldOn(store: GatewayStore, methods: (keyof GatewayStore)[], hold: (...args: unknown[]) => Promise<void> | undefined): GatewayStore {
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (!methods.includes(property as keyof GatewayStore)) return value.bind(target);
      return async (...args: unknown[]) => {
        await hold(...args);
        return value.apply(target, args);
      };
    },
  });
}

/** A gateway logger that keeps every line, for tests about what is (and is not) logged. */
export function recordingLogger(level = 'info'): { logger: AppOverrides['logger']; lines: string[] } {
  const lines: string[] = [];
  return { logger: { level, stream: { write: (line: string) => void lines.push(line) } }, lines };
}

/** What one component (`worker`, `retention`, …) wrote to a recorded log, line by line. */
export const componentLines = (lines: string[], component: string): Record<string, any>[] =>
  lines.map((line) => JSON.parse(line)).filter((line) => line.component === component);
