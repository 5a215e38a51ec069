import { CommandRefusedError, ERROR_CODES, GatewayError, unavailableCause } from './domain/errors.js';
import type { Clock, UpstreamPause } from './domain/ports.js';
import { RepeatedFailureLog } from './failure-log.js';
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
  /** Degraded only for being slow (a store past CHECK_TIMEOUT_MS, within its `downAfterMs`): it still answers. */
  slow?: boolean;
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
  /**
   * For a dependency that can be slow and still serve (the store: a slow disk slows its commits, not its reads):
   * past CHECK_TIMEOUT_MS it is degraded, and down only when its check fails or has gone this long unanswered.
   * Its check then goes on past a probe that stopped waiting for it, and the next probes wait for the same one.
   * Absent: past CHECK_TIMEOUT_MS it is failing.
   */
  downAfterMs?: number;
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

/** What the upstream check needs of the upstream's circuit (upstream-circuit.ts). */
export interface CircuitState {
  readonly isOpen: boolean;
  /** When the next probe may go, while open. */
  readonly probeAt: Date | null;
}

/** What an open circuit means for jobs, null while closed. */
function circuitHeld(circuit: CircuitState, clock: Clock): string | null {
  if (!circuit.isOpen) return null;
  const probeAt = circuit.probeAt;
  const probe = probeAt === null || probeAt <= clock.now() ? 'one job is sent now as a probe' : `one job is sent as a probe at ${probeAt.toISOString()}`;
  return `circuit open: calls of several jobs failed in a row, so duplications wait without spending attempts; ${probe}`;
}

const PACING_UNAVAILABLE = 'The pacing store is unavailable: no duplication is sent upstream until it is back';
const pacingRefused = (refusal: CommandRefusedError): DependencyStatus => ({
  status: 'degraded',
  backend: 'braze',
  message: `The pacing store refuses the gateway a command (${refusal.message}): no duplication is sent upstream until it is granted`,
});

/**
 * Upstream mode's check. Accepting a job does not need the upstream (jobs wait and retry until it answers again),
 * so it is never needed to serve. A pause the upstream asked for (a 429) is its instruction, followed, not an
 * outage: the upstream stays up, and the check says until when nothing is sent. An open circuit (this instance's
 * duplications failing) is said too, whether or not the upstream's root answers the check.
 */
