import { randomUUID } from 'node:crypto';

/** Every id the gateway makes is a UUID in its text form: anything else names nothing of the gateway's. */
export const isGatewayId = (value: string): boolean => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value);

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Ids made one after another sort
 * one after another, so a new job or event lands at the end of its id index instead of on a random page of
 * it: with many rows, random ids make every insert touch (and, in the embedded store, write) pages spread
 * all over the index.
 */
export function newId(now = Date.now()): string {
  const random = randomUUID();
  const time = now.toString(16).padStart(12, '0');
  // randomUUID() is a version-4 UUID with the RFC variant already set: keep its random bits, stamp version 7.
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${random.slice(15)}`;
}
