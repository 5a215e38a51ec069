import type { Clock } from './domain/ports.js';
import { FAILURE_REMINDER_MS } from './failure-log.js';
import type { WorkerLogger } from './jobs/worker.js';

/** How far this instance's clock may be from the database's before it is reported: the README asks for a second. */
const CLOCK_OFFSET_TOLERANCE_MS = 1000;

const seconds = (ms: number): string => (Math.abs(ms) / 1000).toFixed(3);
const offsetFields = (offsetMs: number, roundTripMs: number) => ({ offsetSeconds: offsetMs / 1000, roundTripSeconds: roundTripMs / 1000 });

/** Which way, and how far, this instance's clock is from the database's, from the database's time minus its own. */
const describeOffset = (offsetMs: number, roundTripMs: number): string =>
  `this instance's clock is ${seconds(offsetMs)} s ${offsetMs > 0 ? 'behind' : 'ahead of'} the database's (±${seconds(roundTripMs / 2)} s)`;

const CONSEQUENCES =
  'event times and idempotency reservations are taken from it, so instances disagree on them ' +
  '(events out of order in since/until windows); sync it with NTP';

/**
 * This instance's clock against the database server's, measured at each readiness check. Every instance takes event
 * times and idempotency reservations from its own clock (job leases, run times and the PostgreSQL quota's windows
 * come from the database's), and the database is the one clock they all see, so an instance off from it is off
 * from the others. A skew is a risk, not an outage: it is noted, never made a failure.
 * Logged like a failing check: once when the clock goes off, at most once a minute while it stays off, and once
 * when it is back.
 */
export class ClockOffset {
  /** The database's time minus this instance's, in ms, at the last measurement; undefined before the first. */
  lastMs: number | undefined;
  private logger: WorkerLogger | undefined;
  private off: { since: Date; loggedAt: number } | undefined;

  constructor(
    private readonly databaseTime: () => Promise<Date>,
    private readonly clock: Clock,
  ) {}

  logTo(logger: WorkerLogger): void {
    this.logger = logger;
  }

  /** Measures the offset; answers what /readyz says of it when the clock is off by more than the tolerance. */
  async measure(): Promise<string | undefined> {
    const before = this.clock.now();
    // The round trip on the monotonic clock: a step of the wall clock during the query is no part of it.
    const started = performance.now();
    const database = await this.databaseTime();
    const roundTripMs = performance.now() - started;
    // The database read its clock somewhere within the round trip; the middle is the best guess, half of it the error.
    const offsetMs = database.getTime() - (before.getTime() + roundTripMs / 2);
    this.lastMs = offsetMs;
    const fields = offsetFields(offsetMs, roundTripMs);
    if (Math.abs(offsetMs) - roundTripMs / 2 <= CLOCK_OFFSET_TOLERANCE_MS) {
      if (this.off) this.logger?.info({ ...fields, since: this.off.since.toISOString() }, `${describeOffset(offsetMs, roundTripMs)}: within a second again`);
      this.off = undefined;
      return undefined;
    }
    const note = `${describeOffset(offsetMs, roundTripMs)}: ${CONSEQUENCES}`;
    const now = this.clock.now();
    if (!this.off) {
      this.off = { since: now, loggedAt: now.getTime() };
      this.logger?.warn(fields, note);
    } else if (now.getTime() - this.off.loggedAt >= FAILURE_REMINDER_MS) {
      this.off.loggedAt = now.getTime();
      this.logger?.warn({ ...fields, since: this.off.since.toISOString() }, `${describeOffset(offsetMs, roundTripMs)}: still more than a second off`);
    }
    return note;
  }
}
