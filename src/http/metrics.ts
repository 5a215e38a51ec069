import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { UpstreamObserver } from '../adapters/braze-client.js';
import { ERROR_CODES } from '../domain/errors.js';
import type { Clock, GatewayStore, UpstreamPause } from '../domain/ports.js';
import {
  AUTH_REFUSALS,
  DUPLICATION_OUTCOMES,
  REFUSAL_EVENT_TYPES,
  type AuthRefusal,
  type DuplicationOutcome,
  type RefusalEventType,
} from '../domain/service.js';
import { CHANNELS, JOB_ERROR_CODES, type Channel, type JobErrorCode } from '../domain/types.js';
import { GRAPHQL_ERROR_CODES } from '../graphql/apollo.js';
import { RepeatedFailureLog } from '../failure-log.js';
import { PRUNED_TABLES, type RetentionObserver } from '../jobs/retention.js';
import { DEFERRAL_REASONS, type WorkerLogger, type WorkerObserver } from '../jobs/worker.js';
import { CHECK_TIMEOUT_MS, withinTimeout, type ReadinessReport } from '../readiness.js';
import { GATEWAY_VERSION } from './openapi.js';

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
  /** How often the event loop delay gauges (`nodejs_eventloop_lag_*`) take in what was measured since last time. */
  eventLoopWindowMs?: number;
}

/**
 * The window the event loop delay gauges describe: prom-client's own collect would take them in, and start
 * over, at each scrape, so two Prometheus servers scraping one instance would each see a share of the delays,
 * and one scraping right after the other none (a minimum of 9.2e9 s).
 */
export const EVENT_LOOP_WINDOW_MS = 15_000;
/** The gauge whose collect sets every `nodejs_eventloop_lag_*` one (prom-client's lib/metrics/eventLoopLag.js). */
const EVENT_LOOP_LAG = 'nodejs_eventloop_lag_seconds';

const CHECK_TIMEOUT_S = CHECK_TIMEOUT_MS / 1000;

