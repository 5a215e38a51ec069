import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Readable, pipeline } from 'node:stream';
import { stringify } from 'csv-stringify';
import type { FastifyInstance } from 'fastify';
import { DOWNLOAD_REPLACEABLE_AFTER_MS } from '../domain/download-slots.js';
import type { SecurityEventDownloadQuery } from '../domain/security-event-reads.js';
import type { GatewayService } from '../domain/service.js';
import type { SecurityEvent, SecurityEventType } from '../domain/types.js';
import { MAX_EVENT_RANGE_DAYS, type EventRange } from '../domain/validation.js';
import { authenticatedErrorResponses } from './openapi.js';
import { httpRequestContext } from './request-context.js';

/** Braze's "Security Event Download" columns, in Braze's order. */
const CSV_COLUMNS = ['CreatedAt', 'EmailAtTimeOfEvent', 'CurrentEmail', 'EventName', 'OtherAccount', 'JsonProperties'] as const;

export const EVENT_NAMES: Record<SecurityEventType, string> = {
  CAMPAIGN_DUPLICATION_REQUESTED: 'Requested Campaign Duplication via API',
  CAMPAIGN_DUPLICATED: 'Duplicated Campaign via API',
  CAMPAIGN_DUPLICATION_FAILED: 'Failed Campaign Duplication via API',
  PERMISSION_DENIED: 'Denied API Key Permission',
  API_KEY_CREATED: 'Created API Key',
  API_KEY_REVOKED: 'Revoked API Key',
  API_KEY_ROTATED: 'Rotated API Key',
  SECURITY_EVENTS_DOWNLOADED: 'Downloaded Security Events',
  API_KEY_REJECTED: 'Rejected Revoked, Expired or Rotated-out API Key',
};

/**
 * One CSV row. Events are caused by API keys, which have no email address: the email columns stay empty and
 * who did it is in JsonProperties.
 */
function toCsvRecord(event: SecurityEvent): string[] {
  const resultCampaignId = event.details.resultCampaignId;
  const properties = {
    event_id: event.id,
    event_type: event.type,
    api_key_id: event.apiKeyId,
    api_key_name: event.apiKeyName,
    channel: event.channel,
    ip: event.ip,
    job_id: event.jobId,
    campaign_id: event.campaignId,
    result_campaign_id: typeof resultCampaignId === 'string' ? resultCampaignId : null,
    details: event.details,
  };
  return [event.occurredAt.toISOString(), '', '', eventName(event.type), '', JSON.stringify(properties)];
}

/** A type this version has no name for (a newer version's, written during a rolling upgrade) is written as it is stored. */
const eventName = (type: string): string => (Object.hasOwn(EVENT_NAMES, type) ? EVENT_NAMES[type as SecurityEventType] : type);

async function* csvRecords(events: AsyncIterable<SecurityEvent>): AsyncGenerator<string[]> {
  for await (const event of events) yield toCsvRecord(event);
}

const fileStamp = (date: Date): string => date.toISOString().replace(/[:.]/g, '-');

/** The download's file name, from what it was asked for: an event id is hex digits and hyphens, safe in a file name. */
function fileName(range: EventRange | null, after: string | null): string {
  const parts = [...(range ? [fileStamp(range.start), fileStamp(range.end)] : []), ...(after === null ? [] : ['after', after])];
  return `security_events_${parts.join('_')}.csv`;
}

const rangeBound = (which: string) => ({
  type: 'string',
  description: `${which}: an ISO 8601 date (UTC midnight) or date-time with a time zone`,
  examples: [which.startsWith('Start') ? '2024-05-01T00:00:00Z' : '2024-06-01'],
});

/**
 * How far behind the minimum rate a client may fall, in time spent waiting on it: how long a download waits on a
 * client that takes no data when it has no waiting earned in hand.
 */
const DOWNLOAD_STALL_TIMEOUT_MS = 30_000;

/** The least a client must take, on average, per `perMs` that a download spends waiting on it. */
export interface DownloadMinimumRate {
  bytes: number;
  perMs: number;
}

/**
 * 1 KiB/s, on average over the time spent waiting on the client: a client that takes a little now and then, just
 * often enough never to stall for long, does not keep its download slot for as long as it likes.
 */
const DOWNLOAD_MINIMUM_RATE: DownloadMinimumRate = { bytes: 1024, perMs: 1000 };

/**
 * The most waiting a client can have earned ahead of the minimum rate, so that a client that stops reading keeps its
 * slot for at most this and the stall timeout. What the kernel accepted counts as taken, and Linux's send buffer (up
 * to 4 MiB) takes more only once about a third of it has been read: a client reading at 1 KiB/s makes it take more
 * about every 23 minutes (1.4 MB). Any less would end such a client's download.
 */
const DOWNLOAD_MOST_WAIT_EARNED_MS = 30 * 60_000;

