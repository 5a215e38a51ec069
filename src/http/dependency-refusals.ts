import { isDependencyOutage, type Dependency } from '../domain/errors.js';
import type { Clock } from '../domain/ports.js';
import { BUSY_SETTLE_MS, RepeatedFailureLog } from '../failure-log.js';
import type { ReadinessLogger } from '../readiness.js';

/**
 * The component of every line about requests refused because something they needed was unavailable: those below,
 * and the transports' own about an unavailability that is neither the store nor the quota's store.
 */
export const REQUESTS_COMPONENT = { component: 'requests' } as const;

/**
 * Served requests must go on this long, with no refusal between them, before an outage counts as over: a store
 * that refuses some requests and serves others (a full disk refuses those that write) stays one outage.
 */
const SERVED_SETTLE_MS = 5000;

/**
 * Requests refused with 503 because a dependency of the instance (its store, the quota's store) cannot be
 * reached. During an outage every request meets it, so each dependency's outage is logged as the worker logs
 * its claims: the first refusal with its request id, a reminder at most once a minute with the number refused
 * so far, and one line once requests are served again.
 */
export class DependencyRefusals {
  private readonly logs: Record<Dependency, RepeatedFailureLog>;

  constructor(logger: ReadinessLogger, clock: Clock) {
    const log = (dependency: Dependency) =>
      new RepeatedFailureLog(
        logger.child({ ...REQUESTS_COMPONENT, dependency }),
        clock,
        {
          failed: 'a dependency is unavailable',
          stillFailing: 'a dependency is still unavailable; requests are refused',
          recovered: 'a dependency is available again; requests are served',
        },
        { settleMs: SERVED_SETTLE_MS, busySettleMs: BUSY_SETTLE_MS },
      );
    this.logs = { store: log('store'), quota: log('quota') };
  }

  /** Logs `error` when it is such a refusal, answering whether it was. */
  refused(error: unknown, requestId: string): boolean {
    if (!isDependencyOutage(error)) return false;
    this.logs[error.dependency].failed(error, { reqId: requestId });
    return true;
  }

  /** A request was answered with what it needed of the store and the quota's store. */
  served(): void {
    this.logs.store.succeeded();
    this.logs.quota.succeeded();
  }
}
