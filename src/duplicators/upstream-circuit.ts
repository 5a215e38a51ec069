import { outcomeOf, type UpstreamResponse } from '../adapters/braze-client.js';
import type { Clock } from '../domain/ports.js';
import type { DuplicationJob } from '../domain/types.js';
import { FAILURE_REMINDER_MS, jobLogFields, type FailureLogger } from '../failure-log.js';

/** Distinct jobs whose calls must fail transiently in a row to open the circuit: one job's own bad request never does. */
export const CIRCUIT_OPENING_JOBS = 3;

/**
 * The first wait before a probe, doubled after each failed probe up to the last: a blip of a few seconds costs a few
 * seconds, and an outage of hours costs one call per instance every 5 minutes, the longest the retry backoff waits too.
 */
export const CIRCUIT_COOLDOWN_MS = { first: 5000, max: 5 * 60_000 } as const;

/**
 * How long a job waits while the probe is in flight: it answers within UPSTREAM_TIMEOUT_MS, and the jobs held behind
 * it go again a second after it succeeded.
 */
export const CIRCUIT_PROBE_WAIT_MS = 1000;

/** A failed call that counts toward opening the circuit, as the log line says it. */
interface CountedFailure {
  jobId: string;
  outcome: 'unavailable' | 'connect_timeout' | 'timeout' | 'unreachable';
  status: number | null;
}

/**
 * The statuses that say the upstream as a whole cannot answer: a proxy or load balancer in front of a Braze that is
 * down, or overloaded, answers these. A 500 (or any other 5xx) is Braze answering about that one request: a bug
 * that one campaign meets gets it on every try while every other campaign is served, so it must not hold them.
 */
const UPSTREAM_DOWN_STATUSES: ReadonlySet<number> = new Set([408, 502, 503, 504]);

/**
 * What a call's answer says about the upstream: down (by the outcome its metric counts), up (it answered, even with a
 * refusal, a 500 or a 429), or nothing.
 */
function verdict(response: UpstreamResponse): CountedFailure['outcome'] | 'answered' | 'unknown' {
  // A certificate refused before anything was sent says nothing of whether Braze is up.
  if (response.kind === 'rejected' && response.status === null) return 'unknown';
  const outcome = outcomeOf(response);
  if (outcome === 'connect_timeout' || outcome === 'timeout' || outcome === 'unreachable') return outcome;
  return outcome === 'unavailable' && response.status !== null && UPSTREAM_DOWN_STATUSES.has(response.status) ? outcome : 'answered';
}

/**
 * Holds upstream duplications while the upstream is down, so that an outage waits in the queue rather than spending
 * every job's attempts (and failing them), each call possibly making a copy the gateway never hears of.
 *
 * Closed, every call goes. Once the calls of CIRCUIT_OPENING_JOBS distinct jobs have failed in a row saying the
 * upstream is down (502, 503, 504 or 408, a timeout, a failed connection; any other answer, a 500 too, resets the
 * count), it opens: no call goes until the
 * cooldown ends. Then one job's call goes as a probe, the others still waiting: its success closes the circuit, its
 * transient failure opens it again for twice the cooldown.
 *
 * Each instance keeps its own, in memory: every instance calls the same upstream, so each meets the outage within a
 * few calls of its own, and sharing the state through a store would add that store's outages to the upstream's.
 */
export class UpstreamCircuit {
  /** The transient failures in a row while closed, the last of each job's: a job failing again adds no job. */
  private readonly streak = new Map<string, CountedFailure>();
  /** Open (probing once its cooldown has passed): since when, until when no call goes, the cooldown that set it, and how many times a job was sent back (a job held through several cooldowns counts each time). */
  private open: { since: number; until: number; cooldownMs: number; deferrals: number; failedProbes: number; remindedAt: number } | null = null;
  /** The job whose call is the probe, while it is in flight. */
  private probe: string | null = null;

