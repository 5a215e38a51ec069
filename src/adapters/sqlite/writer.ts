import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
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

/**
 * The store's side of the writer thread (writer-thread.ts). The calls of one turn of the event loop go over
 * in one message; each resolves once the group it was committed in is on disk. While no call is waiting the
 * thread does not keep the process alive.
 */
export class SqliteWriter {
  private readonly thread: Worker;
  private readonly exited: Promise<void>;
  private readonly waiting = new Map<number, Waiting>();
  private outbox: WriteCall[] = [];
  private nextId = 1;
  private stopped: Error | null = null;
  private onDrained: (() => void) | null = null;

  /** `beforeAnswers` runs before the answers of a group are handed out (the store ends its read transaction). */
  constructor(
    filename: string,
    private readonly beforeAnswers: () => void = () => undefined,
  ) {
    this.thread = startThread({ filename });
    this.thread.unref();
    this.thread.on('message', (message: FromWriter) => this.settle(message));
    this.thread.on('error', (error) => this.stop(new Error(`The SQLite writer stopped: ${error.message}`)));
    this.exited = new Promise((resolve) =>
      this.thread.once('exit', () => {
        this.stop(new Error('The SQLite writer has exited'));
        resolve();
      }),
    );
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
  async close(): Promise<void> {
    if (this.stopped) return;
    this.send();
    if (this.waiting.size > 0) await new Promise<void>((resolve) => (this.onDrained = resolve));
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

  private settle({ answers }: FromWriter): void {
    this.beforeAnswers();
    for (const answer of answers) {
      const waiting = this.waiting.get(answer.id);
      if (!waiting) continue;
      this.waiting.delete(answer.id);
      if (answer.ok) waiting.resolve(answer.value);
      else waiting.reject(toError(answer.error));
    }
    if (this.waiting.size === 0) {
      this.thread.unref();
      this.onDrained?.();
    }
  }

  private stop(error: Error): void {
    this.stopped ??= error;
    for (const waiting of this.waiting.values()) waiting.reject(this.stopped);
    this.waiting.clear();
    this.outbox = [];
    this.onDrained?.();
  }
}
