import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { Agent, errors as undiciErrors, request, type Dispatcher } from 'undici';
import { GatewayError } from '../domain/errors.js';
import { systemClock, type Clock } from '../domain/ports.js';
import type { DuplicationJob, JobError, JobErrorCode } from '../domain/types.js';
import { isRecord } from '../domain/validation.js';
import { jobLogFields } from '../failure-log.js';
import { certificateRefusal } from './certificate-refusal.js';
import { KeyRedaction } from './key-redaction.js';

export interface BrazeClientOptions {
  /** The upstream's REST base URL, e.g. https://rest.iad-01.braze.com (a path prefix is kept). */
  baseUrl: string;
  /** The server-side upstream key. It goes into the Authorization header and nowhere else. */
  apiKey: string;
  /** Deadline for a whole call: connect, headers and body. */
  timeoutMs: number;
  connectTimeoutMs: number;
  /** Sockets kept open to the upstream. */
  connections?: number;
  clock?: Clock;
  logger?: { info(object: object, message: string): void; warn(object: object, message: string): void; error(object: object, message: string): void };
  observer?: UpstreamObserver;
  /** The longest wait an upstream's time (Retry-After, X-RateLimit-Reset) is followed for: longer ones are cut to it. */
  maxWait: UpstreamWaitBounds;
}

/** See `maxWait`: a 429's time holds every upstream call, a 408's or 5xx's only the retry of the call it answered. */
export interface UpstreamWaitBounds {
  rateLimitedMs: number;
  unavailableMs: number;
}

/** The upstream endpoints the gateway calls: a closed set, so metrics can be labelled by them. */
export type UpstreamEndpoint = '/campaigns/duplicate' | '/campaigns/list' | '/campaigns/details';

/**
 * How a call ended: its `kind`, with the transient failures told apart by their cause. `connect_timeout` (no connection
 * in time: the request never left) is kept apart from `timeout` (sent, no answer in time): a network that drops the
 * connections is not an upstream that answers slowly.
 */
export type UpstreamOutcome = 'ok' | 'rejected' | 'rate_limited' | 'unavailable' | 'connect_timeout' | 'timeout' | 'unreachable';

/** Hears of every upstream call as it ends (metrics). */
export interface UpstreamObserver {
  callFinished(endpoint: UpstreamEndpoint, outcome: UpstreamOutcome, seconds: number): void;
}

/** One upstream call, classified: what the caller does next depends only on `kind`. */
export type UpstreamResponse =
  /**
   * `message`: Braze's own, made safe to keep like an error's (see `safeText`); `errors`: the non-fatal errors Braze
   * may send with a success, joined into one such text.
   */
  | { kind: 'ok'; status: number; body: unknown; message?: string; errors?: string }
  /**
   * The upstream refused the request itself (400, 401, 403, 404, a redirect, …), or its TLS certificate was refused
   * (`status` null): sending it again cannot help.
   */
  | { kind: 'rejected'; status: number | null; body: unknown; error: JobError }
  /**
   * 408, 429, 5xx, timeouts, connection errors: worth trying again, not before `retryAfterMs` when given.
   * `timedOut`: an error answer whose body outlasted the deadline, which held the call as long as no answer would.
   * `unsent`: no connection was made (refused, a name that does not resolve, connecting timed out): the request never left.
   */
  | { kind: 'unavailable'; status: number | null; error: JobError; retryAfterMs?: number; timedOut?: boolean; unsent?: true };

