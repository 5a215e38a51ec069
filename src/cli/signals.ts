import { constants } from 'node:os';
import { performance } from 'node:perf_hooks';

/** A command stopped by a signal: the CLI exits 128 + its number, as a shell reports a process the signal ended. */
export class Interrupted extends Error {
  readonly exit: number;

  constructor(message: string, signal: NodeJS.Signals) {
    super(message);
    this.exit = 128 + constants.signals[signal];
  }
}

/**
 * How long after the first signal the same signal again is taken for the first: a terminal's Ctrl-C goes to the whole
 * process group, so `npm run cli` both receives it and hands it on, and the command gets it twice within milliseconds.
 * A different signal is never an echo (a supervisor's SIGTERM after a Ctrl-C).
 */
const SAME_SIGNAL_MS = 1_000;

export interface Signals {
  /** The signal received, once one has been. */
  stopped: () => NodeJS.Signals | undefined;
  /** What the command now stops after, as the line a signal prints says it. */
  stopsAfter: (what: string) => void;
}

/**
 * Runs `work` with SIGINT and SIGTERM told to it rather than ending the process, which would leave a partial file or
 * store without a word: `work` stops where it can (after `after`, as the line it prints on the signal says) and
 * cleans up. Another signal ends the process at once: a different one whenever it comes, the same one a second or
 * more after the first.
 */
export async function stoppableBySignals<T>(stderr: (text: string) => void, after: string, work: (signals: Signals) => Promise<T>): Promise<T> {
  let signal: NodeJS.Signals | undefined;
  let receivedAt = 0;
  const stop = (received: NodeJS.Signals) => {
    if (signal === undefined) {
      signal = received;
      receivedAt = performance.now();
      stderr(`${received}: stopping after ${after}…\n`);
      return;
    }
    if (received !== signal || performance.now() - receivedAt >= SAME_SIGNAL_MS) process.exit(128 + constants.signals[received]);
  };
  process.on('SIGINT', stop).on('SIGTERM', stop);
  try {
    return await work({ stopped: () => signal, stopsAfter: (what) => (after = what) });
  } finally {
    process.off('SIGINT', stop).off('SIGTERM', stop);
  }
}
