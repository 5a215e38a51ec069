// Reading security events: the `securityEvents` list (its paging, its filters, and what a key without
// security_events.read sees of its own), and the download (its slot, its budget, its batches, and the event
// recording it).
import { setImmediate as nextTurn } from 'node:timers/promises';
import { decodeRowCursor, eventCursorGone } from './cursor.js';
import type { DownloadSlot } from './download-slots.js';
import { GatewayError } from './errors.js';
import { isGatewayId } from './ids.js';
import { emptyPage, pageSize, toPage } from './pages.js';
import { requestEvent } from './request-events.js';
import type { GatewayService, GatewayServiceDeps } from './service.js';
import type { Page, Principal, SecurityEvent, SecurityEventFilter, SecurityEventType } from './types.js';
import { checkEventWindow, LIMITS, parseEventRange, type EventRange } from './validation.js';

/**
 * The most caller text one event can hold, in UTF-16 units: a duplication request's name, description and tags
 * at their limits (about 9,400 characters, counted as code points, so up to twice as many units: an emoji is two),
 * at two bytes a unit once a single character outside Latin-1 makes the string UTF-16.
 */
const MAX_EVENT_TEXT_UNITS = 2 * (LIMITS.nameLength + LIMITS.descriptionLength + LIMITS.tagCount * LIMITS.tagLength);
/** What one download may hold of events read but not yet sent, counted for the largest events the limits allow. */
const DOWNLOAD_BATCH_BYTES = 1024 * 1024;
/**
 * Events read from the store at a time while a download streams (27): a client that stops reading keeps
 * one batch in memory, so its size is set by bytes, not by what makes paging cheapest.
 */
export const DOWNLOAD_BATCH_SIZE = Math.floor(DOWNLOAD_BATCH_BYTES / (2 * MAX_EVENT_TEXT_UNITS + 1024));

/** What a download was asked for, as a transport received it (query string values). */
export interface SecurityEventDownloadQuery {
  start?: unknown;
  end?: unknown;
  after?: unknown;
}

export interface SecurityEventDownload {
  /** Null for a download by `after` alone. */
  range: EventRange | null;
  /** The id of the event the download lists the events recorded after, when it was given. */
  after: string | null;
  /** The workspace's events in the range and after `after`, newest first, read from the store batch by batch as they are consumed. */
  events: AsyncIterable<SecurityEvent>;
  /**
   * The download's slot: give it back once the download has ended, however it ended (sent, client gone, failed,
   * stalled) and no batch is being read any more, and let it watch the client once the download is sent.
   */
  slot: DownloadSlot;
}

/**
 * The events a request causes, carrying the key that made it: all a key without security_events.read sees
 * of its own. Key lifecycle events are an operator's doing, not the key's; API_KEY_REJECTED is a request the
 * key was refused for, by whoever holds an old secret of it, so only security_events.read shows it too.
 */
const REQUEST_EVENT_TYPES: readonly SecurityEventType[] = [
  'CAMPAIGN_DUPLICATION_REQUESTED',
  'CAMPAIGN_DUPLICATED',
  'CAMPAIGN_DUPLICATION_FAILED',
  'PERMISSION_DENIED',
];

export class SecurityEventReads {
  constructor(
    private readonly deps: Pick<GatewayServiceDeps, 'store' | 'clock' | 'downloadEvents' | 'downloads'>,
    private readonly access: Pick<GatewayService, 'authorize'>,
  ) {}

  async listSecurityEvents(
    principal: Principal,
    filter: SecurityEventFilter,
    first: number,
    after: string | null | undefined,
  ): Promise<Page<SecurityEvent>> {
    const size = pageSize(first);
    const beforeId = decodeRowCursor('e', after);
    checkEventWindow(filter.since, filter.until);
    // A job or key id of a shape the gateway never makes names no event's job or key, as in getJob.
    if ([filter.jobId, filter.apiKeyId].some((id) => id !== undefined && !isGatewayId(id))) return emptyPage();
    const scoped: SecurityEventFilter = { ...filter };
    if (!(await this.access.authorize(principal, 'security_events.read', { optional: true }))) {
      if (filter.apiKeyId !== undefined && filter.apiKeyId !== principal.keyId) return emptyPage();
      scoped.apiKeyId = principal.keyId;
      scoped.types = (filter.types ?? REQUEST_EVENT_TYPES).filter((type) => REQUEST_EVENT_TYPES.includes(type));
    }
    const rows = await this.deps.store.listEvents(principal.workspaceId, scoped, { first: size + 1, beforeId });
    return toPage(rows, size, 'e');
  }

