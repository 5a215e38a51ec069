import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { identify, type FileIdentity } from './database-file.js';
import type { FromWriter, ToWriter, WriteCall, WriteFailure, WriterData } from './writer-protocol.js';
import type { WriteArgs, WriteName, WriteResult } from './writes.js';

interface Waiting {
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

const entry = new URL(`./writer-thread${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

function startThread(data: WriterData): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, { workerData: data });
  // Run from TypeScript source (tsx, vitest): a worker thread does not inherit the loader that compiles it.
  const source = `require('tsx/cjs/api').register(); require(${JSON.stringify(fileURLToPath(entry))});`;
  return new Worker(source, { eval: true, workerData: data });
}

const toError = (failure: WriteFailure): Error => Object.assign(new Error(failure.message), failure);

export interface SqliteWriterOptions {
  /** The file the store opened at its path (default: the one there now); writes fail once it is not there. */
  opened?: FileIdentity;
  /** Runs before the answers of a group are handed out (the store ends its read transaction). */
  beforeAnswers?: () => void;
  /** Told how long each group's COMMIT took, once it is on disk. */
  onCommit?: (commitMs: number) => void;
  /** Told why a thread died when a new one replaces it. */
  onRestart?: (error: Error) => void;
  /** A thread that dies sooner than this after it started is not replaced: what killed it lasts (1 s). */
  minThreadLifetimeMs?: number;
}

/**
 * The store's side of the writer thread (writer-thread.ts). The calls of one turn of the event loop go over
 * in one message; each resolves once the group it was committed in is on disk. While no call is waiting the
 * thread does not keep the process alive.
 *
 * If the thread dies (a bug, or out of memory), the calls waiting on it fail: whether their group was
 * committed is unknown, as after a crash of the process. A new thread takes the next calls, unless the one
 * that died had lived less than a second; then every later call fails, and the store's ping with it.
 */
export class SqliteWriter {
  private thread!: Worker;
  private exited!: Promise<void>;
  private startedAt = 0;
  private readonly waiting = new Map<number, Waiting>();
  private outbox: WriteCall[] = [];
  private nextId = 1;
  private closing = false;
  private closed: Promise<void> | undefined;
  private stopped: Error | null = null;
  private onDrained: (() => void) | null = null;

  private readonly beforeAnswers: () => void;
  private readonly onCommit: (commitMs: number) => void;
  private readonly onRestart: (error: Error) => void;
  private readonly minThreadLifetimeMs: number;
  private readonly opened: FileIdentity;

  constructor(
    private readonly filename: string,
    options: SqliteWriterOptions = {},
  ) {
    this.beforeAnswers = options.beforeAnswers ?? (() => undefined);
    this.onCommit = options.onCommit ?? (() => undefined);
    this.onRestart = options.onRestart ?? (() => undefined);
    this.minThreadLifetimeMs = options.minThreadLifetimeMs ?? 1000;
    this.opened = options.opened ?? identify(filename);
    this.start();
  }

  private start(): void {
    const thread = startThread({ filename: this.filename, opened: this.opened });
    this.thread = thread;
    this.startedAt = Date.now();
    thread.unref();
    thread.on('message', (message: FromWriter) => this.settle(message));
    let failure: Error | undefined;
    thread.on('error', (error) => (failure = error));
    this.exited = new Promise((resolve) =>
      thread.once('exit', (code) => {
        if (!this.closing) this.lost(failure ?? new Error(`it exited with code ${code}`));
        resolve();
      }),
    );
  }

  /**
   * The thread died. The calls it was sent fail; the calls not sent yet go to a new thread, unless this one
   * died young, in which case they fail too and so does every later call.
   */
  private lost(cause: Error): void {
    // SQLite's code is kept: a thread that could not open the file (SQLITE_CANTOPEN) is a storage failure.
    const { code } = cause as { code?: unknown };
    const error = Object.assign(new Error(`The SQLite writer stopped: ${cause.message}`), typeof code === 'string' ? { code } : {});
    const diedYoung = Date.now() - this.startedAt < this.minThreadLifetimeMs;
    const unsent = new Set(diedYoung ? [] : this.outbox.map((call) => call.id));
    if (diedYoung) {
      this.stopped = error;
      this.outbox = [];
    }
    this.beforeAnswers();
    for (const [id, waiting] of this.waiting) {
      if (unsent.has(id)) continue;
      this.waiting.delete(id);
      waiting.reject(error);
    }
    if (!diedYoung) {
      this.onRestart(cause);
      this.start();
    }
    if (this.waiting.size === 0) this.drained();
    else this.thread.ref();
  }

  /** Why no call can succeed any more while the writer is open (a thread that died young), or null. */
  get dead(): Error | null {
    return this.closing ? null : this.stopped;
  }

  /** The calls made and not answered yet: those waiting to be sent, and those in the group being committed. */
  get waitingCount(): number {
    return this.waiting.size;
  }

  call<K extends WriteName>(name: K, ...args: WriteArgs<K>): Promise<WriteResult<K>> {
    if (this.stopped) return Promise.reject(this.stopped);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      if (this.waiting.size === 1) this.thread.ref();
      if (this.outbox.length === 0) setImmediate(() => this.send());
      this.outbox.push({ id, name, args });
    });
  }

  /** Waits until every call made so far has been answered, then stops the thread. */
  close(): Promise<void> {
    this.closed ??= this.shutDown();
    return this.closed;
  }

  private async shutDown(): Promise<void> {
    this.send();
    if (this.waiting.size > 0) await new Promise<void>((resolve) => (this.onDrained = resolve));
    this.closing = true;
    this.stopped ??= new Error('The SQLite writer has exited');
    this.thread.ref();
    this.thread.postMessage({ close: true } satisfies ToWriter);
    await this.exited;
  }

  private send(): void {
    if (this.outbox.length === 0) return;
    const calls = this.outbox;
    this.outbox = [];
    try {
      this.thread.postMessage({ calls } satisfies ToWriter);
    } catch {
      // Arguments that cannot be copied to the thread (a caller's bug): those calls fail, the others go one by one.
      for (const call of calls) {
        try {
          this.thread.postMessage({ calls: [call] } satisfies ToWriter);
        } catch (error) {
          this.settle({ answers: [{ id: call.id, ok: false, error: { name: 'DataCloneError', message: String(error) } }] });
        }
      }
    }
  }

  private settle({ answers, commitMs }: FromWriter): void {
    this.beforeAnswers();
    if (commitMs !== undefined) this.onCommit(commitMs);
    for (const answer of answers) {
      const waiting = this.waiting.get(answer.id);
      if (!waiting) continue;
      this.waiting.delete(answer.id);
      if (answer.ok) waiting.resolve(answer.value);
      else waiting.reject(toError(answer.error));
    }
    if (this.waiting.size === 0) this.drained();
  }

  private drained(): void {
    this.thread.unref();
    this.onDrained?.();
  }
}
