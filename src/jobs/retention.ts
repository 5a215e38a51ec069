import type { Clock, EventPruneCursor, GatewayStore } from '../domain/ports.js';
import { RepeatedFailureLog } from '../failure-log.js';
import type { WorkerLogger } from './worker.js';

export interface RetentionOptions {
  jobRetentionMs: number;
  eventRetentionMs: number;
  /** How often a pass runs. The first runs right after start. */
  intervalMs: number;
  /** Rows deleted (events: examined) per statement; small enough that no request waits long behind a delete. */
  batchSize: number;
}

export interface PruneCounts {
  jobs: number;
  events: number;
  idempotencyKeys: number;
}

/** The store's table each count of a pass is pruned from: the label of the pruned rows metric. */
export const PRUNED_TABLES = { jobs: 'jobs', events: 'security_events', idempotencyKeys: 'idempotency_keys' } as const satisfies Record<keyof PruneCounts, string>;
export type PrunedTable = (typeof PRUNED_TABLES)[keyof PruneCounts];

export interface RetentionObserver {
  /** One batch deleted `rows` rows of `table`: counted as it goes, so that a long pass shows while it runs. */
  pruned?(table: PrunedTable, rows: number): void;
  /** A pass ended, all done or stopped, after `durationMs` by the pruner's clock. */
  passFinished?(durationMs: number): void;
}

/** How often a long pass says how far it has got. */
const PROGRESS_INTERVAL_MS = 30_000;

const total = (counts: PruneCounts): number => counts.jobs + counts.events + counts.idempotencyKeys;

/** Runs one batch of a pass: how many rows it deleted, and whether the pass is over. */
type Batches = (limit: number) => Promise<{ deleted: number; done: boolean }>;

/** Batches of a store method that deletes up to `limit` rows: one that deletes fewer has deleted the last. */
const counted =
  (prune: (limit: number) => Promise<number>): Batches =>
  async (limit) => {
    const deleted = await prune(limit);
    return { deleted, done: deleted < limit };
  };

/** Deletes finished jobs, old events and expired idempotency keys, a bounded batch at a time. */
export class RetentionPruner {
  private firstPass: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PruneCounts> | undefined;
  /** Ends a pass after its current batch: a pass over millions of rows must not hold up a shutdown. */
  private stopping = false;
  private readonly failures: RepeatedFailureLog;

  constructor(
    private readonly store: GatewayStore,
    private readonly clock: Clock,
    private readonly options: RetentionOptions,
    private readonly logger: WorkerLogger,
    private readonly observer: RetentionObserver = {},
  ) {
    this.failures = new RepeatedFailureLog(logger, clock, {
      failed: 'retention pass failed',
      stillFailing: 'retention passes still fail',
      recovered: 'retention passes work again',
    });
  }

  /** Passes run in the background, right after start and then every interval; none keeps the process alive. */
  start(): void {
    if (this.timer) return;
    this.stopping = false;
    const scheduled = () => {
      // A pass that outlasts the interval is not counted (or logged) twice.
      if (this.running) return;
      this.pruneOnce().then(
        () => this.failures.succeeded(),
        (error: unknown) => this.failures.failed(error),
      );
    };
    // Not only after a first interval: an instance restarted more often than that would never prune.
    this.firstPass = setTimeout(scheduled, 0).unref();
    this.timer = setInterval(scheduled, this.options.intervalMs).unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.firstPass);
    clearInterval(this.timer);
    this.firstPass = undefined;
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  /** One pass; overlapping calls share the pass in progress. */
  pruneOnce(): Promise<PruneCounts> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<PruneCounts> {
    const startedAt = this.clock.now().getTime();
    const progress = new PassProgress(this.logger, startedAt, this.options.batchSize);
    // Jobs first: the events of a job pruned now may go in the same pass.
    await this.drain('jobs', progress, counted((limit) => this.store.pruneFinishedJobs(new Date(startedAt - this.options.jobRetentionMs), limit)));
    await this.drain('events', progress, this.eventBatches(new Date(startedAt - this.options.eventRetentionMs)));
    await this.drain('idempotencyKeys', progress, counted((limit) => this.store.pruneIdempotencyKeys(new Date(startedAt), limit)));
    const { counts } = progress;
    if (total(counts) > 0) this.logger.info({ ...counts }, 'pruned old records');
    this.observer.passFinished?.(this.clock.now().getTime() - startedAt);
    return counts;
  }

  /** The batches of one pass over events, each starting where the previous one stopped, past the events it kept. */
  private eventBatches(occurredBefore: Date): Batches {
    let after: EventPruneCursor | null = null;
    return async (limit) => {
      const batch = await this.store.pruneEvents(occurredBefore, limit, after);
      after = batch.next;
      return { deleted: batch.deleted, done: batch.next === null };
    };
  }

  private async drain(table: keyof PruneCounts, progress: PassProgress, prune: Batches): Promise<void> {
    for (;;) {
      if (this.stopping) return;
      const { deleted, done } = await prune(this.options.batchSize);
      if (deleted > 0) this.observer.pruned?.(PRUNED_TABLES[table], deleted);
      progress.deleted(table, deleted, this.clock.now().getTime());
      if (done) return;
      // Let waiting requests run between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

/**
 * What one pass has deleted so far, and its lines while it runs: none before it has deleted a batch's worth, so
 * that idle and small passes stay quiet and a long one, which writes may wait behind, is announced and followed.
 */
class PassProgress {
  readonly counts: PruneCounts = { jobs: 0, events: 0, idempotencyKeys: 0 };
  /** When the last line about this pass was logged; undefined until it has deleted a full batch. */
  private loggedAt: number | undefined;

  constructor(
    private readonly logger: WorkerLogger,
    private readonly startedAt: number,
    private readonly batchSize: number,
  ) {}

  deleted(table: keyof PruneCounts, rows: number, now: number): void {
    this.counts[table] += rows;
    const fields = { ...this.counts, elapsedMs: now - this.startedAt };
    if (this.loggedAt === undefined) {
      if (total(this.counts) < this.batchSize) return;
      this.logger.info(fields, 'pruning old records');
      this.loggedAt = now;
    } else if (now - this.loggedAt >= PROGRESS_INTERVAL_MS) {
      this.logger.info(fields, 'still pruning old records');
      this.loggedAt = now;
    }
  }
}
