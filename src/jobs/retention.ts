import type { Clock, GatewayStore } from '../domain/ports.js';
import { logFailure, type WorkerLogger } from './worker.js';

export interface RetentionOptions {
  jobRetentionMs: number;
  eventRetentionMs: number;
  /** How often a pass runs. */
  intervalMs: number;
  /** Rows deleted per statement; small enough that no request waits long behind a delete. */
  batchSize: number;
}

export interface PruneCounts {
  jobs: number;
  events: number;
  idempotencyKeys: number;
}

/** Deletes finished jobs, old events and expired idempotency keys, a bounded batch at a time. */
export class RetentionPruner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PruneCounts> | undefined;
  /** Ends a pass after its current batch: a pass over millions of rows must not hold up a shutdown. */
  private stopping = false;

  constructor(
    private readonly store: GatewayStore,
    private readonly clock: Clock,
    private readonly options: RetentionOptions,
    private readonly logger: WorkerLogger,
  ) {}

  start(): void {
    if (this.timer) return;
    this.stopping = false;
    this.timer = setInterval(() => {
      this.pruneOnce().catch((error: unknown) => logFailure(this.logger, error, 'retention pass failed'));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
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
    const counts: PruneCounts = {
      jobs: await this.drain((limit) => this.store.pruneFinishedJobs(new Date(now - this.options.jobRetentionMs), limit)),
      events: await this.drain((limit) => this.store.pruneEvents(new Date(now - this.options.eventRetentionMs), limit)),
      idempotencyKeys: await this.drain((limit) => this.store.pruneIdempotencyKeys(new Date(now), limit)),
    };
    if (counts.jobs + counts.events + counts.idempotencyKeys > 0) this.logger.info({ ...counts }, 'pruned old records');
    return counts;
  }

  private async drain(prune: (limit: number) => Promise<number>): Promise<number> {
    let total = 0;
    for (;;) {
      if (this.stopping) return total;
      const deleted = await prune(this.options.batchSize);
      total += deleted;
      if (deleted < this.options.batchSize) return total;
      // Let waiting requests run between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}
