import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Readable, pipeline } from 'node:stream';
import { stringify } from 'csv-stringify';
import type { FastifyInstance } from 'fastify';
import type { GatewayService } from '../domain/service.js';
import type { SecurityEvent, SecurityEventType } from '../domain/types.js';
import { MAX_EVENT_RANGE_DAYS } from '../domain/validation.js';
import { authenticatedErrorResponses } from './openapi.js';
import { httpRequestContext } from './rest.js';

/** Braze's "Security Event Download" columns, in Braze's order. */
export const CSV_COLUMNS = ['CreatedAt', 'EmailAtTimeOfEvent', 'CurrentEmail', 'EventName', 'OtherAccount', 'JsonProperties'] as const;

export const EVENT_NAMES: Record<SecurityEventType, string> = {
  CAMPAIGN_DUPLICATION_REQUESTED: 'Requested Campaign Duplication via API',
  CAMPAIGN_DUPLICATED: 'Duplicated Campaign via API',
  CAMPAIGN_DUPLICATION_FAILED: 'Failed Campaign Duplication via API',
  PERMISSION_DENIED: 'Denied API Key Permission',
  API_KEY_CREATED: 'Created API Key',
  API_KEY_REVOKED: 'Revoked API Key',
  API_KEY_ROTATED: 'Rotated API Key',
};

/**
 * One CSV row. Events are caused by API keys, which have no email address: the email columns stay empty and
 * who did it is in JsonProperties.
 */
export function toCsvRecord(event: SecurityEvent): string[] {
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
  return [event.occurredAt.toISOString(), '', '', EVENT_NAMES[event.type], '', JSON.stringify(properties)];
}

async function* csvRecords(events: AsyncIterable<SecurityEvent>): AsyncGenerator<string[]> {
  for await (const event of events) yield toCsvRecord(event);
}

const fileStamp = (date: Date): string => date.toISOString().replace(/[:.]/g, '-');

const rangeBound = (which: string) => ({
  type: 'string',
  description: `${which}: an ISO 8601 date (UTC midnight) or date-time with a time zone`,
  examples: [which.startsWith('Start') ? '2024-05-01T00:00:00Z' : '2024-06-01'],
});

/** How long a download may wait on a client that takes no data before it is ended. */
export const DOWNLOAD_STALL_TIMEOUT_MS = 30_000;

/**
 * Calls `onStall` once, when the response has been held back by its client (the socket takes nothing more and
 * the response waits for a 'drain') for `timeoutMs`. The wait is timed from the moment the CSV stream piped
 * into the response was paused for it. A slow client that keeps taking data is never stalled, nor is a
 * download waiting on the store. Answers a function that stops watching.
 */
function watchStall(source: Readable, response: ServerResponse, timeoutMs: number, onStall: (stalledMs: number) => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const moving = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  const held = () => {
    if (timer !== undefined || !response.writableNeedDrain) return;
    const since = performance.now();
    timer = setTimeout(() => {
      stop();
      onStall(performance.now() - since);
    }, timeoutMs).unref();
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
  /** DOWNLOAD_STALL_TIMEOUT_MS unless a test needs a shorter one. */
  stallTimeoutMs?: number;
}

/** GET /security_events/download: the workspace's events in [start, end) as CSV, streamed. */
export async function securityEventsDownloadRoutes(app: FastifyInstance, options: SecurityEventsDownloadOptions): Promise<void> {
  const { service, stallTimeoutMs = DOWNLOAD_STALL_TIMEOUT_MS } = options;
  app.get<{ Querystring: { start?: unknown; end?: unknown } }>(
    '/security_events/download',
    {
      // fastify's automatic HEAD would read the whole range from the store only to throw it away.
      exposeHeadRoute: false,
      schema: {
        tags: ['security events'],
        summary: 'Download security events as CSV',
        description:
          `Every security event of the key's workspace from \`start\` (inclusive) to \`end\` (exclusive), newest first, ` +
          `at most ${MAX_EVENT_RANGE_DAYS} days, with Braze's columns. Needs the permission security_events.read. Streamed. ` +
          'A workspace may have only a few downloads in progress at once (2 by default; 429 past that), and a download whose ' +
          `client takes no data for ${DOWNLOAD_STALL_TIMEOUT_MS / 1000} s is ended.`,
        security: [{ apiKey: [] }],
        querystring: {
          type: 'object',
          required: ['start', 'end'],
          properties: { start: rangeBound('Start of the range, inclusive'), end: rangeBound('End of the range, exclusive') },
        },
        response: {
          200: {
            description: `CSV with the header ${CSV_COLUMNS.join(',')}`,
            content: { 'text/csv': { schema: { type: 'string' } } },
          },
          ...authenticatedErrorResponses([400], {}, {
            400: `\`start\` or \`end\` is missing or not a date, \`end\` is not after \`start\`, or the range is longer than ${MAX_EVENT_RANGE_DAYS} days; \`errors\` says which`,
            403: "The key lacks the permission security_events.read, or is used from an address outside the key's IP allowlist",
            429:
              'Too many downloads in progress, for the workspace or on this instance (`Retry-After: 5`), or this client failed ' +
              'to authenticate too often; see Retry-After. This route takes no quota point',
          }),
        },
      },
    },
    async (request, reply) => {
      const principal = await service.authenticate(httpRequestContext(request, 'REST'));
      const { range, events, release } = await service.downloadSecurityEvents(principal, request.query);
      // Records wait in the CSV stream one at a time: an event can be tens of kilobytes.
      const csv = stringify({ header: true, columns: [...CSV_COLUMNS], writableHighWaterMark: 1 });
      // Readable.from pulls the next event only when the CSV stream wants more, and pipeline stops paging
      // through the store when the client goes away.
      const records = Readable.from(csvRecords(events));
      // The source closes once no batch is being read any more, however the download ended (pipeline's own
      // callback can come while a read is still in flight): the slot is free then.
      records.once('close', release);
      pipeline(records, csv, (error) => {
        if (error && error.code !== 'ERR_STREAM_PREMATURE_CLOSE') request.log.error({ err: error }, 'security event download failed');
      });
      const stopWatching = watchStall(csv, reply.raw, stallTimeoutMs, (stalledMs) => {
        request.log.warn(
          { workspaceId: principal.workspaceId, apiKeyId: principal.keyId, stalledSeconds: Math.round(stalledMs / 1000) },
          'security event download ended: its client took no data',
        );
        // fastify destroys the CSV stream with the response, which ends the pipeline above.
        reply.raw.destroy();
      });
      reply.raw.once('close', stopWatching);
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="security_events_${fileStamp(range.start)}_${fileStamp(range.end)}.csv"`)
        .header('cache-control', 'no-store')
        .send(csv);
    },
  );
}
