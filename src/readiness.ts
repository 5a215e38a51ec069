import { ERROR_CODES, GatewayError, unavailableCause } from './domain/errors.js';
import type { Clock, UpstreamPause } from './domain/ports.js';
import { RepeatedFailureLog } from './jobs/failure-log.js';
import type { WorkerLogger } from './jobs/worker.js';

/**
 * How one dependency of the gateway is doing. `degraded` still serves; `down` makes the instance not ready,
 * and only a dependency the instance needs to serve is ever down.
 */
export interface DependencyStatus {
  status: 'up' | 'degraded' | 'down';
  /** Which implementation is in use (sqlite, postgres, redis, memory, …). */
  backend?: string;
  /** What is wrong, when something is, or what holds it back (an upstream pause). Never a connection string or a secret. */
  message?: string;
}

export interface ReadinessReport {
  ready: boolean;
  /** The instance is shutting down: not ready, whatever its dependencies say. */
  stopping: boolean;
  checks: Record<string, DependencyStatus>;
}

export interface DependencyCheck {
  /**
   * Whether the instance cannot serve without it. A failing dependency it can serve without is `degraded`, not
   * `down`: taking every instance out of the load balancer for it would turn its outage into the gateway's.
   */
  neededToServe: boolean;
  check(): Promise<DependencyStatus>;
}

/** What the upstream check needs of the upstream's client. */
export interface UpstreamProbe {
  /** Rejects when the upstream cannot be reached or answers 5xx. */
  ping(): Promise<void>;
  /** Whether the upstream refused the key at its last call. */
  readonly refusesKey: boolean;
}

/** What the upstream check needs of the upstream's pacing. */
export interface PacingProbe extends UpstreamPause {
  /** Rejects when the pacing store refuses what taking a slot asks of it, so that upstream calls are held. */
  probe(): Promise<void>;
}

const PACING_UNAVAILABLE = 'The pacing store is unavailable: no duplication is sent upstream until it is back';

/**
 * Upstream mode's check. Accepting a job does not need the upstream (jobs wait and retry until it answers again),
 * so it is never needed to serve. A pause the upstream asked for (a 429) is its instruction, followed, not an
 * outage: the upstream stays up, and the check says until when nothing is sent.
 */
export function upstreamCheck(upstream: UpstreamProbe, pacing: PacingProbe, clock: Clock): DependencyCheck {
  return {
    neededToServe: false,
    check: async () => {
      // Side by side: a hung pacing store takes most of the check's time before it counts as unreachable.
      const paused = pacing.remainingMs().catch(() => null);
      // Reading the pause is not enough: a store that answers reads and refuses writes holds every call too.
      const paces = pacing.probe().then(
        () => true,
        () => false,
      );
      await upstream.ping();
      if (upstream.refusesKey) {
        return { status: 'degraded', backend: 'braze', message: 'The upstream refused UPSTREAM_API_KEY (401) at its last call: duplications fail until it is replaced' };
      }
      const pausedMs = await paused;
      // The store's own failure is the quota check's to report; what it means here is that nothing is sent.
      if (pausedMs === null || !(await paces)) return { status: 'degraded', backend: 'braze', message: PACING_UNAVAILABLE };
      if (pausedMs === 0) return { status: 'up', backend: 'braze' };
      const until = new Date(Math.ceil((clock.now().getTime() + pausedMs) / 1000) * 1000).toISOString();
      return { status: 'up', backend: 'braze', message: `paused until ${until}: the upstream answered 429, and no duplication is sent before then` };
    },
  };
}

/** Names the failure without echoing hosts, credentials or query text. */
export function describeFailure(error: unknown): string {
  // The gateway's own words, when they say more than the code's generic message, come before the cause's.
  if (error instanceof GatewayError && error.message !== ERROR_CODES[error.code].message) return error.message;
  const cause = unavailableCause(error);
  if (cause !== undefined) return describeFailure(cause);
  if (error instanceof GatewayError) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  // SQLSTATE class 28, invalid authorization: no reconnection fixes it, the operator has to. Only 28P01 is a
  // wrong password; the server's words for the others name hosts, so they go to the log, not to /readyz.
  if (code === '28P01') return `refused the user name or password in DATABASE_URL (${code})`;
  if (typeof code === 'string' && code.startsWith('28')) return `refused the login in DATABASE_URL (${code}; the log has the reason)`;
  if (typeof code === 'string' && code) return `not reachable or failing (${code})`;
  return `failing (${error instanceof Error ? error.name : 'unknown error'})`;
}

/** The per-check bound: a dependency that takes longer is failing, whatever it answers later. */
export const CHECK_TIMEOUT_MS = 2000;

/** What `work` answers, or UNAVAILABLE once `timeoutMs` has passed without an answer. */
export async function withinTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new GatewayError('UNAVAILABLE', `did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface ReadinessLogger extends WorkerLogger {
  child(bindings: Record<string, unknown>): WorkerLogger;
}

/**
 * Every dependency check of the instance, run together for each `/readyz` probe and each scrape of `/metrics`.
 * A check that throws or hangs counts as down when the instance needs its dependency to serve, as degraded
 * otherwise.
 *
 * Load balancers probe, and Prometheus scrapes, every few seconds: the error behind a failing check is logged
 * when it starts failing, as a reminder at most once a minute while it keeps failing, and once when it passes
 * again, not per probe.
 */
export class Readiness {
  private readonly failureLogs = new Map<string, RepeatedFailureLog>();
  private stopping = false;

  constructor(
    private readonly checks: Record<string, DependencyCheck>,
    private readonly clock: Clock,
  ) {}

  /** From now on, log each dependency's failures and recoveries to `logger`. */
  logTo(logger: ReadinessLogger): void {
    for (const name of Object.keys(this.checks)) {
      this.failureLogs.set(
        name,
        new RepeatedFailureLog(logger.child({ dependency: name }), this.clock, {
          failed: 'dependency check failed',
          stillFailing: 'dependency check still fails',
          recovered: 'dependency check passes again',
        }),
      );
    }
  }

  /** From now on the instance reports itself not ready, so load balancers send it nothing more. */
  stop(): void {
    this.stopping = true;
  }

  async report(): Promise<ReadinessReport> {
    const entries = await Promise.all(
      Object.entries(this.checks).map(async ([name, dependency]): Promise<[string, DependencyStatus]> => {
        const failing = dependency.neededToServe ? 'down' : 'degraded';
        try {
          const status = await withinTimeout(dependency.check(), CHECK_TIMEOUT_MS);
          this.failureLogs.get(name)?.succeeded();
          return [name, status.status === 'down' ? { ...status, status: failing } : status];
        } catch (error) {
          this.failureLogs.get(name)?.failed(error);
          return [name, { status: failing, message: describeFailure(error) }];
        }
      }),
    );
    const ready = !this.stopping && entries.every(([, status]) => status.status !== 'down');
    return { ready, stopping: this.stopping, checks: Object.fromEntries(entries) };
  }
}
