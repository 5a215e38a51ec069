import type { Clock } from '../../src/domain/ports.js';

/** A clock that moves only when told, so delays can be asserted exactly and waited out instantly. */
export class ManualClock implements Clock {
  private current: number;

  constructor(start = new Date('2030-01-01T00:00:00.000Z')) {
    this.current = start.getTime();
  }

  now(): Date {
    return new Date(this.current);
  }

  advance(ms: number): void {
    this.current += ms;
  }
}