const MAX_RESPONSE_BYTES = 1024 * 1024;
const MAX_MESSAGE_LENGTH = 500;
/** The most kept of an error body that is not Braze's JSON (a line of text, an HTML page's title): enough to tell who answered. */
const MAX_SNIPPET_LENGTH = 200;
/** A media type as RFC 9110 spells it, so the one named in an error is a type, not arbitrary header text. */
const MEDIA_TYPE = /^[\w!#$%&'*+.^`|~-]+\/[\w!#$%&'*+.^`|~-]+$/;
/** How an HTML page starts, whatever its content type says. */
const HTML_START = /^\s*<(?:!doctype\s+html|html)[\s>]/i;
/** How often readiness probes may spend a call to Braze on asking whether a refused key is accepted again. */
const KEY_RECHECK_MS = 30_000;
const CONNECT_TIMEOUT = 'UND_ERR_CONNECT_TIMEOUT';
const TIMEOUT_CODES = new Set([CONNECT_TIMEOUT, 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
/** Failures to connect: raised before any byte of the request left. A reset or a TLS failure may come after it did. */
const UNSENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);
const REJECTED_CODES: Record<number, JobErrorCode> = {
  400: 'UPSTREAM_BAD_REQUEST',
  401: 'UPSTREAM_UNAUTHORIZED',
  403: 'UPSTREAM_FORBIDDEN',
  404: 'UPSTREAM_NOT_FOUND',
};

interface CallOptions {
  query?: Record<string, string>;
  json?: unknown;
  /**
   * The job the call is made for, named on the log lines of the call (`jobId`, and `reqId` when it has a request id).
   * Its request id goes as X-Request-Id too, so that the upstream's support can find the call.
   */
  job?: Pick<DuplicationJob, 'id' | 'requestId'>;
  /** The request a call made for no job is made for (a campaign read): named and sent the same way. */
  requestId?: string;
  /** Leave a failure out of the log: the caller reports it its own way. */
  quiet?: boolean;
}

/** What the log line of a failed call says about the call, and whether there is one. */
interface CallContext extends Pick<CallOptions, 'job' | 'requestId' | 'quiet'> {
  method: string;
  path: string;
}

/**
 * The HTTP side of upstream mode: one keep-alive undici Agent for the gateway's lifetime, every call bounded by
 * a deadline, every answer classified. It never retries: the job worker owns retries and their backoff.
 */
export class BrazeClient {
  private readonly agent: Agent;
  private readonly baseUrl: string;
  private readonly clock: Clock;
  /** Finds upstream text that would give the key away. */
  private readonly keyText: KeyRedaction;
  private keyRefused = false;
  /** Calls and readiness checks under way, each bounded by its deadline: close() waits for them. */
  private readonly running = new Set<Promise<unknown>>();
  /** When the readiness check last asked whether a refused key is accepted again. */
  private keyCheckedAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: BrazeClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.clock = options.clock ?? systemClock;
    this.keyText = new KeyRedaction(options.apiKey);
    this.agent = new Agent({
      connections: options.connections ?? 16,
      keepAliveTimeout: 10_000,
      connect: { timeout: options.connectTimeoutMs },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      maxResponseSize: MAX_RESPONSE_BYTES,
    });
  }

  async call(method: 'GET' | 'POST', path: UpstreamEndpoint, options: CallOptions = {}): Promise<UpstreamResponse> {
    const started = performance.now();
    const response = await this.tracked(this.send(method, path, options));
    this.options.observer?.callFinished(path, outcomeOf(response), (performance.now() - started) / 1000);
    return response;
  }

  private async send(method: 'GET' | 'POST', path: UpstreamEndpoint, options: CallOptions): Promise<UpstreamResponse> {
    const query = options.query ? `?${new URLSearchParams(options.query)}` : '';
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.options.apiKey}`,
      accept: 'application/json',
      'user-agent': 'campaign-gateway',
    };
    if (options.json !== undefined) headers['content-type'] = 'application/json';
    // Made by the gateway or checked against its bounds when the request came in (src/http/server.ts): safe in a header.
    const requestId = options.job ? options.job.requestId : options.requestId;
    if (requestId) headers['x-request-id'] = requestId;
    const call: CallContext = { method, path, job: options.job, requestId: options.requestId, quiet: options.quiet };
    let response: Dispatcher.ResponseData;
    let text: string | null;
    let bodyError: unknown;
    try {
      // The deadline bounds the whole call, body included: a server that trickles bytes cannot hold a worker.
      response = await this.request(
        `${this.baseUrl}${path}${query}`,
        { method, headers, body: options.json === undefined ? undefined : JSON.stringify(options.json) },
        this.options.timeoutMs,
      );
      text = await response.body.text().catch((error: unknown) => {
        bodyError = error;
        return null;
      });
    } catch (error) {
      return this.failed(call, this.networkFailure(error), error);
    }
    return this.classify(call, response, text, bodyError);
  }

  /**
   * Reachability for /readyz: any answer below 500 from the upstream's origin, without the key, but a redirect of
   * it to another address (UPSTREAM_URL points at the wrong place); and, while the key stands refused, at most
   * every KEY_RECHECK_MS, whether the upstream accepts it again.
   */
  ping(): Promise<void> {
    return this.tracked(this.reach());
  }

  private async reach(): Promise<void> {
    const timeoutMs = Math.min(this.options.timeoutMs, 3000);
    let status: number;
    let headers: Dispatcher.ResponseData['headers'];
    try {
      const response = await this.request(`${this.baseUrl}/`, { method: 'GET', headers: { 'user-agent': 'campaign-gateway' } }, timeoutMs);
      status = response.statusCode;
      headers = response.headers;
      await response.body.dump();
    } catch (error) {
      throw new GatewayError('UNAVAILABLE', this.networkFailure(error, timeoutMs).error.message, { cause: error });
    }
    if (status >= 500) throw new GatewayError('UNAVAILABLE', `The upstream answered ${status}`);
    if (isRedirect(status)) {
      const redirect = this.describeRedirect(status, headers, '/');
      if (redirect.moved) throw new GatewayError('UNAVAILABLE', redirect.message);
    }
    if (this.keyRefused && this.clock.now().getTime() - this.keyCheckedAt >= KEY_RECHECK_MS) {
      // Only a call with the key says whether it is still refused. Without asking, an instance whose jobs all
      // ran elsewhere would report a key replaced (or accepted again) as refused for as long as it runs. The
      // answer is for the probes that follow: awaited, a slow one would outlast the check's own bound.
      this.keyCheckedAt = this.clock.now().getTime();
      this.call('GET', '/campaigns/list', { query: { page: '0' }, quiet: true }).catch((error: unknown) =>
        this.options.logger?.error({ err: error }, 'unexpected error while checking whether the upstream accepts UPSTREAM_API_KEY again'),
      );
    }
  }

  /**
   * Once the calls under way have ended, drops what undici still holds: idle connections, and connections still
   * opening for calls whose deadline passed, which would otherwise hold the stop until their connect timeout.
   */
  async close(): Promise<void> {
    await Promise.allSettled(this.running);
    await this.agent.destroy();
  }

  /**
   * `request`, within `timeoutMs` from start to end of the body. undici heeds an abort only once the request has a
   * connection: one still opening, or a wait for a free one, would hold the call until the connect timeout, which
   * undici checks only every half second or so. Here the call ends at the deadline whatever it is waiting for; undici
   * then cancels the request before sending it, when its connection opens. A deadline passed before the request had a
   * connection is a ConnectTimeoutError, a failure to connect: the request never left.
   */
  private request(url: string, options: Pick<Dispatcher.RequestOptions, 'method' | 'headers' | 'body'>, timeoutMs: number): Promise<Dispatcher.ResponseData> {
    const deadline = AbortSignal.timeout(timeoutMs);
    let connected = false;
    const dispatcher = this.agent.compose(
      (dispatch) => (opts, handler) =>
        dispatch(opts, new ConnectionWatch(handler, () => {
          connected = true;
        })),
    );
    return new Promise<Dispatcher.ResponseData>((resolve, reject) => {
      const expire = () => reject(connected ? deadline.reason : new DeadlineBeforeConnection(timeoutMs));
      deadline.addEventListener('abort', expire, { once: true });
      request(url, { ...options, dispatcher, signal: deadline })
        .then(resolve, reject)
        .finally(() => deadline.removeEventListener('abort', expire));
    });
  }

  /** Keeps `work` among the calls under way until it ends. */
  private tracked<T>(work: Promise<T>): Promise<T> {
    this.running.add(work);
    void work.catch(() => undefined).finally(() => this.running.delete(work));
    return work;
  }

  /**
   * Whether the upstream's last verdict on the key was a 401. The readiness check reports it: every job fails
   * for good until the key is replaced, while the unauthenticated reachability check still passes.
   */
  get refusesKey(): boolean {
    return this.keyRefused;
  }

  private classify(call: CallContext, response: Dispatcher.ResponseData, text: string | null, bodyError: unknown): UpstreamResponse {
    const status = response.statusCode;
    const body = parseJson(text);
    const media = mediaType(response.headers);
    if (status === 401) {
      if (!this.keyRefused) this.options.logger?.error({ ...callFields(call), status }, 'the upstream refused UPSTREAM_API_KEY: duplications fail until it is replaced');
      this.keyRefused = true;
    }
    const html = media === 'text/html' || (!isJson(media) && text !== null && HTML_START.test(text));
    if (status >= 200 && status < 300 && html) {
      // Braze's API never answers with a page: this is a proxy's sign-in page or an UPSTREAM_URL that points at a
      // website, whether or not it says it is HTML. Counting it as a success would report copies nobody made.
      return this.failed(call, {
        kind: 'rejected',
        status,
        body,
        error: { code: 'UPSTREAM_NOT_API', message: `The upstream answered ${status} with an HTML page, not Braze's API` },
      });
    }
    if (status >= 200 && status < 300) {
      if (this.keyRefused) this.options.logger?.info({}, 'the upstream accepts UPSTREAM_API_KEY again');
      this.keyRefused = false;
      if (body === undefined && call.job && !call.quiet) {
        // A 2xx means the upstream acted (a copy made): only what it said about it is lost, so the job still succeeds.
        // A read has nothing to take as done: the reader reports the unreadable answer itself.
        this.options.logger?.warn(
          { method: call.method, path: call.path, ...callFields(call), status, cause: errorDetail(bodyError) },
          `the upstream answered ${status} with a body that ${text === null ? 'could not be read' : 'is not JSON'}: taken as done, without what the body said`,
        );
      }
      const message = isRecord(body) && typeof body.message === 'string' ? this.safeText(body.message) : undefined;
      const errors = isRecord(body) ? this.safeText(brazeErrors(body.errors).join('; ')) : '';
      return { kind: 'ok', status, body, ...(message === undefined ? {} : { message }), ...(errors ? { errors } : {}) };
    }
    if (isRedirect(status)) {
      // Not followed: the key must go to UPSTREAM_URL and nowhere else. Where it points tells the operator what to fix.
      return this.failed(call, { kind: 'rejected', status, body, error: { code: 'UPSTREAM_REJECTED', message: this.describeRedirect(status, response.headers, call.path).message } });
    }
    const message = `The upstream answered ${status}${this.describeAnswer(response.headers, text, body)}`;
    if (status === 408 || status === 429 || status >= 500) {
      const retryAfterMs = this.retryAfterMs(call, response.headers, status);
      return this.failed(call, {
        kind: 'unavailable',
        status,
        error: { code: status === 429 ? 'UPSTREAM_RATE_LIMITED' : 'UPSTREAM_UNAVAILABLE', message },
        ...(isTimeout(bodyError) ? { timedOut: true } : {}),
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      });
    }
    return this.failed(call, {
      kind: 'rejected',
      status,
      body,
      error: { code: REJECTED_CODES[status] ?? 'UPSTREAM_REJECTED', message },
    });
  }

  /**
   * What an error answer said, as it may be kept. Braze's body is `{message, errors?}`, kept as its text. Anything
   * else (a proxy's, a firewall's) is named by its content type with one bounded line of its text, or an HTML page's
   * title, never its markup: an operator must be able to tell Braze's refusal from a page put in front of it.
   */
  private describeAnswer(headers: Dispatcher.ResponseData['headers'], text: string | null, body: unknown): string {
    if (isRecord(body)) {
      const parts: string[] = [];
      if (typeof body.message === 'string') parts.push(body.message);
      parts.push(...brazeErrors(body.errors));
      if (parts.length > 0) return `: ${this.safeText(parts.join('; '))}`;
    }
    const media = mediaType(headers);
    const type = media === undefined ? 'no content type' : MEDIA_TYPE.test(media) ? media : 'an invalid content type';
    if (text === null) return ` with a body that could not be read (${type})`;
    if (!text.trim()) return ` with an empty body (${type})`;
    if (media === 'text/html' || media === 'application/xhtml+xml' || HTML_START.test(text)) {
      const title = this.safeText(htmlTitle(text), MAX_SNIPPET_LENGTH);
      return ` with an HTML page (${type}) ${title ? `titled "${title}"` : 'without a title'}`;
    }
    // A binary body has no line to show; no content type at all is read as text, as a client would.
    if (media !== undefined && !/^text\/|[/+](?:json|xml)$/.test(media)) return ` with a body of ${type}`;
    return ` (${type}): ${this.safeText(text, MAX_SNIPPET_LENGTH)}`;
  }

  /**
   * Where a redirect points, by origin and path only: its query or fragment may carry a token. `moved` when it is the
   * same path at another address (http:// sent to https://, another host): UPSTREAM_URL should be that address.
   */
  private describeRedirect(status: number, headers: Dispatcher.ResponseData['headers'], path: string): { message: string; moved: boolean } {
    const asked = new URL(`${this.baseUrl}${path}`);
    const location = header(headers, 'location');
    let target: URL | undefined;
    try {
      target = location ? new URL(location, asked) : undefined;
    } catch {
      target = undefined;
    }
    if (target === undefined || !/^https?:$/.test(target.protocol)) {
      return { message: `The upstream answered ${status}, a redirect without a usable Location: redirects are not followed; check UPSTREAM_URL`, moved: false };
    }
    const where = this.safeText(`${target.origin}${target.pathname}`, MAX_SNIPPET_LENGTH);
    const moved = target.pathname === asked.pathname && target.origin !== asked.origin;
    if (!moved) return { message: `The upstream answered ${status}, redirecting to ${where}: redirects are not followed; check UPSTREAM_URL`, moved };
    const base = this.safeText(`${target.origin}${new URL(this.baseUrl).pathname}`.replace(/\/+$/, ''), MAX_SNIPPET_LENGTH);
    return { message: `The upstream answered ${status}, redirecting to ${where}: set UPSTREAM_URL to ${base} (redirects are not followed, so that the key goes nowhere else)`, moved };
  }

  /** Whether upstream text holds the key: such text is kept only redacted, and an id holding it not at all. */
  holdsKey(text: string): boolean {
    return this.keyText.holds(text);
  }

  /** Upstream JSON as it may be passed on: the key redacted from every string in it, names of fields included. */
  withoutKey<T>(value: T): T {
    if (typeof value === 'string') return this.keyText.redact(value) as T;
    if (Array.isArray(value)) return value.map((item: unknown) => this.withoutKey(item)) as T;
    if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([name, item]) => [this.withoutKey(name), this.withoutKey(item)])) as T;
    return value;
  }

  /**
   * Upstream text as it may be kept: the upstream could echo what it received, and the key must not travel on into
   * jobs, events or responses. One line, bounded: control characters and runs of spaces become one space.
   */
  private safeText(text: string, maxLength = MAX_MESSAGE_LENGTH): string {
    const safe = this.withoutKey(text.replace(/[\p{Cc}\s]+/gu, ' ').trim());
    return safe.length > maxLength ? `${safe.slice(0, maxLength)}…` : safe;
  }

  /**
   * Retry-After (seconds or an HTTP date) and, on 429, X-RateLimit-Reset (epoch seconds): the later wins, up to
   * `maxWait`. A time past it is no upstream's honest wait: followed, one answer would stop duplication for days.
   */
  private retryAfterMs(call: CallContext, headers: Dispatcher.ResponseData['headers'], status: number): number | undefined {
    const now = this.clock.now().getTime();
    const candidates: number[] = [];
    const retryAfter = header(headers, 'retry-after');
    if (retryAfter !== undefined) {
      if (/^\d+$/.test(retryAfter)) candidates.push(Number(retryAfter) * 1000);
      else if (!Number.isNaN(Date.parse(retryAfter))) candidates.push(Date.parse(retryAfter) - now);
    }
    const reset = status === 429 ? header(headers, 'x-ratelimit-reset') : undefined;
    if (reset !== undefined && /^\d+(\.\d+)?$/.test(reset)) {
      const value = Number(reset);
      // Braze sends epoch seconds; a small number can only be seconds from now.
      candidates.push(value > 1e9 ? value * 1000 - now : value * 1000);
    }
    if (candidates.length === 0) return undefined;
    const askedMs = Math.max(0, Math.ceil(Math.max(...candidates)));
    const maxMs = status === 429 ? this.options.maxWait.rateLimitedMs : this.options.maxWait.unavailableMs;
    if (askedMs <= maxMs) return askedMs;
    if (!call.quiet) {
      const asked = {
        ...(retryAfter === undefined ? {} : { retryAfter: this.safeText(retryAfter, MAX_SNIPPET_LENGTH) }),
        ...(reset === undefined ? {} : { rateLimitReset: this.safeText(reset, MAX_SNIPPET_LENGTH) }),
      };
      this.options.logger?.warn(
        { method: call.method, path: call.path, ...callFields(call), status, asked, askedMs, waitMs: maxMs },
        'the upstream asked to wait longer than the gateway waits for it; waiting the longest it does instead',
      );
    }
    return maxMs;
  }

  private networkFailure(error: unknown, timeoutMs = this.options.timeoutMs): Extract<UpstreamResponse, { kind: 'unavailable' | 'rejected' }> {
    const code = (error as { code?: unknown } | null)?.code;
    const certificate = certificateRefusal(error);
    if (certificate !== undefined) {
      // A certificate does not fix itself within the retry window: retrying would only hide the cause for minutes.
      return {
        kind: 'rejected',
        status: null,
        body: undefined,
        error: {
          code: 'UPSTREAM_UNREACHABLE',
          message: `The upstream's TLS certificate was refused (${certificate}): if a private CA signed it, give that CA's certificate file in NODE_EXTRA_CA_CERTS`,
        },
      };
    }
    const unsent = typeof code === 'string' && UNSENT_CODES.has(code) ? { unsent: true as const } : {};
    if (isTimeout(error)) {
      // No connection is no answer of the upstream's: say which wait ran out, the call's or undici's connect timeout.
      const connectMs = deadlineBeforeConnection(error) ?? this.options.connectTimeoutMs;
      const message = code === CONNECT_TIMEOUT ? `No connection to the upstream within ${connectMs} ms` : `The upstream did not answer within ${timeoutMs} ms`;
      return { kind: 'unavailable', status: null, error: { code: 'UPSTREAM_TIMEOUT', message }, ...unsent };
    }
    // Other TLS failures (a handshake cut short, https:// to a plain HTTP port) are named, and may pass.
    const tls = typeof code === 'string' && /^ERR_(SSL|TLS)_/.test(code) ? ` (TLS: ${code})` : '';
    return {
      kind: 'unavailable',
      status: null,
      error: { code: 'UPSTREAM_UNREACHABLE', message: `The connection to the upstream failed${tls}` },
      ...unsent,
    };
  }

  private failed<T extends UpstreamResponse>(call: CallContext, response: T, cause?: unknown): T {
    if (response.kind !== 'ok' && !call.quiet) {
      const { method, path } = call;
      this.options.logger?.warn(
        { method, path, ...callFields(call), status: response.status, error: response.error, cause: errorDetail(cause) },
        'upstream call failed',
      );
    }
    return response;
  }
}