  /**
   * Braze's "Security Event Download": every event of the workspace in the range. Permission first, then the
   * range, then a download slot (RATE_LIMITED when the workspace or the instance has too many in progress), then
   * the key's budget of downloads (RATE_LIMITED past it: a download of an empty range ends within a millisecond, and
   * each one's event would otherwise let one key fill the store and bury the log), then the first batch, then the SECURITY_EVENTS_DOWNLOADED event, so that a refusal or a failing store is an error
   * response, not a cut stream. A download that cannot be recorded is refused: a stolen key must not read the
   * log unseen. Recorded after the first batch, which is the newest, so that the download does not list itself.
   *
   * `after` (an event id) lists only the events recorded after that one, in the order `securityEvents` pages in
   * (commit order within the workspace), so that a collector that keeps the first row's id misses nothing that
   * commits later, as a range ending near now can. Without a range it needs none; with one, both apply. An `after`
   * that names no event of the workspace is refused as GraphQL refuses such a cursor (pruned, or another
   * workspace's): an empty download would hide the gap from the collector. Its position is read once, before the first
   * batch, and every batch reads below that: retention deleting the event while the download streams must not cut it.
   */
  async downloadSecurityEvents(principal: Principal, raw: SecurityEventDownloadQuery): Promise<SecurityEventDownload> {
    await this.access.authorize(principal, 'security_events.read');
    const after = raw.after === undefined || raw.after === '' ? null : raw.after;
    if (after !== null && !(typeof after === 'string' && isGatewayId(after))) throw eventCursorGone();
    const noRange = [raw.start, raw.end].every((bound) => bound === undefined || bound === '');
    const range = after !== null && noRange ? null : parseEventRange(raw);
    const { store } = this.deps;
    // Every event, a newer version's types too: the CSV's EventName is text, and an audit export must not miss any.
    const filter: SecurityEventFilter = { since: range?.start, until: range?.end, unknownTypes: true };
    const slot = this.deps.downloads.acquire(principal.workspaceId, principal.keyId);
    let afterSeq: number | undefined;
    const read = (beforeSeq?: number) => store.listEvents(principal.workspaceId, filter, { first: DOWNLOAD_BATCH_SIZE, beforeSeq, afterSeq });
    let first: SecurityEvent[];
    try {
      const budget = await this.deps.downloadEvents.take(principal.keyId);
      if (!budget.granted) {
        throw new GatewayError('RATE_LIMITED', 'This API key has made too many security event downloads recently; try again later', {
          retryAfterSeconds: Math.max(1, Math.ceil(budget.retryAfterMs / 1000)),
        });
      }
      if (after !== null) {
        afterSeq = (await store.eventSeq(principal.workspaceId, after)) ?? undefined;
        if (afterSeq === undefined) throw eventCursorGone();
      }
      first = await read();
      await store.insertEvent(
        requestEvent(this.deps.clock, principal, 'SECURITY_EVENTS_DOWNLOADED', {
          details: {
            ...(range && { start: range.start.toISOString(), end: range.end.toISOString() }),
            ...(after !== null && { after }),
          },
        }),
      );
    } catch (error) {
      slot.release();
      throw error;
    }
    // The batch is the generator's own variable: a closure over the first one would keep it for the whole download.
    async function* events(batch: SecurityEvent[]): AsyncGenerator<SecurityEvent> {
      while (batch.length > 0) {
        yield* batch;
        if (batch.length < DOWNLOAD_BATCH_SIZE) return;
        // Other requests get a turn of the event loop before each batch. A store that answers at once (SQLite reads
        // on this thread) and a client whose socket takes every write at once never make this loop wait for I/O:
        // the whole download would then run in one turn, and the instance answer nothing else until it ended.
        await nextTurn();
        batch = await read(batch[batch.length - 1].seq);
      }
    }
    return { range, after, events: events(first), slot };
  }
}