export function upstreamCheck(upstream: UpstreamProbe, pacing: PacingProbe, circuit: CircuitState, clock: Clock): DependencyCheck {
  return {
    neededToServe: false,
    check: async () => {
      // Side by side: a hung pacing store takes most of the check's time before it counts as unreachable.
      // The end is counted from when the pause is read, not from after the upstream's ping, however long that takes.
      const readAt = clock.now().getTime();
      const paused = pacing.remainingMs().catch((error: unknown) => (error instanceof CommandRefusedError ? error : null));
      // Reading the pause is not enough: a store that answers reads and refuses writes holds every call too.
      const paces = pacing.probe().then(
        () => true,
        (error: unknown) => (error instanceof CommandRefusedError ? error : false),
      );
      const held = circuitHeld(circuit, clock);
      try {
        await upstream.ping();
      } catch (error) {
        if (held === null) throw error;
        throw new GatewayError('UNAVAILABLE', `${describeFailure(error)}; ${held}`, { cause: error });
      }
      if (held !== null) return { status: 'degraded', backend: 'braze', message: `The upstream answers its root, but ${held}` };
      if (upstream.refusesKey) {
        return { status: 'degraded', backend: 'braze', message: 'The upstream refused UPSTREAM_API_KEY (401) at its last call: duplications fail until it is replaced' };
      }
      const [pausedMs, paced] = [await paused, await paces];
      // A command the store's user is not granted is no outage: it lasts until an operator grants it.
      if (pausedMs instanceof CommandRefusedError) return pacingRefused(pausedMs);
      if (paced instanceof CommandRefusedError) return pacingRefused(paced);
      // The store's own failure is the quota check's to report; what it means here is that nothing is sent.
      if (pausedMs === null || !paced) return { status: 'degraded', backend: 'braze', message: PACING_UNAVAILABLE };
      if (pausedMs === 0) return { status: 'up', backend: 'braze' };
      const until = new Date(Math.ceil((readAt + pausedMs) / 1000) * 1000).toISOString();
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
  if (error instanceof GatewayError || error instanceof CommandRefusedError) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  // SQLSTATE class 28, invalid authorization: no reconnection fixes it, the operator has to. Only 28P01 is a
  // wrong password; the server's words for the others name hosts, so they go to the log, not to /readyz.
  if (code === '28P01') return `refused the user name or password in DATABASE_URL (${code})`;
  if (typeof code === 'string' && code.startsWith('28')) return `refused the login in DATABASE_URL (${code}; the log has the reason)`;
  if (typeof code === 'string' && code) return `not reachable or failing (${code})`;
  return `failing (${error instanceof Error ? error.name : 'unknown error'})`;
}

/**
 * The per-check bound, and how long a probe waits: a dependency that takes longer is failing, whatever it answers
 * later, unless it may be slow (`downAfterMs`).
 */
export const CHECK_TIMEOUT_MS = 2000;

/** How long the store's check may go unanswered before the store is down rather than slow. */
export const STORE_DOWN_AFTER_MS = 10_000;

const NO_ANSWER = Symbol('no answer');

/** What `work` answers, or NO_ANSWER once `timeoutMs` has passed without one. */
async function answerWithin<T>(work: Promise<T>, timeoutMs: number): Promise<T | typeof NO_ANSWER> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof NO_ANSWER>((resolve) => {
    timer = setTimeout(() => resolve(NO_ANSWER), timeoutMs);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const noAnswerWithin = (timeoutMs: number) => new GatewayError('UNAVAILABLE', `did not answer within ${timeoutMs} ms`);

/** What `work` answers, or UNAVAILABLE once `timeoutMs` has passed without an answer. */
export async function withinTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  const answer = await answerWithin(work, timeoutMs);
  if (answer === NO_ANSWER) throw noAnswerWithin(timeoutMs);
  return answer;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * How long a check must keep passing, with no failure between, before its failure is logged as over: a check that
 * fails one probe in two (a store answering either side of its bound) stays one failure, reminded once a minute,
 * rather than two lines per probe.
 */
export const CHECK_SETTLE_MS = 60_000;

export interface ReadinessLogger extends WorkerLogger {
  child(bindings: Record<string, unknown>): WorkerLogger;
}

/**
 * Every dependency check of the instance, run together for each `/readyz` probe and each scrape of `/metrics`.
 * A check that throws or hangs counts as down when the instance needs its dependency to serve, as degraded
 * otherwise.
 *
 * Load balancers probe, and Prometheus scrapes, every few seconds: the error behind a failing check is logged
 * when it starts failing, as a reminder at most once a minute while it keeps failing, and once when it has passed
 * again for CHECK_SETTLE_MS, not per probe.
 */
export class Readiness {
  private readonly failureLogs = new Map<string, RepeatedFailureLog>();
  /** The check still running of each dependency that may be slow, and when it started (by `elapsedMs`). */
  private readonly running = new Map<string, { answer: Promise<DependencyStatus>; startedMs: number }>();
  private stopping = false;

  constructor(
    private readonly checks: Record<string, DependencyCheck>,
    private readonly clock: Clock,
    /** Times a check: monotonic, so that a step of the wall clock (NTP) during one neither slows nor downs it. */
    private readonly elapsedMs: () => number = () => performance.now(),
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
        }, { settleMs: CHECK_SETTLE_MS }),
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
          const status = await this.run(name, dependency);
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

  /** One dependency's status: throws when it fails, or, past its limit, has not answered. */
  private async run(name: string, dependency: DependencyCheck): Promise<DependencyStatus> {
    const { downAfterMs } = dependency;
    if (downAfterMs === undefined) return withinTimeout(dependency.check(), CHECK_TIMEOUT_MS);
    let running = this.running.get(name);
    if (!running) {
      const startedMs = this.elapsedMs();
      const started = { answer: dependency.check(), startedMs };
      const done = () => {
        if (this.running.get(name) === started) this.running.delete(name);
      };
      started.answer.then(done, done);
      this.running.set(name, started);
      running = started;
    }
    const status = await answerWithin(running.answer, CHECK_TIMEOUT_MS);
    const tookMs = this.elapsedMs() - running.startedMs;
    if (status === NO_ANSWER) {
      if (tookMs >= downAfterMs) throw noAnswerWithin(downAfterMs);
      return { status: 'degraded', slow: true, message: `slow: its check has not answered for ${seconds(tookMs)} (down after ${seconds(downAfterMs)})` };
    }
    if (status.status !== 'up' || tookMs <= CHECK_TIMEOUT_MS) return status;
    return { ...status, status: 'degraded', slow: true, message: `slow: its check answered in ${seconds(tookMs)}, over ${seconds(CHECK_TIMEOUT_MS)}` };
  }
}
