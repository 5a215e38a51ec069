import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { isUnavailable, type GatewayError } from '../domain/errors.js';
import type { ClaimedJob, Clock, Duplicator, DuplicationResult, GatewayStore, JobOutcome, NewerSchema } from '../domain/ports.js';
import type { DuplicationJob, JobError, JobErrorCode } from '../domain/types.js';
import { jobEvent } from '../domain/request-events.js';
import { BUSY_SETTLE_MS, jobLogFields, logFailure, RepeatedFailureLog, type FailureLogger } from '../failure-log.js';

export interface WorkerOptions {
  /** Jobs run at once by this process. 0 disables the worker. */
  concurrency: number;
  /** How long a claim lasts; a job whose lease runs out (a crashed worker) is claimed again. */
  leaseMs: number;
  /** How often to look for due jobs when nothing woke the worker. */
  pollIntervalMs: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** The worker logs its failures as every other part does. */
export type WorkerLogger = FailureLogger;

/** The worker's logger: a job sent back to wait for the pacing store is a line for tracing it, not for every day. */
export interface JobWorkerLogger extends WorkerLogger {
  debug(object: object, message: string): void;
}

/**
 * Why a job went back to the queue without using an attempt: no upstream slot yet (or an upstream pause), the
 * upstream pacing store unavailable, the upstream down (its circuit open), the store failing under the run.
 */
export const DEFERRAL_REASONS = ['upstream_slot', 'pacing_store', 'upstream_circuit', 'store'] as const;
export type DeferralReason = (typeof DEFERRAL_REASONS)[number];

const DEFERRAL_REASON: Record<Extract<DuplicationResult, { kind: 'deferred' }>['waitsFor'], DeferralReason> = {
  slot: 'upstream_slot',
  'pacing store': 'pacing_store',
  upstream: 'upstream_circuit',
};

export interface WorkerObserver {
  /**
   * `durationMs`: the attempt that finished it; `errorCode`: why a FAILED job failed, null for a success;
   * `sinceAcceptedMs`: from the job's acceptance (its created_at) to its finish.
   */
  jobFinished?(status: 'SUCCEEDED' | 'FAILED', durationMs: number, errorCode: JobErrorCode | null, sinceAcceptedMs: number): void;
  jobRetried?(): void;
  jobDeferred?(reason: DeferralReason): void;
  /** A claim took a RUNNING job whose lease had expired. */
  jobTakenOver?(): void;
}

/** The gateway's retry schedule: from 1 s, doubling per attempt, never more than 5 minutes. */
export const RETRY_BACKOFF = { backoffBaseMs: 1000, backoffMaxMs: 5 * 60_000 } as const;

/** Claims must work this long before a claim failure is logged as over (see RepeatedFailureOptions). */
export const CLAIM_RECOVERY_SETTLE_MS = 5_000;

/** Exponential backoff with jitter, never shorter than what the upstream asked for. */
export function backoffDelay(attempt: number, options: Pick<WorkerOptions, 'backoffBaseMs' | 'backoffMaxMs'>, retryAfterMs = 0, random = Math.random): number {
  const exponential = Math.min(options.backoffMaxMs, options.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exponential / 2 + random() * (exponential / 2);
  return Math.max(Math.round(jittered), retryAfterMs);
}

/**
 * How long a job has waited from its acceptance to `now`: until its claim by the store's clock (the claim's row gives
 * both times: updatedAt is the claim's), then by this instance's. Either clock alone measures across instances whose
 * clocks may differ from the store's, and from each other. Never below 0: a job accepted by an instance of an older
 * version has its created_at from that instance's clock, which may be ahead of the store's.
 */
const waitedMs = (job: DuplicationJob, claimedAt: Date, now: Date): number =>
  Math.max(0, job.updatedAt.getTime() - job.createdAt.getTime() + (now.getTime() - claimedAt.getTime()));

/** What a run came to, kept until the store has taken it. */
interface RunOutcome {
  result: DuplicationResult;
  /** The wait before a transient failure's retry. */
  retryDelayMs: number;
  /** How long the run took. */
  durationMs: number;
  /** This attempt is known to have made nothing upstream (refused, rate limited, never sent). */
  unacted: boolean;
}

interface Recordable {
  job: ClaimedJob;
  lease: string;
  claimedAt: Date;
  outcome: RunOutcome;
}

/**
 * A run whose outcome the store failed to take, held under its lease. `outcome` null: the run got none (the store
 * failed under it), so a stop hands the job back, and it is let go when the lease ends. Times are this instance's
 * clock's.
 */
interface HeldRun extends Omit<Recordable, 'outcome'> {
  outcome: RunOutcome | null;
  leaseEndsAt: number;
  failedAt: number;
  /** Tries to record it so far. */
  tries: number;
  nextTryAt: number;
}

/** How long a held outcome waits before each new try: doubling from the first, at most the last. */
export const HELD_RETRY_MS = { first: 1000, max: 5000 } as const;

/** Claim → run → complete, retry or fail. Several workers (processes) may share one store. */
export class JobWorker {
  /** Names the process holding a lease, so operators can tell which instance runs a job. */
  readonly owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  /**
   * Each claim holds its jobs under a lease of its own (the owner and a claim number): a run that outlived its
   * lease while this same process claimed the job again can no longer retry, defer or finish it.
   */
  private claims = 0;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  /** The runs in progress, each with the lease it holds its job under: what a stop hands back. */
  private readonly active = new Map<Promise<void>, string>();
  /**
   * Runs whose outcome the store failed to record, by job id: the job stays RUNNING under this process, which
   * tries to record the outcome again (see recordHeld), and a stop records it or hands the job back. It did run, so
   * unlike a job whose run was cut short its attempt stays counted. An outcome is kept past the lease's end: the
   * store's owner check refuses it once another run holds the job, and a claim of this process that takes the job
   * back records it instead of running the job again (see recordTakenBack).
   */
  private readonly unrecorded = new Map<string, HeldRun>();
  private wake: (() => void) | null = null;
  private woken = false;
  /** Set when the duplicator deferred a job: nothing can run before then, so claiming waits. */
  private claimPausedUntil = 0;
  /**
   * The store's schema as last read, when a newer version had migrated it under this one: such a version may have
   * jobs this one cannot run as it means, so claiming waits (for the schema to be this version's again, a restore).
   */
  private newer: NewerSchema | null = null;
  /** When the schema's version was last read: at most once a poll interval, since a busy loop turns once per job. */
  private schemaReadAt = -Infinity;
  /** Claiming is retried every poll while the store is down: a line per try would bury the log. */
  private readonly claimFailures: RepeatedFailureLog;
  /** Jobs sent back to the queue because the store failed under them: a line per outage, not per job. */
  private readonly storeOutages: RepeatedFailureLog;

  constructor(
    private readonly store: GatewayStore,
    private readonly duplicator: Duplicator,
    private readonly clock: Clock,
    private readonly options: WorkerOptions,
    private readonly logger: JobWorkerLogger,
    private readonly observer: WorkerObserver = {},
  ) {
    this.claimFailures = new RepeatedFailureLog(
      logger,
      clock,
      { failed: 'claiming jobs failed; retrying', stillFailing: 'claiming jobs still fails; retrying', recovered: 'claiming jobs works again' },
      { settleMs: CLAIM_RECOVERY_SETTLE_MS },
    );
    // Settled like claims: a store short of connections fails every few jobs, and each success between would
    // otherwise end the outage in the log, to start it again at the next failure.
    this.storeOutages = new RepeatedFailureLog(
      logger,
      clock,
      {
        failed: 'the store is unavailable; jobs go back to the queue without spending an attempt',
        stillFailing: 'the store is still unavailable; jobs go back to the queue without spending an attempt',
        recovered: 'jobs run again',
      },
      { settleMs: CLAIM_RECOVERY_SETTLE_MS, busySettleMs: BUSY_SETTLE_MS },
    );
  }

  start(): void {
    if (this.running || this.options.concurrency <= 0) return;
    this.running = true;
    this.loopDone = this.loop();
  }

  /** Tells the worker a job was enqueued, so it does not wait for the next poll. */
  notify(): void {
    this.woken = true;
    this.wake?.();
  }

  /**
   * Stops claiming, lets running jobs finish for up to `graceMs`, then records the outcomes it holds and hands back
   * the jobs it still holds without one: in upstream mode each spends the attempt it was claimed with.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.notify();
    await this.loopDone;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.active.keys()]),
      new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
    ]);
    clearTimeout(timer);
    let released = 0;
    const now = this.clock.now();
    // A run cut short in upstream mode may have its call in flight, and Braze may act on it: its attempt stays counted,
    // as one that may have acted, as a held run's does below. In local mode it made nothing, and costs nothing.
    const keepAttempts = this.duplicator.actsOutsideStore;
    try {
      for (const lease of new Set(this.active.values())) released += await this.store.releaseJobs(lease, now, { keepAttempts });
    } catch (error) {
      // The stop goes on: the jobs are not lost, only later, run again once their lease expires.
      logFailure(this.logger, error, {}, 'returning unfinished jobs to the queue failed; they run again when their lease expires');
    }
    // A job claimed again since is under another lease, which the store's check leaves alone.
    for (const held of this.heldRuns(now)) {
      try {
        if (held.outcome) await this.recordLate(held, held.outcome, now);
        else if (await this.store.retryJob(held.job.id, held.lease, now, held.job.error, now)) released += 1;
      } catch (error) {
        logFailure(this.logger, error, jobLogFields(held.job), 'returning unfinished jobs to the queue failed; they run again when their lease expires');
      }
    }
    if (released > 0) this.logger.warn({ released }, 'returned unfinished jobs to the queue');
  }

  private async loop(): Promise<void> {
    while (this.running) {
      await this.recordHeld();
      const free = this.options.concurrency - this.active.size;
      let claimed: ClaimedJob[] = [];
      const now = this.clock.now();
      const lease = `${this.owner}:${++this.claims}`;
      if (free > 0 && now.getTime() >= this.claimPausedUntil && (await this.schemaIsKnown())) {
        try {
          claimed = await this.store.claimJobs(lease, free, now, new Date(now.getTime() + this.options.leaseMs));
          this.claimFailures.succeeded();
        } catch (error) {
          this.claimFailures.failed(error);
        }
      }
      for (const job of claimed) {
        const held = this.unrecorded.get(job.id);
        if (held?.outcome && held.lease === job.takenOverFrom) {
          await this.recordTakenBack(held, held.outcome, job, lease, now);
          continue;
        }
        if (job.takenOverFrom !== undefined) this.tookOver(job, job.takenOverFrom);
        const run = this.run(job, lease, now).finally(() => {
          this.active.delete(run);
          this.notify();
        });
        this.active.set(run, lease);
      }
      if (claimed.length === 0 || this.active.size >= this.options.concurrency) await this.idle();
    }
  }

  /** Whether the store's schema is at most this version's, read again once a poll interval has passed. */
  private async schemaIsKnown(): Promise<boolean> {
    const now = performance.now();
    if (now - this.schemaReadAt < this.options.pollIntervalMs) return this.newer === null;
    this.schemaReadAt = now;
    let newer: NewerSchema | null;
    try {
      newer = await this.store.newerSchema();
    } catch {
      // The claim reports a store that cannot be read, as it does on every poll.
      return this.newer === null;
    }
    if (newer && !this.newer) this.logger.warn({ found: newer.found, known: newer.known }, `claiming no more jobs: ${newer.message}`);
    if (!newer && this.newer) this.logger.info({ known: this.newer.known }, "claiming jobs again: the store's schema is this version's");
    this.newer = newer;
    return newer === null;
  }

  private idle(): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.options.pollIntervalMs);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wake = null;
        self.woken = false;
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(job: ClaimedJob, lease: string, claimedAt: Date): Promise<void> {
    const startedAt = Date.now();
    // Once a run that acts outside the store has returned, its effect is made: an outcome the store then fails to
    // take must not send the job back for free, or every try would make another copy upstream.
    let outcome: RunOutcome | null = null;
    try {
      const result: DuplicationResult =
        job.attempts > this.options.maxAttempts
          ? { kind: 'permanent', error: job.error ?? { code: 'ATTEMPTS_EXHAUSTED', message: 'The job was interrupted too many times' } }
          : await this.duplicator.duplicate(job).catch((error: unknown) => {
              // The store failing under the run (the local duplicator reads it) is no fault of the job.
              if (isUnavailable(error)) throw error;
              logFailure(this.logger, error, jobLogFields(job), 'duplication raised an unexpected error');
              return { kind: 'transient', error: { code: 'INTERNAL_ERROR', message: 'Unexpected error while duplicating' } } as const;
            });
      const now = this.clock.now();
      if (result.kind === 'deferred') this.claimPausedUntil = Math.max(this.claimPausedUntil, now.getTime() + result.retryAfterMs);
      // The backoff's jitter is drawn once: a retry recorded late waits as long as one recorded at once.
      const retryDelayMs = result.kind === 'transient' ? backoffDelay(job.attempts, this.options, result.retryAfterMs) : 0;
      outcome = { result, retryDelayMs, durationMs: Date.now() - startedAt, unacted: isUnacted(result) };
      await this.record({ job, lease, claimedAt, outcome }, now);
    } catch (error) {
      if (isUnavailable(error) && (!outcome || !this.duplicator.actsOutsideStore) && (await this.deferInOutage(job, lease, error))) return;
      logFailure(this.logger, error, jobLogFields(job), 'recording the job outcome failed');
      this.holdUnrecorded({ job, lease, claimedAt, outcome });
    }
  }

  /**
   * Writes what a run came to, as of `now`, and counts and logs it. False when the lease is no longer this run's
   * (nothing written); throws when the store fails.
   */
  private async record({ job, lease, claimedAt, outcome }: Recordable, now: Date): Promise<boolean> {
    const { result, retryDelayMs, durationMs, unacted } = outcome;
    if (result.kind === 'deferred') {
      if (!(await this.store.deferJob(job.id, lease, new Date(now.getTime() + result.retryAfterMs), now))) return this.leaseLost(job);
      this.storeOutages.succeeded();
      this.observer.jobDeferred?.(DEFERRAL_REASON[result.waitsFor]);
      const waiting = { ...jobLogFields(job), delayMs: result.retryAfterMs };
      // A slot comes at the window's end, so each instance defers at most its concurrency a window. The pacing
      // store is asked again every few seconds for as long as it is down, and the upstream's circuit tried again
      // after each cooldown, every job each time, while the duplicator logs the outage itself once: that line is
      // for tracing one job.
      if (result.waitsFor === 'slot') this.logger.info(waiting, 'job waits for an upstream slot');
      else if (result.waitsFor === 'upstream') this.logger.debug(waiting, 'job waits for the upstream to answer again');
      else this.logger.debug(waiting, 'job waits for the upstream pacing store');
      return true;
    }
    if (result.kind === 'transient' && job.attempts < this.options.maxAttempts) {
      if (!(await this.store.retryJob(job.id, lease, new Date(now.getTime() + retryDelayMs), result.error, now, unacted))) return this.leaseLost(job);
      this.storeOutages.succeeded();
      this.observer.jobRetried?.();
      this.logger.warn({ ...jobLogFields(job), attempt: job.attempts, delayMs: retryDelayMs, error: result.error }, 'job will be retried');
      return true;
    }
    // Its event is stamped now, as it is written: the stores rely on events being stamped just before they commit.
    const finish = this.outcome(job, result, now, unacted);
    if (!(await this.store.finishJob(job.id, lease, finish, now))) return this.leaseLost(job);
    this.storeOutages.succeeded();
    this.observer.jobFinished?.(finish.status, durationMs, finish.error?.code ?? null, waitedMs(job, claimedAt, now));
    const finished = { ...jobLogFields(job), status: finish.status, attempts: job.attempts };
    // A job that failed for good is what the caller will ask about: the line says why.
    if (finish.status === 'FAILED') this.logger.warn({ ...finished, error: finish.error }, 'job finished');
    else this.logger.info(finished, 'job finished');
    return true;
  }

  /**
   * Sends back to the queue, without spending an attempt, a job whose run or outcome the store failed (out of
   * connections, restarting, full), when running it again makes nothing twice: an outage of a few minutes would
   * otherwise spend every attempt of the jobs that met it, and fail them for good. False when the store cannot take
   * even that.
   */
  private async deferInOutage(job: DuplicationJob, lease: string, error: GatewayError): Promise<boolean> {
    const now = this.clock.now();
    const delayMs = (error.retryAfterSeconds ?? 5) * 1000;
    this.storeOutages.failed(error);
    try {
      if (!(await this.store.deferJob(job.id, lease, new Date(now.getTime() + delayMs), now))) {
        this.leaseLost(job);
        return true;
      }
    } catch {
      return false;
    }
    this.observer.jobDeferred?.('store');
    this.logger.debug({ ...jobLogFields(job), delayMs }, 'job waits for the store');
    return true;
  }

  /**
   * Keeps a run whose outcome the store failed to take, to record it once the store takes it: in upstream mode the
   * job would otherwise run again once the lease ends, and Braze copy the campaign twice.
   */
  private holdUnrecorded(run: Omit<HeldRun, 'leaseEndsAt' | 'failedAt' | 'tries' | 'nextTryAt'>): void {
    const now = this.clock.now().getTime();
    this.unrecorded.set(run.job.id, {
      ...run,
      // By this instance's clock, from before the claim: never past the lease's end by the store's (on PostgreSQL,
      // the database server's), which began when the claim was written.
      leaseEndsAt: run.claimedAt.getTime() + this.options.leaseMs,
      failedAt: now,
      tries: 1,
      nextTryAt: now + HELD_RETRY_MS.first,
    });
  }

  /** The runs held, less those without an outcome whose lease ended: those jobs are the next claim's, to run. */
  private heldRuns(now: Date): HeldRun[] {
    for (const [jobId, held] of this.unrecorded) if (!held.outcome && held.leaseEndsAt <= now.getTime()) this.unrecorded.delete(jobId);
    return [...this.unrecorded.values()];
  }

  /** Tries again, once its wait is over, to record each outcome held. */
  private async recordHeld(): Promise<void> {
    for (const held of this.heldRuns(this.clock.now())) {
      const now = this.clock.now();
      if (held.outcome && now.getTime() >= held.nextTryAt) await this.tryRecordingHeld(held, held.outcome, now);
    }
  }

  private async tryRecordingHeld(held: HeldRun, outcome: RunOutcome, now: Date): Promise<void> {
    try {
      await this.recordLate(held, outcome, now);
    } catch {
      // Logged once, at the first failure: the outcome stays held.
      held.tries += 1;
      held.nextTryAt = now.getTime() + Math.min(HELD_RETRY_MS.max, HELD_RETRY_MS.first * 2 ** (held.tries - 1));
    }
  }

  /**
   * A claim of this process took back, its lease having ended, a job whose outcome it holds (the store was down for
   * longer than the lease): the outcome is recorded under the claim's lease, which counted one more attempt,
   * rather than the job run again, in upstream mode a second call to Braze. Held again under that lease if the
   * store fails it.
   */
  private async recordTakenBack(held: HeldRun, outcome: RunOutcome, job: ClaimedJob, lease: string, claimedAt: Date): Promise<void> {
    Object.assign(held, { job, lease, claimedAt, leaseEndsAt: claimedAt.getTime() + this.options.leaseMs });
    await this.tryRecordingHeld(held, outcome, claimedAt);
  }

  private async recordLate(held: HeldRun, outcome: RunOutcome, now: Date): Promise<void> {
    const recorded = await this.record({ ...held, outcome }, now);
    this.unrecorded.delete(held.job.id);
    if (recorded) {
      this.logger.info(
        { ...jobLogFields(held.job), tries: held.tries + 1, delayMs: now.getTime() - held.failedAt },
        'recorded a job outcome after the store came back',
      );
    }
  }

  /**
   * The run that held the job's lease may have got as far as the upstream call before its instance died, hung or lost
   * the store: this run sends it again, and nothing else records that it may have been made twice.
   */
  private tookOver(job: ClaimedJob, previousLeaseOwner: string): void {
    this.observer.jobTakenOver?.();
    this.logger.warn(
      { ...jobLogFields(job), previousLeaseOwner, attempts: job.attempts },
      'took over a job whose lease expired; in upstream mode the upstream may have received it twice',
    );
  }

  private leaseLost(job: DuplicationJob): false {
    this.logger.warn(jobLogFields(job), 'lease lost before the job finished; another run owns it');
    return false;
  }

  private outcome(job: ClaimedJob, result: Exclude<DuplicationResult, { kind: 'deferred' }>, now: Date, unacted: boolean): JobOutcome {
    if (result.kind === 'succeeded') {
      return {
        status: 'SUCCEEDED',
        resultCampaignId: result.resultCampaignId,
        error: null,
        newCampaign: result.newCampaign,
        event: jobEvent(job, 'CAMPAIGN_DUPLICATED', now, {
          sourceCampaignId: job.sourceCampaignId,
          resultCampaignId: result.resultCampaignId,
          name: job.name,
          attempts: job.attempts,
          ...result.details,
        }),
      };
    }
    const error: JobError = result.error;
    return {
      status: 'FAILED',
      resultCampaignId: null,
      error,
      event: jobEvent(job, 'CAMPAIGN_DUPLICATION_FAILED', now, {
        sourceCampaignId: job.sourceCampaignId,
        name: job.name,
        attempts: job.attempts,
        error,
        ...(this.duplicator.actsOutsideStore ? { upstreamMayHaveActed: mayHaveActed(job, unacted) } : {}),
      }),
    };
  }
}

/** Only refusals and calls that never left are known to have made nothing upstream. */
const isUnacted = (result: DuplicationResult): boolean => (result.kind === 'permanent' || result.kind === 'transient') && result.mayHaveActed === false;

/**
 * Whether a job failed for good may have been done upstream: some attempt it counts, this one included, is not known
 * to have made nothing. A run taken over, or an earlier version's retry, counted its attempt and no more, so it counts
 * as one that may have.
 */
const mayHaveActed = (job: ClaimedJob, unacted: boolean): boolean => job.attempts > (job.upstreamUnactedAttempts ?? 0) + (unacted ? 1 : 0);
