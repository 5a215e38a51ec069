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
  // randomUUID() is a version-4 UUID with the RFC variant already set: keep its random bits, stamp version 7.
  return `${timePrefix(now)}-7${randomUUID().slice(15)}`;
}

/** The least id newId makes at `time` (Unix ms) or after, in the same text order: a lower bound for a scan of ids. */
export const firstIdAt = (time: number): string => `${timePrefix(Math.max(0, time))}-0000-0000-000000000000`;

const timePrefix = (time: number): string => {
  const hex = time.toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}`;
};
