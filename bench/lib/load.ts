import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

export interface LoadOptions {
  url: string;
  connections: number;
  /** Run for this long, or until `amount` requests were answered. */
  durationSeconds?: number;
  amount?: number;
  requests: autocannon.Request[];
  /** A body that does not pass makes the run invalid. */
  verifyBody: (body: string) => boolean;
  /** The server's process, whose CPU time is counted per request. */
  serverPid?: number;
}

export interface LatencySummary {
  p50: number;
  p97_5: number;
  p99: number;
  mean: number;
}

/** CPU time per answered request, in µs: all threads of the server, and this process (autocannon). */
export interface CpuPerRequest {
  /** Null where the server's /proc entry cannot be read (not Linux). */
  server: number | null;
  loadGenerator: number;
}

export interface LoadResult {
  requests: number;
  durationSeconds: number;
  requestsPerSecond: number;
  latencyMs: LatencySummary;
  cpuMicrosPerRequest: CpuPerRequest;
  /**
   * KiB the server read from storage per request (`read_bytes` of /proc/<pid>/io: reads the page cache did not
   * answer); null where /proc cannot tell.
   */
  serverDiskKibPerRequest: number | null;
  non2xx: number;
  mismatches: number;
  errors: number;
  /** False when any answer was not 2xx, had an unexpected body, or failed. */
  valid: boolean;
}

/** Percentiles of exact latencies: autocannon's own histogram keeps whole milliseconds only. */
function summarize(latencies: Float64Array, count: number): LatencySummary {
  if (count === 0) return { p50: 0, p97_5: 0, p99: 0, mean: 0 };
  const sorted = latencies.slice(0, count).sort();
  const at = (quantile: number) => round(sorted[Math.min(count - 1, Math.ceil(quantile * count) - 1)]);
  return { p50: at(0.5), p97_5: at(0.975), p99: at(0.99), mean: round(sorted.reduce((sum, value) => sum + value, 0) / count) };
}

export const round = (value: number, digits = 3): number => Number(value.toFixed(digits));

/** Linux reports process times in clock ticks of 1/100 s (USER_HZ) in /proc, whatever the kernel's own rate. */
const MICROS_PER_TICK = 10_000;

/** User and system CPU time of a process and all its threads, in µs; null when /proc cannot tell. */
export function processCpuMicros(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * MICROS_PER_TICK;
  } catch {
    return null;
  }
}

/** Bytes a process and all its threads caused to be read from storage; null when /proc cannot tell. */
function processDiskReadBytes(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const match = /^read_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** One autocannon run with body verification and exact latencies. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const serverCpuBefore = processCpuMicros(options.serverPid);
  const serverDiskBefore = processDiskReadBytes(options.serverPid);
  const ownCpuBefore = process.cpuUsage();
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let finish: (error: unknown, result: autocannon.Result) => void = () => undefined;
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    finish = (error, result) => (error ? reject(error) : resolve(result));
  });
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.durationSeconds ?? 3600,
    amount: options.amount,
    requests: options.requests,
    verifyBody: (body) => options.verifyBody(String(body)),
    timeout: 30,
    // autocannon notices the end of a run only when it samples; every second by default.
    sampleInt: 100,
  }, (error, result) => finish(error, result));
  instance.on('response', (_client, _status, _bytes, responseTime) => {
    if (count === latencies.length) {
      const grown = new Float64Array(latencies.length * 2);
      grown.set(latencies);
      latencies = grown;
    }
    latencies[count++] = responseTime;
  });
  const result = await done;
  const serverCpuAfter = processCpuMicros(options.serverPid);
  const serverDiskAfter = processDiskReadBytes(options.serverPid);
  const ownCpu = process.cpuUsage(ownCpuBefore);
  const perRequest = (micros: number) => (count === 0 ? 0 : round(micros / count, 1));
  const durationSeconds = (result.finish.getTime() - result.start.getTime()) / 1000;
  const mismatches = (result as autocannon.Result & { mismatches?: number }).mismatches ?? 0;
  return {
    requests: count,
    durationSeconds: round(durationSeconds),
    requestsPerSecond: round(count / durationSeconds, 1),
    latencyMs: summarize(latencies, count),
    cpuMicrosPerRequest: {
      server: serverCpuBefore === null || serverCpuAfter === null ? null : perRequest(serverCpuAfter - serverCpuBefore),
      loadGenerator: perRequest(ownCpu.user + ownCpu.system),
    },
    serverDiskKibPerRequest:
      serverDiskBefore === null || serverDiskAfter === null || count === 0 ? null : round((serverDiskAfter - serverDiskBefore) / 1024 / count, 2),
    non2xx: result.non2xx,
    mismatches,
    errors: result.errors + result.timeouts,
    valid: count > 0 && result.non2xx === 0 && mismatches === 0 && result.errors === 0 && result.timeouts === 0,
  };
}