/** What a download asks of its client; see watchClient. */
export interface DownloadClientLimits {
  stallMs: number;
  minimumRate: DownloadMinimumRate;
  mostWaitEarnedMs: number;
}

type ClientVerdict = { stalledMs: number; takenBytes: number } | { takenBytes: number; waitedMs: number };

/**
 * Counts what the kernel accepted for this response from now on: the socket counts what it still holds itself as
 * written, and what it sent for earlier responses on the connection.
 */
function takenBy(response: ServerResponse): () => number {
  const socket = response.socket;
  const accepted = () => (socket ? socket.bytesWritten - socket.writableLength : 0);
  const before = accepted();
  return () => accepted() - before;
}

/**
 * Calls `onEnd` once, when the client has fallen more than `stallMs` behind `minimumRate`: every byte the
 * connection accepts earns the time taking it at that rate takes (at most `mostWaitEarnedMs` in hand), and every
 * moment the response is held back by the client (the socket takes nothing more and the response waits for a
 * 'drain') spends it. Judging the average rather than each wait is what lets a slow client through: the kernel
 * takes data in bursts and then nothing until the client has read a third of its send buffer, which at the minimum
 * rate takes about as long as the last burst earned. Waits are timed from the moment the CSV stream piped into the
 * response was paused for one; time the download spends on the store counts for nothing, so a download waiting on
 * the store is never ended. Answers a function that stops watching.
 */
function watchClient(
  source: Readable,
  response: ServerResponse,
  limits: DownloadClientLimits,
  onEnd: (verdict: ClientVerdict) => void,
): () => void {
  const taken = takenBy(response);
  const { bytes, perMs } = limits.minimumRate;
  // The waiting the client has in hand, below zero once it has fallen behind, and what it had taken when last counted.
  let earnedMs = 0;
  let countedBytes = 0;
  let waitedMs = 0;
  let heldSince: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const end = (verdict: ClientVerdict) => {
    stop();
    onEnd(verdict);
  };
  const moving = () => {
    if (heldSince === undefined) return;
    const waited = performance.now() - heldSince;
    earnedMs -= waited;
    waitedMs += waited;
    heldSince = undefined;
    clearTimeout(timer);
  };
  const held = () => {
    if (heldSince !== undefined || !response.writableNeedDrain) return;
    const since = performance.now();
    heldSince = since;
    earnedMs = Math.min(limits.mostWaitEarnedMs, earnedMs + ((taken() - countedBytes) * perMs) / bytes);
    countedBytes = taken();
    // A client not behind when this wait began has taken nothing since; one already behind takes too little.
    const keepingUp = earnedMs > 0;
    timer = setTimeout(() => {
      const takenBytes = taken();
      const waited = performance.now() - since;
      end(keepingUp ? { stalledMs: waited, takenBytes } : { takenBytes, waitedMs: waitedMs + waited });
    }, Math.max(0, earnedMs + limits.stallMs)).unref();
  };
  const stop = () => {
    moving();
    source.off('pause', held);
    response.off('drain', moving);
  };
  source.on('pause', held);
  response.on('drain', moving);
  return stop;
}

export interface SecurityEventsDownloadOptions {
  service: GatewayService;
  /** The DOWNLOAD_ constants above, unless a test scales them down. */
  clientLimits?: Partial<DownloadClientLimits>;
}

