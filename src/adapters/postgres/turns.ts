interface Waiter {
  start(): void;
  refuse(error: unknown): void;
}

/**
 * One piece of work at a time per key, the others waiting in memory in the order they asked. A key nobody holds or
 * waits for has no entry, so the map is as large as the keys in use right now.
 */
export class Turns {
  /** Each key's line: the one whose turn it is (a placeholder), then those waiting. */
  private readonly lines = new Map<string, Waiter[]>();

  /**
   * `refusal`: for a turn that failed with `error`, what each of those waiting at that moment is refused with, at once
   * and without a turn, or undefined for them to take their turns; called once per waiter, for an error of its own.
   */
  constructor(private readonly refusal: (error: unknown, key: string) => unknown) {}

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    await this.take(key);
    try {
      return await work();
    } catch (error) {
      this.refuseWaiting(key, error);
      throw error;
    } finally {
      this.pass(key);
    }
  }

  private take(key: string): Promise<void> {
    const line = this.lines.get(key);
    if (line === undefined) {
      this.lines.set(key, [{ start: () => undefined, refuse: () => undefined }]);
      return Promise.resolve();
    }
    return new Promise((start, refuse) => line.push({ start, refuse }));
  }

  private refuseWaiting(key: string, error: unknown): void {
    const line = this.lines.get(key)!;
    if (line.length === 1 || this.refusal(error, key) === undefined) return;
    for (const waiter of line.splice(1)) waiter.refuse(this.refusal(error, key));
  }

  private pass(key: string): void {
    const line = this.lines.get(key)!;
    line.shift();
    if (line.length === 0) this.lines.delete(key);
    else line[0].start();
  }
}
