import { GatewayError, unavailableCause } from './domain/errors.js';

/** How one dependency of the gateway is doing. `degraded` still serves; `down` makes the instance not ready. */
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

export type DependencyCheck = () => Promise<DependencyStatus>;

/** Names the failure without echoing hosts, credentials or query text. */
export function describeFailure(error: unknown): string {
  const cause = unavailableCause(error);
  if (cause !== undefined) return describeFailure(cause);
  if (error instanceof GatewayError) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code) return `not reachable or failing (${code})`;
  return `failing (${error instanceof Error ? error.name : 'unknown error'})`;
}

/** Runs every check at once, each bounded by `timeoutMs`; a check that throws or hangs counts as down. */
export async function checkDependencies(checks: Record<string, DependencyCheck>, timeoutMs = 2000): Promise<ReadinessReport> {
  const failures: Record<string, unknown> = {};
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, DependencyStatus]> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<DependencyStatus>((resolve) => {
        timer = setTimeout(() => resolve({ status: 'down', message: `did not answer within ${timeoutMs} ms` }), timeoutMs);
      });
      try {
        return [name, await Promise.race([check(), timeout])];
      } catch (error) {
        failures[name] = error;
        return [name, { status: 'down', message: describeFailure(error) }];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const report = Object.fromEntries(entries);
  return { ready: entries.every(([, status]) => status.status !== 'down'), checks: report, failures };
}