  constructor(
    private readonly logger: FailureLogger,
    private readonly clock: Clock,
  ) {}

  /** Whether calls are held (the probe's aside): what the metric and /readyz report. */
  get isOpen(): boolean {
    return this.open !== null;
  }

  /** When the next probe may go, while open. */
  get probeAt(): Date | null {
    return this.open === null ? null : new Date(this.open.until);
  }

  /**
   * 0 when the job's call may go (closed, or this job is the probe); otherwise how long it waits. A job admitted as the
   * probe and then not sent gives the role back with `release`.
   */
  admit(job: DuplicationJob): number {
    const open = this.open;
    if (open === null) return 0;
    const now = this.clock.now().getTime();
    let waitMs: number;
    if (now < open.until) waitMs = open.until - now;
    else if (this.probe === null || this.probe === job.id) {
      this.probe = job.id;
      return 0;
    } else waitMs = CIRCUIT_PROBE_WAIT_MS;
    open.deferrals += 1;
    if (now - open.remindedAt >= FAILURE_REMINDER_MS) {
      open.remindedAt = now;
      this.logger.warn(
        { since: new Date(open.since).toISOString(), deferrals: open.deferrals, failedProbes: open.failedProbes, probeAt: new Date(Math.max(now, open.until)).toISOString() },
        'the upstream circuit is still open: upstream duplications are held',
      );
    }
    return waitMs;
  }

  /** The job admitted as the probe was not sent after all (no pacing slot): another may probe. */
  release(job: DuplicationJob): void {
    if (this.probe === job.id) this.probe = null;
  }

  /**
   * Takes in what a call that went came to. Returns how long the job must wait at least before its next call: for a
   * failed probe, twice the new cooldown, so that it is not due when the next probe goes. Claims go by turn, so
   * otherwise the job first in the queue would be every probe and spend all its attempts within minutes; this way
   * the next probe is another job's, and the first two jobs in the queue take turns.
   */
  answered(job: DuplicationJob, response: UpstreamResponse): number {
    const seen = verdict(response);
    const wasProbe = this.probe === job.id;
    if (wasProbe) this.probe = null;
    if (seen === 'unknown') return 0;
    const now = this.clock.now().getTime();
    if (seen === 'answered') {
      this.streak.clear();
      // A call sent before the circuit opened may answer while it is open: the upstream is back either way.
      if (this.open !== null) this.close(now, job);
      return 0;
    }
    if (this.open !== null) {
      if (!wasProbe) return 0;
      const cooldownMs = Math.min(CIRCUIT_COOLDOWN_MS.max, this.open.cooldownMs * 2);
      this.open = { ...this.open, until: now + cooldownMs, cooldownMs, failedProbes: this.open.failedProbes + 1 };
      return 2 * cooldownMs;
    }
    this.streak.set(job.id, { jobId: job.id, outcome: seen, status: response.status });
    if (this.streak.size < CIRCUIT_OPENING_JOBS) return 0;
    const cooldownMs = CIRCUIT_COOLDOWN_MS.first;
    this.open = { since: now, until: now + cooldownMs, cooldownMs, deferrals: 0, failedProbes: 0, remindedAt: now };
    this.logger.warn(
      { failures: [...this.streak.values()], probeAt: new Date(now + cooldownMs).toISOString() },
      'the upstream circuit is open: calls of several jobs failed in a row, so upstream duplications are held and the upstream probed with one',
    );
    this.streak.clear();
    return 0;
  }

  private close(now: number, job: DuplicationJob): void {
    const open = this.open;
    if (open === null) return;
    this.open = null;
    this.probe = null;
    this.logger.info(
      { ...jobLogFields(job), since: new Date(open.since).toISOString(), deferrals: open.deferrals, failedProbes: open.failedProbes, openMs: now - open.since },
      'the upstream circuit is closed: the upstream answered, upstream duplications resume',
    );
  }
}
