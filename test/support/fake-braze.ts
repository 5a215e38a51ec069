import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One scripted answer. Without `hang`, `drop`, `stallBody`, `resetBody` or `trickleMs` it is an ordinary response. */
export interface FakeReply {
  status?: number;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as it is (a non-JSON body). */
  raw?: string;
  headers?: Record<string, string>;
  /** Answers only after this long: slower than the client's timeout, it is a slow upstream. */
  delayMs?: number;
  /** Answers only once this resolves: a call kept in flight for as long as a test needs it there. */
  until?: Promise<unknown>;
  /** Never answers. */
  hang?: boolean;
  /** Closes the connection without answering. */
  drop?: boolean;
  /** Sends the status and the start of a body, then nothing more. */
  stallBody?: boolean;
  /** Sends the status and the start of a body, then resets the connection. */
  resetBody?: boolean;
  /** Sends the status, then the body a byte at a time, one every this many ms, then spaces: it never ends, nor idles. */
  trickleMs?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: IncomingMessage['headers'];
  body: string;
  /** Wall-clock arrival time, to check the pace. */
  at: number;
}

export interface FakeCampaign {
  id: string;
  name: string;
  description: string | null;
  tags: string[];
  draft: boolean;
  created_at: string;
  updated_at: string;
}

export interface FakeBraze {
  url: string;
  apiKey: string;
  requests: RecordedRequest[];
  /** Oldest first, as Braze creates them. */
  campaigns: FakeCampaign[];
  /** Answers the next calls to `route` (e.g. 'POST /campaigns/duplicate') with these, in order, before behaving normally. */
  script(route: string, ...replies: FakeReply[]): void;
  /**
   * From now on answers each call to `route` that no script answers with what `reply` gives for it (undefined: as
   * Braze would); null goes back to answering as Braze would.
   */
  answer(route: string, reply: ((request: RecordedRequest) => FakeReply | undefined) | null): void;
  requestsTo(route: string): RecordedRequest[];
  close(): Promise<void>;
}

const PAGE_SIZE = 100;

/** Campaigns named `Campaign 1` … `Campaign n`, created a minute apart. */
export function sampleCampaigns(count: number): FakeCampaign[] {
  return Array.from({ length: count }, (_, index) => {
    const at = new Date(Date.UTC(2030, 0, 1, 0, index)).toISOString();
    return {
      id: `cmp-${String(index + 1).padStart(4, '0')}`,
      name: `Campaign ${index + 1}`,
      description: index % 2 === 0 ? `Description ${index + 1}` : null,
      tags: index % 3 === 0 ? ['promo'] : [],
      draft: index % 2 === 1,
      created_at: at,
      updated_at: at,
    };
  });
}

/**
 * An HTTP server on loopback that answers like Braze's REST API (campaigns duplicate, list and details) with
 * its documented bodies and rate-limit headers, and can be told to misbehave call by call.
 */