/** GET /security_events/download: the workspace's events in [start, end), or recorded after an event, as CSV, streamed. */
export async function securityEventsDownloadRoutes(app: FastifyInstance, options: SecurityEventsDownloadOptions): Promise<void> {
  const { service } = options;
  const limits: DownloadClientLimits = {
    stallMs: DOWNLOAD_STALL_TIMEOUT_MS,
    minimumRate: DOWNLOAD_MINIMUM_RATE,
    mostWaitEarnedMs: DOWNLOAD_MOST_WAIT_EARNED_MS,
    ...options.clientLimits,
  };
  app.get<{ Querystring: SecurityEventDownloadQuery }>(
    '/security_events/download',
    {
      // fastify's automatic HEAD would read the whole range from the store only to throw it away.
      exposeHeadRoute: false,
      schema: {
        operationId: 'downloadSecurityEvents',
        tags: ['security events'],
        summary: 'Download security events as CSV',
        description:
          `Every security event of the key's workspace from \`start\` (inclusive) to \`end\` (exclusive), at most ${MAX_EVENT_RANGE_DAYS} days, ` +
          'or recorded after the event `after`, or both, newest first, with Braze\'s columns. Needs the permission security_events.read. Streamed. ' +
          '`after` is the way to collect continuously: pass the `event_id` of the first row of the last complete download; ' +
          'it lists, in the order events were recorded, every event recorded after that one, where a range ending near now ' +
          'can miss an event stamped before its end that was recorded after the read. ' +
          'Each download is recorded as a SECURITY_EVENTS_DOWNLOADED event before it is sent. ' +
          'A workspace may have only a few downloads in progress at once (2 by default; 429 past that, unless one is the same ' +
          `key's download whose client has taken nothing for ${DOWNLOAD_REPLACEABLE_AFTER_MS / 1000} s, which is ended for the new one), and a download whose ` +
          `client falls more than ${DOWNLOAD_STALL_TIMEOUT_MS / 1000} s behind ${DOWNLOAD_MINIMUM_RATE.bytes / 1024 / (DOWNLOAD_MINIMUM_RATE.perMs / 1000)} KiB/s ` +
          `(counting only time spent waiting on it, with at most ${DOWNLOAD_MOST_WAIT_EARNED_MS / 60_000} min earned ahead) is ended.`,
        security: [{ apiKey: [] }],
        querystring: {
          type: 'object',
          properties: {
            start: rangeBound('Start of the range, inclusive; required with `end` unless `after` is given'),
            end: rangeBound('End of the range, exclusive; required with `start` unless `after` is given'),
            after: {
              type: 'string',
              format: 'uuid',
              description:
                'An event id (`event_id` in JsonProperties): only the events of the workspace recorded after it. An id that names no event ' +
                'of the workspace (pruned past EVENT_RETENTION_DAYS, the workspace erased, another workspace\'s, malformed) is refused with 400',
            },
          },
        },
        response: {
          200: {
            description: `CSV with the header ${CSV_COLUMNS.join(',')}`,
            content: { 'text/csv': { schema: { type: 'string' } } },
            headers: {
              'content-disposition': {
                type: 'string',
                required: true,
                description:
                  'An attachment named for what was asked: `attachment; filename="security_events_<start>_<end>.csv"`, ' +
                  '`security_events_after_<after>.csv`, or `security_events_<start>_<end>_after_<after>.csv`',
              },
              'cache-control': { type: 'string', const: 'no-store', required: true, description: 'Security events are never kept by a cache' },
            },
          },
          ...authenticatedErrorResponses([400], {}, {
            400:
              `\`start\` or \`end\` is missing (without \`after\`, or the other is given) or not a date, \`end\` is not after \`start\`, the range is longer than ${MAX_EVENT_RANGE_DAYS} days, ` +
              'or `after` names no event of the workspace; `errors` says which',
            403: "The key lacks the permission security_events.read, or is used from an address outside the key's IP allowlist",
            429:
              'Too many downloads in progress, for the workspace or on this instance (`Retry-After: 5`), too many downloads by ' +
              'this key in the last minute (ten, each recorded), or this client failed to authenticate too often; see ' +
              'Retry-After. This route takes no quota point',
            503:
              'A dependency (the database, the quota store) is unavailable, so that the download could not be read or recorded ' +
              'as a SECURITY_EVENTS_DOWNLOADED event (no download goes unrecorded), or the gateway is shutting down; see Retry-After',
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = await service.authenticate(httpRequestContext(request, 'REST'));
      const { range, after, events, slot } = await service.downloadSecurityEvents(principal, request.query);
      // Records wait in the CSV stream one at a time: an event can be tens of kilobytes.
      const csv = stringify({ header: true, columns: [...CSV_COLUMNS], writableHighWaterMark: 1 });
      // Readable.from pulls the next event only when the CSV stream wants more, and pipeline stops paging
      // through the store when the client goes away.
      const records = Readable.from(csvRecords(events));
      // The source closes once no batch is being read any more, however the download ended (pipeline's own
      // callback can come while a read is still in flight): the slot is free then.
      records.once('close', slot.release);
      pipeline(records, csv, (error) => {
        if (error && error.code !== 'ERR_STREAM_PREMATURE_CLOSE') request.log.error({ err: error }, 'security event download failed');
      });
      const who = { workspaceId: principal.workspaceId, apiKeyId: principal.keyId };
      const taken = takenBy(reply.raw);
      slot.watch({
        taken,
        cut: () => {
          request.log.warn({ ...who, takenBytes: taken() }, 'security event download ended: its key started another while its client took no data');
          reply.raw.destroy();
        },
      });
      const stopWatching = watchClient(csv, reply.raw, limits, (verdict) => {
        const ended = { ...who, takenBytes: verdict.takenBytes };
        if ('stalledMs' in verdict) {
          request.log.warn({ ...ended, stalledSeconds: Math.round(verdict.stalledMs / 1000) }, 'security event download ended: its client took no data');
        } else {
          request.log.warn({ ...ended, waitedSeconds: Math.round(verdict.waitedMs / 1000) }, 'security event download ended: its client took data too slowly');
        }
        // fastify destroys the CSV stream with the response, which ends the pipeline above.
        reply.raw.destroy();
      });
      reply.raw.once('close', stopWatching);
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="${fileName(range, after)}"`)
        .header('cache-control', 'no-store')
        .send(csv);
    },
  );
}