/** The label value of a code outside its closed set: an older version's job error read back, a code some library made up. */
const OTHER_CODE = 'other';
/** The `method` of a request Node could not parse: what it sent is not trusted to be a method. */
const MALFORMED_METHOD = 'unknown';
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
  private readonly jobDeferrals: Counter<'reason'>;
  private readonly jobsTakenOver: Counter;
  private readonly jobWait: Histogram<'status'>;
  private readonly prunedRows: Counter<'table'>;
  private readonly retentionPassDuration: Histogram;
  /**
   * Duplications by channel and outcome, in plain numbers the counter is given at each scrape: counting them, on
   * the path of every accepted request, allocates nothing, where prom-client's inc() (a labels() child's too)
   * builds a key string each time.
   */
  private readonly duplicationCounts: Record<Channel, Record<DuplicationOutcome, number>>;
  private readonly eventsUnrecorded: Counter<'type'>;
  /** Upstream mode: the series read from the pacing store at each scrape, left out when that read fails. */
  private readonly upstreamRegistry = new Registry();
  private upstreamPause: UpstreamPause | undefined;
  private readonly upstreamPaused: Gauge;
  private readonly eventLoopWindow: NodeJS.Timeout | undefined;
  private readonly upstreamDuration: Histogram<'endpoint' | 'outcome'>;
  private readonly quotaRejections: Counter<'channel'>;
  private readonly readBudgetRefusals: Counter<'channel'>;
  private readonly authFailures: Counter<'channel' | 'code'>;
  private readonly authBlocks: Counter<'channel'>;
  private readonly dependencyUp: Gauge<'dependency'>;
  private readonly graphqlRequests: Counter<'path'>;
  private readonly graphqlErrors: Counter<'code'>;
  private readonly documentCacheBytes: Gauge<'cache'>;
  private documentCaches: Partial<Record<DocumentCacheName, { readonly bytes: number }>> = {};
  private checkDependencies: (() => Promise<ReadinessReport>) | undefined;
  private readonly downloads: Gauge;
  /** With PostgreSQL: the clock offset, left out until one is measured (never, with SQLite). */
  private readonly clockRegistry = new Registry();
  private readonly clockOffsetGauge: Gauge;
  private clockOffset: { readonly lastMs: number | undefined } | undefined;
  /** Upstream mode: this instance's circuit, read at each scrape (it lives in memory, so the read cannot fail). */
  private readonly circuitRegistry = new Registry();
  private readonly circuitOpen: Gauge;
  private upstreamCircuit: { readonly isOpen: boolean } | undefined;

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
    this.eventLoopWindow = this.collectEventLoopEvery(options.eventLoopWindowMs ?? EVENT_LOOP_WINDOW_MS);
    new Gauge({
      name: 'gateway_build_info',
      help: 'Always 1: the version of the gateway this instance runs, and of Node.',
      labelNames: ['version', 'node'],
      registers,
    }).set({ version: GATEWAY_VERSION, node: process.version }, 1);
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
        'How long the pending job due longest ago has waited since it became due (its run time, so a job waiting for its retry, an upstream ' +
        'slot or the end of an upstream pause is not counted before then), read from the store at each scrape; 0 when none is due. ' +
        'Growing: no worker takes jobs, or, in upstream mode, jobs arrive faster than the upstream pace sends them, or an upstream pause, ' +
        'during which jobs accepted are due but not claimed.',
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
    this.jobDeferrals = fromZero(
      new Counter({
        name: 'gateway_duplication_job_deferrals_total',
        help:
          'Jobs put back in the queue without using an attempt, by reason: upstream_slot (upstream mode: no upstream pacing slot yet, ' +
          'or a pause the upstream asked for), pacing_store (upstream mode: the pacing store unavailable), upstream_circuit (upstream mode: ' +
          'the upstream down, its circuit open), store (the store failed under the run).',
        labelNames: ['reason'],
        registers,
      }),
      'reason',
      DEFERRAL_REASONS,
    );
    this.jobsTakenOver = new Counter({
      name: 'gateway_duplication_jobs_taken_over_total',
      help:
        'RUNNING jobs this instance claimed after their lease expired (the instance running them died, hung or lost the store), or, on the ' +
        'embedded store, that the process before it left RUNNING: in upstream mode the upstream may have received each of them twice. Each ' +
        'is logged with its job id and previous lease owner.',
      registers,
    });
    this.jobWait = new Histogram({
      name: 'gateway_duplication_job_wait_seconds',
      help:
        'Time from the acceptance of a job (its created_at) to its finish, observed by the instance that finished it, by outcome: ' +
        'what a caller waits for a duplication, retries, deferrals and queueing included.',
      labelNames: ['status'],
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600],
      registers,
    });
    this.prunedRows = fromZero(
      new Counter({
        name: 'gateway_retention_pruned_rows_total',
        help:
          'Rows the retention pruner of this instance deleted, by table, counted batch by batch: rising while a pass runs. ' +
          'A long pass (the first after a long time) slows writes on the embedded store.',
        labelNames: ['table'],
        registers,
      }),
      'table',
      Object.values(PRUNED_TABLES),
    );
    this.retentionPassDuration = new Histogram({
      name: 'gateway_retention_pass_duration_seconds',
      help: 'Time each retention pass of this instance took, idle ones included, observed when it ends (or stops at a shutdown).',
      buckets: [0.01, 0.1, 1, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers,
    });
    this.duplicationCounts = Object.fromEntries(
      CHANNELS.map((channel) => [channel, Object.fromEntries(DUPLICATION_OUTCOMES.map((outcome) => [outcome, 0]))]),
    ) as Record<Channel, Record<DuplicationOutcome, number>>;
    const duplicationCounts = this.duplicationCounts;
    new Counter({
      name: 'gateway_duplications_total',
      help:
        'Duplications asked of the service, once per REST request and per GraphQL field, by channel and outcome: accepted (a new job), ' +
        'replayed (an idempotency key answered with its earlier job), or refused: unauthenticated, forbidden, rate_limited (quota spent, ' +
        'or the client blocked after failed authentications), invalid, conflict (an idempotency key in flight or reused with another request), ' +
        'unavailable (a dependency), internal.',
      labelNames: ['channel', 'outcome'],
      registers,
      // Set from the counts at each collect: every pair shows from the start, at 0 until counted.
      collect() {
        this.reset();
        for (const channel of CHANNELS) {
          for (const outcome of DUPLICATION_OUTCOMES) this.inc({ channel, outcome }, duplicationCounts[channel][outcome]);
        }
      },
    });
    this.eventsUnrecorded = fromZero(
      new Counter({
        name: 'gateway_security_events_unrecorded_total',
        help:
          "Refusals whose security event was not recorded, by event type: past the key's budget of refusal events, or the event's write failed. " +
          'The next event of the type recorded for the key says how many (details.unrecordedBefore).',
        labelNames: ['type'],
        registers,
      }),
      'type',
      REFUSAL_EVENT_TYPES,
    );
    this.upstreamPaused = new Gauge({
      name: 'gateway_upstream_paused_seconds',
      help:
        'Upstream mode: what is left of the pause the upstream asked for with a 429, read from the pacing store at each scrape; 0 when there ' +
        'is none. No job is sent before it ends. Left out of a scrape whose read failed.',
      registers: [this.upstreamRegistry],
    });
    this.upstreamDuration = new Histogram({
      name: 'gateway_upstream_request_duration_seconds',
      help:
        'Time an upstream (Braze) call took, upstream mode only, by endpoint and outcome: ok, rejected (a refusal such as 400, or an HTML page), ' +
        'rate_limited (429), unavailable (408, 5xx), connect_timeout (no connection in time: the request never left), timeout (sent, no ' +
        'answer in time), unreachable (the connection failed).',
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
    this.readBudgetRefusals = fromZero(
      new Counter({
        name: 'gateway_read_budget_refusals_total',
        help: "Reads (GraphQL queries, REST job reads) refused because the workspace's read budget was spent (READ_BUDGET_PER_MINUTE), by channel.",
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
        `Each dependency /readyz checks, checked again at each scrape within the same ${CHECK_TIMEOUT_S} s: 1 up (the embedded store ` +
        'too while it is only slow: see gateway_store_commit_duration_seconds), 0 down or degraded (Redis unreachable or ' +
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
    this.clockOffsetGauge = new Gauge({
      name: 'gateway_clock_offset_seconds',
      help:
        "With PostgreSQL: the database server's clock minus this instance's, as last measured by a readiness check (each scrape runs one). " +
        'Positive: the instance is behind. Past 1 s either way, /readyz notes it: event times go wrong.',
      registers: [this.clockRegistry],
    });
    this.circuitOpen = new Gauge({
      name: 'gateway_upstream_circuit_open',
      help:
        "Upstream mode: 1 while this instance's upstream circuit is open (calls of several jobs failed in a row with 502, 503, 504, 408, a " +
        'timeout or a failed connection): no duplication is sent, but one probe after each cooldown, and jobs wait without spending attempts. 0 otherwise.',
      registers: [this.circuitRegistry],
    });
    this.watchStoreWriter(options.store);
    this.watchStorePool(options.store);
  }

  /**
   * The embedded store's writer thread: a slow disk slows every write (each waits for its group's fsync) while reads
   * stay fast, so the check's answers alone do not show it. One observation per group, not per write.
   */
  private watchStoreWriter(store: GatewayStore): void {
    if (!store.observeCommits || !store.writesWaiting) return;
    const commits = new Histogram({
      name: 'gateway_store_commit_duration_seconds',
      help:
        "Embedded store (SQLite) only: time each group of writes took to COMMIT in the writer thread, the WAL's fsync included. " +
        'Every write of the group, a 202 included, waited at least this long.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    store.observeCommits((seconds) => commits.observe(seconds));
    const writesWaiting = () => store.writesWaiting!();
    new Gauge({
      name: 'gateway_store_writes_waiting',
      help: 'Embedded store (SQLite) only: writes waiting for the writer thread at this scrape, queued or in the group being committed.',
      registers: [this.registry],
      collect() {
        this.set(writesWaiting());
      },
    });
  }

  /**
   * A shared store's pool and the writes waiting for event locks: a transaction that keeps a lock (an instance frozen
   * mid-write) holds up the writes that need it, each on a connection or parked, and the instance's other requests
   * wait for the connections left.
   */
  private watchStorePool(store: GatewayStore): void {
    if (!store.connections || !store.eventLockWrites) return;
    const connections = () => store.connections!();
    const eventLockWrites = () => store.eventLockWrites!();
    const byState = (name: string, help: string, read: () => Record<string, number>) =>
      new Gauge({
        name,
        help,
        labelNames: ['state'],
        registers: [this.registry],
        collect() {
          for (const [state, value] of Object.entries(read())) this.set({ state }, value);
        },
      });
    byState(
      'gateway_store_connections',
      "PostgreSQL only: connections of this instance's pool at this scrape, in use (by a request, the worker, this scrape) or idle.",
      () => {
        const now = connections();
        return { in_use: now.inUse, idle: now.idle };
      },
    );
    new Gauge({
      name: 'gateway_store_connection_waits',
      help: "PostgreSQL only: requests and jobs waiting for a connection of this instance's pool at this scrape, GraphQL queries waiting for a snapshot's included.",
      registers: [this.registry],
      collect() {
        this.set(connections().awaited);
      },
    });
    byState(
      'gateway_store_event_lock_writes',
      "PostgreSQL only: writes of this instance waiting for a workspace's event lock at this scrape, on a connection (at most a quarter " +
        'of the pool for one workspace, half for all) or parked without one.',
      eventLockWrites,
    );
  }

  /** The dependency checks each scrape runs, those of /readyz: a gauge kept by probes would go stale when nothing probes. */
  watchDependencies(check: () => Promise<ReadinessReport>): void {
    this.checkDependencies = check;
  }

  /** The caches whose accounted bytes each scrape reports. */
  watchDocumentCaches(caches: Record<DocumentCacheName, { readonly bytes: number }>): void {
    this.documentCaches = caches;
  }

  /** With PostgreSQL: the clock offset the readiness checks measure, reported once there is one. */
  watchClockOffset(offset: { readonly lastMs: number | undefined }): void {
    this.clockOffset = offset;
  }

  /** Upstream mode: the pause each scrape reads. */
  watchUpstreamPause(pause: UpstreamPause): void {
    this.upstreamPause = pause;
  }

  /** Upstream mode: the circuit each scrape reports. */
  watchUpstreamCircuit(circuit: { readonly isOpen: boolean }): void {
    this.upstreamCircuit = circuit;
  }

  /** Stops taking in the event loop delays; the registry still answers. */
  close(): void {
    clearInterval(this.eventLoopWindow);
  }

  readonly workerObserver: WorkerObserver = {
    jobFinished: (status, durationMs, errorCode, sinceAcceptedMs) => {
      this.jobDuration.observe({ status }, durationMs / 1000);
      this.jobWait.observe({ status }, sinceAcceptedMs / 1000);
      this.jobsFinished.inc({ status, error_code: errorCodeLabel(errorCode) });
    },
    jobRetried: () => this.jobRetries.inc(),
    jobDeferred: (reason) => this.jobDeferrals.inc({ reason }),
    jobTakenOver: () => this.jobsTakenOver.inc(),
  };

  readonly retentionObserver: RetentionObserver = {
    pruned: (table, rows) => this.prunedRows.inc({ table }, rows),
    passFinished: (durationMs) => this.retentionPassDuration.observe(durationMs / 1000),
  };

  readonly upstreamObserver: UpstreamObserver = {
    callFinished: (endpoint, outcome, seconds) => this.upstreamDuration.observe({ endpoint, outcome }, seconds),
  };

  /** How a duplication asked for ended. */
  duplication(channel: Channel, outcome: DuplicationOutcome): void {
    this.duplicationCounts[channel][outcome] += 1;
  }

  /** A refusal whose security event was not recorded. */
  eventUnrecorded(type: RefusalEventType): void {
    this.eventsUnrecorded.inc({ type });
  }

  quotaRejected(channel: Channel): void {
    this.quotaRejections.inc({ channel });
  }

  readBudgetRefused(channel: Channel): void {
    this.readBudgetRefusals.inc({ channel });
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
   * A request Node could not parse, refused on its socket: counted, but with no method to tell and no start to
   * time it from, left out of the durations.
   */
  malformedRequest(statusCode: number): void {
    this.requests.inc({ method: MALFORMED_METHOD, route: 'unmatched', status_code: String(statusCode) });
  }

  /**
   * The exposition text, with the job gauges read from the store and the dependencies checked now. A store that
   * cannot be read (a database outage) leaves the queue series out: the request counts and process metrics
   * matter most then.
   */
  async render(): Promise<string> {
    const [queueRead, pauseRead, dependencies] = await Promise.all([this.readQueue(), this.readUpstreamPause(), this.checkDependencies?.()]);
    this.storeReadOk.set(queueRead ? 1 : 0);
    // A store that is only slow still serves: 1, so that a store answering either side of the 2 s does not flap.
    for (const [dependency, { status, slow }] of Object.entries(dependencies?.checks ?? {})) this.dependencyUp.set({ dependency }, status === 'up' || slow ? 1 : 0);
    for (const [cache, { bytes }] of Object.entries(this.documentCaches)) this.documentCacheBytes.set({ cache }, bytes);
    this.downloads.set(this.downloadsInProgress());
    const offsetMs = this.clockOffset?.lastMs;
    if (offsetMs !== undefined) this.clockOffsetGauge.set(offsetMs / 1000);
    let text = await this.registry.metrics();
    if (queueRead) text += `\n${await this.queueRegistry.metrics()}`;
    if (pauseRead) text += `\n${await this.upstreamRegistry.metrics()}`;
    if (offsetMs !== undefined) text += `\n${await this.clockRegistry.metrics()}`;
    if (this.upstreamCircuit) {
      this.circuitOpen.set(this.upstreamCircuit.isOpen ? 1 : 0);
      text += `\n${await this.circuitRegistry.metrics()}`;
    }
    return text;
  }

  /** Whether the upstream pause was read, within the time of a readiness check; false outside upstream mode. */
  private async readUpstreamPause(): Promise<boolean> {
    if (!this.upstreamPause) return false;
    try {
      this.upstreamPaused.set((await withinTimeout(this.upstreamPause.remainingMs(), CHECK_TIMEOUT_MS)) / 1000);
      return true;
    } catch {
      // The pacing store's outage shows in gateway_dependency_up{dependency="upstream"}, and its component logs it.
      return false;
    }
  }

  /**
   * Takes prom-client's event loop delay histogram in every `windowMs` instead of at each scrape: every scrape of a
   * window, however many scrapers, reads the same figures, those of the last whole window (0 before the first ends).
   */
  private collectEventLoopEvery(windowMs: number): NodeJS.Timeout | undefined {
    const lag = this.registry.getSingleMetric(EVENT_LOOP_LAG) as (Gauge & { collect?: () => void }) | undefined;
    const collect = lag?.collect;
    if (!lag || !collect) return undefined;
    lag.collect = undefined;
    return setInterval(() => collect.call(lag), windowMs).unref();
  }

  private async readQueue(): Promise<boolean> {
    try {
      // Only the queue: counting every finished job kept would scan the jobs table at each scrape, and the
      // embedded store reads on the event loop. Bounded like a readiness check: a database that drops packets
      // would otherwise hold the scrape for the pool's connect timeout (as long as Prometheus waits for it), or
      // for good on a connection the pool holds open.
      const now = this.clock.now();
      const [pending, running, oldestDueWaitMs] = await withinTimeout(
        Promise.all([this.store.countJobs('PENDING'), this.store.countJobs('RUNNING'), this.store.oldestDueJobWaitMs(now)]),
        CHECK_TIMEOUT_MS,
      );
      this.jobs.set({ status: 'PENDING' }, pending);
      this.jobs.set({ status: 'RUNNING' }, running);
      this.queueDepth.set(pending);
      this.oldestDueAge.set((oldestDueWaitMs ?? 0) / 1000);
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
          'Request counts and durations, duplications by channel and outcome, GraphQL requests by path and errors by code, GraphQL document ' +
          'cache sizes, queued jobs by status, queue depth, age of the oldest due job, job durations and waits from acceptance, finished jobs ' +
          'by error code, deferrals by reason, rows pruned by table and retention pass durations, upstream call durations and pause, quota rejections, failed authentications and the requests ' +
          'refused for them, security events left unrecorded, each dependency /readyz checks, with PostgreSQL the clock offset from the database, ' +
          'downloads in progress, build, process metrics. ' +
          `Answers 200 while the store is down or does not answer within ${CHECK_TIMEOUT_S} s, without the queue series and with gateway_metrics_store_read_ok 0.`,
        response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
      },
    },
    async (_request, reply) => {
      const text = await metrics.render();
      return reply.type(metrics.registry.contentType).send(text);
    },
  );
}