/** A call's deadline passed before its request had a connection: a failure to connect, as undici's own connect timeout. */
class DeadlineBeforeConnection extends undiciErrors.ConnectTimeoutError {
  constructor(readonly deadlineMs: number) {
    super(`no connection to the upstream within ${deadlineMs} ms`);
  }
}

/**
 * The deadline of a DeadlineBeforeConnection, undefined for undici's own connect timeout. Not `instanceof`: undici's
 * errors answer it for any error of their kind (Symbol.hasInstance), subclasses included.
 */
const deadlineBeforeConnection = (error: unknown): number | undefined =>
  Object.getPrototypeOf(error) === DeadlineBeforeConnection.prototype ? (error as DeadlineBeforeConnection).deadlineMs : undefined;

/** Passes a request's events on, saying first when the request has its connection, just before it is sent. */
class ConnectionWatch implements Dispatcher.DispatchHandler {
  constructor(
    private readonly handler: Dispatcher.DispatchHandler,
    private readonly connected: () => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.connected();
    this.handler.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, socket: Duplex): void {
    this.handler.onRequestUpgrade?.(controller, statusCode, headers, socket);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    this.handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.handler.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.handler.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    this.handler.onResponseError?.(controller, error);
  }
}

/** What names the call's job, or the request a call for no job is made for, on a log line. */
const callFields = (call: CallContext): object => (call.job ? jobLogFields(call.job) : call.requestId ? { reqId: call.requestId } : {});

