import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { UpstreamObserver } from '../adapters/braze-client.js';
import { ERROR_CODES } from '../domain/errors.js';
import type { Clock, GatewayStore } from '../domain/ports.js';
import { AUTH_REFUSALS, type AuthRefusal } from '../domain/service.js';
import { CHANNELS, JOB_ERROR_CODES, type Channel, type JobErrorCode } from '../domain/types.js';
import { GRAPHQL_ERROR_CODES } from '../graphql/apollo.js';
import { RepeatedFailureLog } from '../jobs/failure-log.js';
import type { WorkerLogger, WorkerObserver } from '../jobs/worker.js';
import { CHECK_TIMEOUT_MS, withinTimeout, type ReadinessReport } from '../readiness.js';

const GRAPHQL_PATHS = ['prepared', 'apollo'] as const;
export type GraphQLPath = (typeof GRAPHQL_PATHS)[number];

/** The caches of GraphQL documents: Apollo's parsed ones by query text, the prepared operations, the persisted query texts. */
export type DocumentCacheName = 'apollo' | 'prepared' | 'persisted';

/** Every value of the counter's label exists from the start, so a rate over it is defined before the first increment. */
function fromZero<L extends string>(counter: Counter<L>, label: L, values: readonly string[]): Counter<L> {
  for (const value of values) counter.inc({ [label]: value } as Partial<Record<L, string>>, 0);
  return counter;
}

export interface GatewayMetricsOptions {
  store: GatewayStore;
  clock: Clock;
  /** The security event downloads this instance is serving now. */
  downloadsInProgress: () => number;
  /** Hears of the store failing to give the queue, once per outage rather than once per scrape. */
  logger: WorkerLogger;
}

const CHECK_TIMEOUT_S = CHECK_TIMEOUT_MS / 1000;

/** The label value of a code outside its closed set: an older version's job error read back, a code some library made up. */
const OTHER_CODE = 'other';
/** The `error_code` of a job that succeeded. */
const NO_ERROR = 'none';
const errorCodeLabel = (code: JobErrorCode | null): string =>
  code === null ? NO_ERROR : (JOB_ERROR_CODES as readonly string[]).includes(code) ? code : OTHER_CODE;

