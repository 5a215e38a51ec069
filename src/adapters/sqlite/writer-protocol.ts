import type { FileIdentity } from './database-file.js';
import type { WriteName } from './writes.js';

/** What the store's thread and its writer thread say to each other (writer.ts, writer-thread.ts). */
export interface WriteCall {
  id: number;
  name: WriteName;
  args: unknown[];
}

/** An error as it crosses the thread boundary: SQLite's code (e.g. SQLITE_CONSTRAINT_UNIQUE) is kept. */
export interface WriteFailure {
  name: string;
  message: string;
  code?: string;
}

export type WriteAnswer = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WriteFailure };

export type ToWriter = { calls: WriteCall[] } | { close: true };
/** The answers of one group, with its COMMIT's time when one ran, committed or failed (absent when the group failed before it). */
export type FromWriter = { answers: WriteAnswer[]; commitMs?: number };

export interface WriterData {
  filename: string;
  /** The file the store opened at `filename`: no group is committed once another one (or none) is there. */
  opened: FileIdentity;
}