const errorDetail = (cause: unknown): object | undefined =>
  cause instanceof Error ? { name: cause.name, code: (cause as { code?: unknown }).code, message: cause.message } : undefined;

const isTimeout = (error: unknown): boolean => {
  const code = (error as { code?: unknown } | null)?.code;
  return (error as { name?: unknown } | null)?.name === 'TimeoutError' || (typeof code === 'string' && TIMEOUT_CODES.has(code));
};

/**
 * The entries of Braze's `errors`, as text, unsafe yet (see `safeText`): a string as it is, any other value as its JSON
 * (Braze's errors may be objects, such as `{type, input_array, index}`), a lone value as one entry. Nothing for what
 * has no text: an entry too deeply nested to write out, null, an empty string.
 */
function brazeErrors(errors: unknown): string[] {
  const entries = Array.isArray(errors) ? (errors as unknown[]) : errors === undefined ? [] : [errors];
  return entries.flatMap((entry) => {
    if (typeof entry === 'string') return entry.trim() ? [entry] : [];
    if (entry === null) return [];
    try {
      return [JSON.stringify(entry)];
    } catch {
      return [];
    }
  });
}

/** 3xx but 304, which answers a conditional request the gateway never makes. */
const isRedirect = (status: number): boolean => status >= 300 && status < 400 && status !== 304;

