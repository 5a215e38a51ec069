import { isStoreBusy, isUnavailable, unavailableCause } from './domain/errors.js';
import type { Clock } from './domain/ports.js';
import type { DuplicationJob } from './domain/types.js';

/** What a failure is logged to: pino's loggers, and the small ones the worker, the readiness checks and tests pass. */
export interface FailureLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

/** How often a failure that keeps repeating is logged again. */
export const FAILURE_REMINDER_MS = 60_000;

export interface ErrorSummary {
  type: string;
  code?: string;
  message: string;
}

/** An error's type, code and message without its stack: all a log line needs about a dependency's error. */
export function summarizeError(error: unknown): ErrorSummary {
  if (!(error instanceof Error)) return { type: typeof error, message: String(error) };
  const code = (error as { code?: unknown }).code;
  // Node reports a connection refused on every address of a host name as one AggregateError with no message.
  const message =
    error.message || (error instanceof AggregateError ? error.errors.map((inner: unknown) => (inner instanceof Error ? inner.message : String(inner))).join('; ') : '');
  // The class, as pino names an error: some drivers give their errors a bare `name` ('error').
  return { type: error.constructor.name || error.name, ...(typeof code === 'string' ? { code } : {}), message };
}

/**
 * What names a job on each line about it: its id, and the id of the request that asked for it when the job has one,
 * so that one search by `reqId` finds the request's lines and its job's.
 */
export const jobLogFields = (job: Pick<DuplicationJob, 'id' | 'requestId'>): { jobId: string; reqId?: string } =>
  job.requestId === null ? { jobId: job.id } : { jobId: job.id, reqId: job.requestId };

/**
 * One failure, logged by what it means: a dependency that cannot be reached (an outage the operator fixes
 * outside the gateway) is a warning with the dependency's own error (or what it came without one), whose
 * stack says nothing; anything else is a bug, an error with its stack.
 */
export function logFailure(logger: FailureLogger, error: unknown, fields: object, message: string): void {
  if (isUnavailable(error)) logger.warn({ ...fields, cause: summarizeError(unavailableCause(error) ?? error) }, message);
  else logger.error({ ...fields, err: error }, message);
}

/**
 * What a failure is, for the log: a dependency that cannot be reached, the store busy (it answers, but gave up a wait
 * for a lock another keeps), or a bug. Each is a streak of its own: an outage that begins while the store is busy is
 * logged when it begins, not left to the next reminder.
 */
type FailureKind = 'outage' | 'busy' | 'bug';

const failureKind = (error: unknown): FailureKind => (isStoreBusy(error) ? 'busy' : isUnavailable(error) ? 'outage' : 'bug');

export interface RepeatedFailureMessages {
  /** The first failure, or the first of another kind (failureKind: an outage after a bug, or after the store was busy, or the reverse). */
  failed: string;
  /** A reminder while it keeps failing, with the number of failures so far. */
  stillFailing: string;
  /**
   * The first success after failures (or, with `settleMs`, the first success that lasted that long, or the next
   * failure after successes that lasted that long).
   */
  recovered: string;
}

/**
 * How long the successes after a streak of the store busy must go on for those that serve one workspace's writes
 * beside another's refused for a held lock (the requests' and the job outcomes' logs): such a lock refuses only the
 * writes that need it, every 8 s or so while it is held, and the others are served between them.
 */
export const BUSY_SETTLE_MS = 60_000;

export interface RepeatedFailureOptions {
  /**
   * How long successes must go on, with no failure between them, before the failure counts as over. A
   * dependency that fails one call in two (a full disk failing the claims that write, passing those that
   * find nothing) is then one failure in the log, not a line for every turn.
   */
  settleMs?: number;
  /**
   * As settleMs, for a streak of the store busy (`settleMs` unless given). A lock kept refuses only the writes that need
   * it, and the others are served between them: taken as over after a few seconds of those, a workspace whose writes
   * waited for a held lock logged a failure and a recovery for each of its refusals.
   */
  busySettleMs?: number;
  /**
   * Log a failure that is not an outage as a warning too (with its stack, as an error would be): for a write
   * whose failure costs nothing but itself, such as a key's last use.
   */
  warningsOnly?: boolean;
}

/**
 * The log of something retried again and again (the worker claiming jobs twice a second): one line when it
 * starts failing, a reminder with the count at most once per FAILURE_REMINDER_MS while it keeps failing,
 * and one line when it works again, rather than a line per try.
 */
export class RepeatedFailureLog {
  private streak: { since: Date; failures: number; kind: FailureKind; loggedAt: number; succeedingSince?: number } | undefined;
  private readonly logger: FailureLogger;

  constructor(
    logger: FailureLogger,
    private readonly clock: Clock,
    private readonly messages: RepeatedFailureMessages,
    private readonly options: RepeatedFailureOptions = {},
  ) {
    this.logger = options.warningsOnly
      ? { info: (object, message) => logger.info(object, message), warn: (object, message) => logger.warn(object, message), error: (object, message) => logger.warn(object, message) }
      : logger;
  }

  /** `fields` go on a line logged for this failure, when it starts a streak (a request's id, say), not on reminders. */
  failed(error: unknown, fields: object = {}): void {
    const now = this.clock.now();
    const kind = failureKind(error);
    // Successes that lasted the settling time with none after them to say so (job outcomes come only with
    // traffic): the failure they followed is over, logged now, and this one starts another.
    if (this.streak?.succeedingSince !== undefined && now.getTime() - this.streak.succeedingSince >= this.settleMs(this.streak.kind)) this.recover();
    const streak = this.streak;
    if (!streak || streak.kind !== kind) {
      this.streak = { since: streak?.since ?? now, failures: (streak?.failures ?? 0) + 1, kind, loggedAt: now.getTime() };
      const sofar = streak ? { failures: this.streak.failures, since: this.streak.since.toISOString() } : {};
      logFailure(this.logger, error, { ...fields, ...sofar }, this.messages.failed);
      return;
    }
    streak.failures += 1;
    streak.succeedingSince = undefined;
    if (now.getTime() - streak.loggedAt < FAILURE_REMINDER_MS) return;
    streak.loggedAt = now.getTime();
    const reminder = { failures: streak.failures, since: streak.since.toISOString(), cause: summarizeError(unavailableCause(error) ?? error) };
    if (kind !== 'bug') this.logger.warn(reminder, this.messages.stillFailing);
    else this.logger.error(reminder, this.messages.stillFailing);
  }

  succeeded(): void {
    const streak = this.streak;
    if (!streak) return;
    const now = this.clock.now().getTime();
    streak.succeedingSince ??= now;
    if (now - streak.succeedingSince < this.settleMs(streak.kind)) return;
    this.recover();
  }

  /** How long successes must go on before a streak of `kind` counts as over. */
  private settleMs(kind: FailureKind): number {
    const settleMs = this.options.settleMs ?? 0;
    return kind === 'busy' ? (this.options.busySettleMs ?? settleMs) : settleMs;
  }

  private recover(): void {
    const streak = this.streak;
    if (!streak) return;
    // Logged once the successes have lasted the settling time, or later: when they began dates the recovery.
    const workingSince = streak.succeedingSince === undefined ? {} : { workingSince: new Date(streak.succeedingSince).toISOString() };
    this.logger.info({ failures: streak.failures, since: streak.since.toISOString(), ...workingSince }, this.messages.recovered);
    this.streak = undefined;
  }
}
