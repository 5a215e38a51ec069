import { GatewayError, unavailableCause } from './domain/errors.js';

/**
 * How one dependency of the gateway is doing. `degraded` still serves; `down` makes the instance not ready,
 * and only a dependency the instance needs to serve is ever down.
 */
export interface DependencyStatus {
  status: 'up' | 'degraded' | 'down';
  /** Which implementation is in use (sqlite, postgres, redis, memory, …). */
  backend?: string;
  /** What is wrong, when something is. Never a connection string or a secret. */
  message?: string;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, DependencyStatus>;
  /** The errors behind failed checks, for the log only: never sent to callers. */
  failures: Record<string, unknown>;
}

export interface DependencyCheck {
  /**
   * Whether the instance cannot serve without it. A failing dependency it can serve without is `degraded`, not
   * `down`: taking every instance out of the load balancer for it would turn its outage into the gateway's.
   */
  neededToServe: boolean;
  check(): Promise<DependencyStatus>;
}

/** Names the failure without echoing hosts, credentials or query text. */
export function describeFailure(error: unknown): string {
  const cause = unavailableCause(error);
  if (cause !== undefined) return describeFailure(cause);
  if (error instanceof GatewayError) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code) return `not reachable or failing (${code})`;
  return `failing (${error instanceof Error ? error.name : 'unknown error'})`;
}

/**
 * Runs every check at once, each bounded by `timeoutMs`. A check that throws or hangs counts as down when the
 * instance needs its dependency to serve, as degraded otherwise.
 */
export async function checkDependencies(checks: Record<string, DependencyCheck>, timeoutMs = 2000): Promise<ReadinessReport> {
  const failures: Record<string, unknown> = {};
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, { neededToServe, check }]): Promise<[string, DependencyStatus]> => {
      const failing = neededToServe ? 'down' : 'degraded';
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<DependencyStatus>((resolve) => {
        timer = setTimeout(() => resolve({ status: failing, message: `did not answer within ${timeoutMs} ms` }), timeoutMs);
      });
      try {
        const status = await Promise.race([check(), timeout]);
        return [name, status.status === 'down' ? { ...status, status: failing } : status];
      } catch (error) {
        failures[name] = error;
        return [name, { status: failing, message: describeFailure(error) }];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const report = Object.fromEntries(entries);
  return { ready: entries.every(([, status]) => status.status !== 'down'), checks: report, failures };
}