export function outcomeOf(response: UpstreamResponse): UpstreamOutcome {
  // A refused certificate is not retried, yet the connection is what failed.
  if (response.kind === 'rejected' && response.status === null) return 'unreachable';
  if (response.kind !== 'unavailable') return response.kind;
  if (response.timedOut) return 'timeout';
  switch (response.error.code) {
    case 'UPSTREAM_RATE_LIMITED':
      return 'rate_limited';
    case 'UPSTREAM_TIMEOUT':
      return response.unsent ? 'connect_timeout' : 'timeout';
    case 'UPSTREAM_UNREACHABLE':
      return 'unreachable';
    default:
      return 'unavailable';
  }
}

/** The text of an HTML page's first `<title>`, found without a regular expression that a hostile page could make slow. */
function htmlTitle(html: string): string {
  const open = html.search(/<title[\s>]/i);
  const start = open === -1 ? -1 : html.indexOf('>', open);
  if (start === -1) return '';
  const close = /<\/title/gi;
  close.lastIndex = start;
  // A title never closed is cut: safeText bounds it anyway, once its spaces are collapsed.
  return html.slice(start + 1, close.exec(html)?.index ?? start + 1 + MAX_SNIPPET_LENGTH * 4);
}

/** The response's media type, lower-cased, without parameters; undefined when it gives none. */
const mediaType = (headers: Dispatcher.ResponseData['headers']): string | undefined =>
  header(headers, 'content-type')?.split(';')[0].trim().toLowerCase() || undefined;

const isJson = (media: string | undefined): boolean => media !== undefined && /[/+]json$/.test(media);

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const value = headers[name];
  return (Array.isArray(value) ? value[0] : value)?.trim();
}

function parseJson(text: string | null): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