/**
 * The gateway's Prometheus metrics, in a registry of its own: several apps in one process (tests) must not
 * share or collide on a global registry.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** The series read from the store at each scrape: left out of a scrape whose read failed, rather than failing it. */
  private readonly queueRegistry = new Registry();
  private readonly store: GatewayStore;
  private readonly clock: Clock;
  private readonly downloadsInProgress: () => number;
  private readonly storeReadFailures: RepeatedFailureLog;
  private readonly storeReadOk: Gauge;
  private readonly requests: Counter<'method' | 'route' | 'status_code'>;
  private readonly requestDuration: Histogram<'method' | 'route' | 'status_code'>;
  private readonly jobs: Gauge<'status'>;
  private readonly queueDepth: Gauge;
  private readonly oldestDueAge: Gauge;
  private readonly jobDuration: Histogram<'status'>;
  private readonly jobsFinished: Counter<'status' | 'error_code'>;
  private readonly jobRetries: Counter;
  private readonly jobDeferrals: Counter;
  private readonly upstreamDuration: Histogram<'endpoint' | 'outcome'>;
  private readonly quotaRejections: Counter<'channel'>;
  private readonly authFailures: Counter<'channel' | 'code'>;
  private readonly authBlocks: Counter<'channel'>;
  private readonly dependencyUp: Gauge<'dependency'>;
  private readonly graphqlRequests: Counter<'path'>;
  private readonly graphqlErrors: Counter<'code'>;
  private readonly documentCacheBytes: Gauge<'cache'>;
  private documentCaches: Partial<Record<DocumentCacheName, { readonly bytes: number }>> = {};
  private checkDependencies: (() => Promise<ReadinessReport>) | undefined;
  private readonly downloads: Gauge;

  constructor(options: GatewayMetricsOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.downloadsInProgress = options.downloadsInProgress;
    this.storeReadFailures = new RepeatedFailureLog(options.logger, options.clock, {
      failed: 'reading the job queue for /metrics failed; its series are left out until it works again',
      stillFailing: 'reading the job queue for /metrics still fails',
      recovered: 'reading the job queue for /metrics works again',
    });
    const registers = [this.registry];
    const queueRegisters = [this.queueRegistry];
    collectDefaultMetrics({ register: this.registry });
    this.storeReadOk = new Gauge({
      name: 'gateway_metrics_store_read_ok',
      help:
        `1 when this scrape read the job queue from the store, 0 when that read failed or took over ${CHECK_TIMEOUT_S} s and the queue ` +
        'series (gateway_duplication_jobs, gateway_duplication_queue_depth, gateway_duplication_queue_oldest_due_age_seconds) are left out.',
      registers,
    });
    this.requests = new Counter({
      name: 'gateway_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'gateway_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.jobs = new Gauge({
      name: 'gateway_duplication_jobs',
      help:
        'Duplication jobs queued, by status: PENDING (including those waiting for a retry) and RUNNING, read from the store at ' +
        'each scrape. Finished jobs are counted by gateway_duplication_job_duration_seconds_count.',
      labelNames: ['status'],
      registers: queueRegisters,
    });
    this.queueDepth = new Gauge({
      name: 'gateway_duplication_queue_depth',
      help: 'Duplication jobs waiting to run: pending, including those waiting for a retry.',
      registers: queueRegisters,
    });
    this.oldestDueAge = new Gauge({
      name: 'gateway_duplication_queue_oldest_due_age_seconds',
      help:
        'How long the pending job that has been due longest has waited since it became due (its run time), read from the store at each scrape; ' +
        '0 when no pending job is due. Growing: no worker is taking jobs.',
      registers: queueRegisters,
    });
    this.jobDuration = new Histogram({
      name: 'gateway_duplication_job_duration_seconds',
      help: 'Time the worker spent on the attempt that finished a job, by outcome.',
      labelNames: ['status'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.jobsFinished = new Counter({
      name: 'gateway_duplication_jobs_finished_total',
      help:
        'Duplication jobs this instance finished, by status and error code: "none" for SUCCEEDED, the job error code for FAILED ' +
        '("other" for a code this version does not know).',
      labelNames: ['status', 'error_code'],
      registers,
    });
    this.jobsFinished.inc({ status: 'SUCCEEDED', error_code: NO_ERROR }, 0);
    for (const code of JOB_ERROR_CODES) this.jobsFinished.inc({ status: 'FAILED', error_code: code }, 0);
    this.jobRetries = new Counter({
      name: 'gateway_duplication_job_retries_total',
      help: 'Attempts that failed transiently and were scheduled again.',
      registers,
    });
    this.jobDeferrals = new Counter({
      name: 'gateway_duplication_job_deferrals_total',
      help: 'Jobs put back in the queue to wait for an upstream pacing slot (upstream mode), without using an attempt.',
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'gateway_upstream_request_duration_seconds',
      help:
        'Time an upstream (Braze) call took, upstream mode only, by endpoint and outcome: ok, rejected (a refusal such as 400, or an HTML page), ' +
        'rate_limited (429), unavailable (408, 5xx), timeout, unreachable (the connection failed).',
      labelNames: ['endpoint', 'outcome'],
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.quotaRejections = fromZero(
      new Counter({
        name: 'gateway_quota_rejections_total',
        help: 'Duplication requests refused because the workspace quota was spent, by channel.',
        labelNames: ['channel'],
        registers,
      }),
      'channel',
      CHANNELS,
    );
    this.authFailures = new Counter({
      name: 'gateway_auth_failures_total',
      help:
        'Failed authentications, each counted towards AUTH_FAILURE_LIMIT, by channel and the code of the refusal: UNAUTHENTICATED (no key, ' +
        'or a malformed, unknown, expired or revoked one) or FORBIDDEN (a key used from an address outside its allowlist).',
      labelNames: ['channel', 'code'],
      registers,
    });
    for (const channel of CHANNELS) for (const code of AUTH_REFUSALS) this.authFailures.inc({ channel, code: ERROR_CODES[code].graphqlCode }, 0);
    this.authBlocks = fromZero(
      new Counter({
        name: 'gateway_auth_failures_blocked_total',
        help:
          'Requests refused (429) without looking at their key because their client (an IPv4 address, an IPv6 /64) failed to authenticate ' +
          'too often (AUTH_FAILURE_LIMIT per AUTH_FAILURE_WINDOW_SECONDS), by channel.',
        labelNames: ['channel'],
        registers,
      }),
      'channel',
      CHANNELS,
    );
    this.dependencyUp = new Gauge({
      name: 'gateway_dependency_up',
      help:
        `Each dependency /readyz checks, checked again at each scrape within the same ${CHECK_TIMEOUT_S} s: 1 up, 0 down or degraded (Redis unreachable or ` +
        "refusing the limiters' commands, as when out of memory: limits kept in process; the upstream unreachable, failing or refusing UPSTREAM_API_KEY). dependency: store, quota, and upstream in upstream mode.",
      labelNames: ['dependency'],
      registers,
    });
    this.graphqlRequests = fromZero(
      new Counter({
        name: 'gateway_graphql_requests_total',
        help: 'Requests to /graphql by the path that answered them: "prepared" (an operation Apollo accepted before, executed directly) or "apollo".',
        labelNames: ['path'],
        registers,
      }),
      'path',
      GRAPHQL_PATHS,
    );
    this.graphqlErrors = fromZero(
      new Counter({
        name: 'gateway_graphql_errors_total',
        help:
          'Errors in answers to /graphql, whatever their HTTP status (a failing field is still a 200), by extensions.code: the gateway\'s codes ' +
          'and those of GraphQL and Apollo Server ("other" for any other).',
        labelNames: ['code'],
        registers,
      }),
      'code',
      GRAPHQL_ERROR_CODES,
    );
    this.documentCacheBytes = new Gauge({
      name: 'gateway_graphql_document_cache_bytes',
      help:
        'Heap held by the GraphQL documents each cache keeps, as estimated from their tokens and length, by cache: ' +
        '"apollo" (documents Apollo parsed and validated), "prepared" (operations answered without Apollo) or "persisted" ' +
        '(texts of automatic persisted queries). Each stays within its budget, least recently used evicted first.',
      labelNames: ['cache'],
      registers,
    });
    this.downloads = new Gauge({
      name: 'gateway_security_event_downloads_in_progress',
      help: 'Security event downloads this instance is serving now; past DOWNLOAD_CONCURRENCY (or the per-workspace bound) one is refused with 429.',
      registers,
    });
  }

  /** The dependency checks each scrape runs, those of /readyz: a gauge kept by probes would go stale when nothing probes. */
  watchDependencies(check: () => Promise<ReadinessReport>): void {
    this.checkDependencies = check;
  }

  /** The caches whose accounted bytes each scrape reports. */
  watchDocumentCaches(caches: Record<DocumentCacheName, { readonly bytes: number }>): void {
    this.documentCaches = caches;
  }

  readonly workerObserver: WorkerObserver = {
    jobFinished: (status, durationMs, errorCode) => {
      this.jobDuration.observe({ status }, durationMs / 1000);
      this.jobsFinished.inc({ status, error_code: errorCodeLabel(errorCode) });
    },
    jobRetried: () => this.jobRetries.inc(),
    jobDeferred: () => this.jobDeferrals.inc(),
  };

  readonly upstreamObserver: UpstreamObserver = {
    callFinished: (endpoint, outcome, seconds) => this.upstreamDuration.observe({ endpoint, outcome }, seconds),
  };

  quotaRejected(channel: Channel): void {
    this.quotaRejections.inc({ channel });
  }

  /** An authentication that failed, by the code the request was refused with. */
  authFailed(channel: Channel, code: AuthRefusal): void {
    this.authFailures.inc({ channel, code: ERROR_CODES[code].graphqlCode });
  }

  /** A request refused because its client failed to authenticate too often. */
  authBlocked(channel: Channel): void {
    this.authBlocks.inc({ channel });
  }

  graphqlRequest(path: GraphQLPath): void {
    this.graphqlRequests.inc({ path });
  }

  /** One error in a GraphQL answer, by its `extensions.code`. */
  graphqlError(code: unknown): void {
    this.graphqlErrors.inc({ code: typeof code === 'string' && GRAPHQL_ERROR_CODES.includes(code) ? code : OTHER_CODE });
  }

  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    const labels = { method, route, status_code: String(statusCode) };
    this.requests.inc(labels);
    this.requestDuration.observe(labels, seconds);
  }

  /**
   * The exposition text, with the job gauges read from the store and the dependencies checked now. A store that
   * cannot be read (a database outage) leaves the queue series out: the request counts and process metrics
   * matter most then.
   */
  async render(): Promise<string> {
    const [queueRead, dependencies] = await Promise.all([this.readQueue(), this.checkDependencies?.()]);
    this.storeReadOk.set(queueRead ? 1 : 0);
    for (const [dependency, { status }] of Object.entries(dependencies?.checks ?? {})) this.dependencyUp.set({ dependency }, status === 'up' ? 1 : 0);
    for (const [cache, { bytes }] of Object.entries(this.documentCaches)) this.documentCacheBytes.set({ cache }, bytes);
    this.downloads.set(this.downloadsInProgress());
    const text = await this.registry.metrics();
    return queueRead ? `${text}\n${await this.queueRegistry.metrics()}` : text;
  }

  private async readQueue(): Promise<boolean> {
    try {
      // Only the queue: counting every finished job kept would scan the jobs table at each scrape, and the
      // embedded store reads on the event loop. Bounded like a readiness check: a database that drops packets
      // would otherwise hold the scrape for the pool's connect timeout (as long as Prometheus waits for it), or
      // for good on a connection the pool holds open.
      const now = this.clock.now();
      const [pending, running, oldestDueAt] = await withinTimeout(
        Promise.all([this.store.countJobs('PENDING'), this.store.countJobs('RUNNING'), this.store.oldestDueJobAt(now)]),
        CHECK_TIMEOUT_MS,
      );
      this.jobs.set({ status: 'PENDING' }, pending);
      this.jobs.set({ status: 'RUNNING' }, running);
      this.queueDepth.set(pending);
      this.oldestDueAge.set(oldestDueAt === null ? 0 : (now.getTime() - oldestDueAt.getTime()) / 1000);
    } catch (error) {
      this.storeReadFailures.failed(error);
      return false;
    }
    this.storeReadFailures.succeeded();
    return true;
  }
}

/** GET /metrics: the Prometheus text exposition format. */
export async function metricsRoutes(app: FastifyInstance, options: { metrics: GatewayMetrics }): Promise<void> {
  const { metrics } = options;
  app.get(
    '/metrics',
    {
      schema: {
        operationId: 'getMetrics',
        tags: ['operations'],
        summary: 'Prometheus metrics',
        security: [],
        description:
          'Request counts and durations, GraphQL requests by path and errors by code, GraphQL document cache sizes, queued jobs by status, ' +
          'queue depth, age of the oldest due job, job durations, finished jobs by error code, upstream call durations, quota rejections, ' +
          'failed authentications and the requests refused for them, each dependency /readyz checks, downloads in progress, process metrics. ' +
          `Answers 200 while the store is down or does not answer within ${CHECK_TIMEOUT_S} s, without the queue series and with gateway_metrics_store_read_ok 0.`,
        response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
      },
    },
    async (request, reply) => {
      const text = await metrics.render();
      return reply.type(metrics.registry.contentType).send(text);
    },
  );
}
