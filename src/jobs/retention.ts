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
    const now = this.clock.now().getTime();
    // Jobs first: the events of a job pruned now may go in the same pass.
    const counts: PruneCounts = {
      jobs: await this.drain(counted((limit) => this.store.pruneFinishedJobs(new Date(now - this.options.jobRetentionMs), limit))),
      events: await this.drain(this.eventBatches(new Date(now - this.options.eventRetentionMs))),
      idempotencyKeys: await this.drain(counted((limit) => this.store.pruneIdempotencyKeys(new Date(now), limit))),
    };
    if (counts.jobs + counts.events + counts.idempotencyKeys > 0) this.logger.info({ ...counts }, 'pruned old records');
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

  private async drain(prune: Batches): Promise<number> {
    let total = 0;
    for (;;) {
      if (this.stopping) return total;
      const { deleted, done } = await prune(this.options.batchSize);
      total += deleted;
      if (done) return total;
      // Let waiting requests run between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}