export async function startFakeBraze(apiKey: string, campaigns: FakeCampaign[] = sampleCampaigns(3)): Promise<FakeBraze> {
  const requests: RecordedRequest[] = [];
  const scripts = new Map<string, FakeReply[]>();
  const rules = new Map<string, (request: RecordedRequest) => FakeReply | undefined>();
  const timers = new Set<NodeJS.Timeout>();
  const fake = { campaigns };

  const send = (response: ServerResponse, reply: FakeReply, fallbackStatus: number) => {
    const status = reply.status ?? fallbackStatus;
    const body = reply.raw ?? (reply.json === undefined ? '' : JSON.stringify(reply.json));
    const type = reply.raw === undefined ? 'application/json' : 'text/html';
    // Scripted replies carry exactly the headers they are given; normal ones carry Braze's rate-limit headers.
    const headers = reply.headers ?? {
      'x-ratelimit-limit': '100',
      'x-ratelimit-remaining': '99',
      'x-ratelimit-reset': String(Math.ceil(Date.now() / 60_000) * 60),
    };
    response.writeHead(status, { 'content-type': type, ...headers });
    if (reply.stallBody || reply.resetBody) {
      // Reset once the start is on the wire, so that the client has the status before the connection goes.
      response.write(body.slice(0, Math.max(1, Math.floor(body.length / 2))) || ' ', () => {
        if (reply.resetBody) response.socket?.resetAndDestroy();
      });
      return;
    }
    if (reply.trickleMs) {
      let sent = 0;
      const timer = setInterval(() => response.write(body[sent++] ?? ' '), reply.trickleMs);
      timers.add(timer);
      response.on('close', () => {
        clearInterval(timer);
        timers.delete(timer);
      });
      return;
    }
    response.end(body);
  };

  const normal = (request: IncomingMessage, recorded: RecordedRequest): FakeReply => {
    if (request.headers.authorization !== `Bearer ${apiKey}`) return { status: 401, json: { message: 'Invalid API key' } };
    const route = `${recorded.method} ${recorded.path}`;
    if (route === 'POST /campaigns/duplicate') {
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(recorded.body);
      } catch {
        return { status: 400, json: { message: 'Invalid JSON' } };
      }
      if (typeof body.campaign_id !== 'string' || typeof body.name !== 'string') {
        return { status: 400, json: { message: "'campaign_id' and 'name' are required" } };
      }
      if (!fake.campaigns.some((campaign) => campaign.id === body.campaign_id)) return { status: 400, json: { message: 'Invalid campaign_id' } };
      return { status: 202, json: { message: 'success' } };
    }
    if (route === 'GET /campaigns/list') {
      const page = Number(recorded.query.page ?? 0);
      const ordered = recorded.query.sort_direction === 'desc' ? [...fake.campaigns].reverse() : fake.campaigns;
      const slice = ordered.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
      return {
        status: 200,
        json: {
          campaigns: slice.map((campaign) => ({
            id: campaign.id,
            last_edited: campaign.updated_at,
            name: campaign.name,
            is_api_campaign: false,
            tags: campaign.tags,
          })),
          message: 'success',
        },
      };
    }
    if (route === 'GET /campaigns/details') {
      const campaign = fake.campaigns.find((candidate) => candidate.id === recorded.query.campaign_id);
      if (!campaign) return { status: 400, json: { message: 'Invalid campaign_id' } };
      const { id: _id, ...details } = campaign;
      return {
        status: 200,
        json: { message: 'success', ...details, archived: false, enabled: true, channels: ['email'], messages: {} },
      };
    }
    return { status: 404, json: { message: 'Not Found' } };
  };

  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const url = new URL(request.url ?? '/', 'http://fake');
      const recorded: RecordedRequest = {
        method: request.method ?? 'GET',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      requests.push(recorded);
      const route = `${recorded.method} ${recorded.path}`;
      const reply = scripts.get(route)?.shift() ?? rules.get(route)?.(recorded) ?? normal(request, recorded);
      if (reply.hang) return;
      if (reply.drop) {
        request.socket.destroy();
        return;
      }
      if (reply.until) {
        void reply.until.then(() => {
          if (!response.destroyed) send(response, reply, 200);
        });
        return;
      }
      if (reply.delayMs) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!response.destroyed) send(response, reply, 200);
        }, reply.delayMs);
        timers.add(timer);
        return;
      }
      send(response, reply, 200);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    apiKey,
    requests,
    get campaigns() {
      return fake.campaigns;
    },
    set campaigns(value: FakeCampaign[]) {
      fake.campaigns = value;
    },
    script(route, ...replies) {
      scripts.set(route, [...(scripts.get(route) ?? []), ...replies]);
    },
    answer(route, reply) {
      if (reply) rules.set(route, reply);
      else rules.delete(route);
    },
    requestsTo(route) {
      return requests.filter((request) => `${request.method} ${request.path}` === route);
    },
    async close() {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
