import { performance } from 'node:perf_hooks';

const median = (samples: number[]) => [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)];

/** One line of a listing bench: the case, the rows of its last call, the median and the longest of its timed calls. */
export function printTimes(name: string, rows: number, samples: number[]): void {
  console.log(`${name.padEnd(44)} ${String(rows).padStart(3)} rows  ${median(samples).toFixed(2).padStart(8)} ms  (max ${Math.max(...samples).toFixed(2)} ms)`);
}

/**
 * Times `call` `runs` times after one warm-up, giving the event loop a turn between calls, and prints its line.
 * `call` answers the rows it read.
 */
export async function timeCalls(name: string, runs: number, call: () => Promise<unknown[]>): Promise<void> {
  let rows = 0;
  const samples: number[] = [];
  for (let run = 0; run <= runs; run += 1) {
    const started = performance.now();
    rows = (await call()).length;
    if (run > 0) samples.push(performance.now() - started);
    await new Promise((resolve) => setImmediate(resolve));
  }
  printTimes(name, rows, samples);
}
