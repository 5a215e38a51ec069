import { decodeOffsetCursor, encodeCursor } from '../domain/cursor.js';
import { GatewayError, isGatewayError } from '../domain/errors.js';
import type { CampaignReader, Quota } from '../domain/ports.js';
import type { Campaign, ListedCampaign, Page } from '../domain/types.js';
import { isRecord } from '../domain/validation.js';
import { type BrazeClient, type UpstreamEndpoint, type UpstreamResponse } from './braze-client.js';

/** Braze's `GET /campaigns/list` returns pages of this many campaigns. */
const BRAZE_PAGE_SIZE = 100;
const CURSOR_KIND = 'bz';

const text = (value: unknown): string | null => (typeof value === 'string' ? value : null);
const strings = (value: unknown): string[] => (Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : []);

function date(...values: unknown[]): Date {
  for (const value of values) {
    if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return new Date(value);
  }
  return new Date(0);
}

/** The refusal of a read past the workspace's budget: worded apart from the duplication quota, which it does not touch. */
export const UPSTREAM_READS_SPENT_MESSAGE = "Rate limit exceeded: this workspace's reads of the upstream's campaigns are spent for now";

/**
 * Campaigns read through to the upstream (one upstream per gateway, so the caller's workspace does not narrow
 * anything there). Nothing is checked on accept: the upstream itself refuses an unknown campaign or tag.
 */
export class BrazeCampaignReader implements CampaignReader {
  readonly validatesOnAccept = false;

  /** `reads`: upstream calls each workspace may cause per window. */
  constructor(
    private readonly client: BrazeClient,
    private readonly reads: Quota,
  ) {}

  /**
   * One upstream call, paid for first from the workspace's budget: every workspace reads with the one upstream
   * key, so a workspace reading without bound (aliased fields, long pages) would spend the key's limit for all.
   */
  private async call(workspaceId: string, path: UpstreamEndpoint, query: Record<string, string>, requestId: string | undefined): Promise<UpstreamResponse> {
    await this.reads.consume(workspaceId).catch((error: unknown) => {
      if (isGatewayError(error) && error.code === 'RATE_LIMITED') {
        throw new GatewayError('RATE_LIMITED', UPSTREAM_READS_SPENT_MESSAGE, { retryAfterSeconds: error.retryAfterSeconds });
      }
      throw error;
    });
    return this.client.call('GET', path, { query, requestId });
  }

  async get(workspaceId: string, id: string, requestId?: string): Promise<Campaign | null> {
    const response = await this.call(workspaceId, '/campaigns/details', { campaign_id: id }, requestId);
    // campaign_id is the only parameter: a refusal of it means there is no such campaign.
    if (response.kind === 'rejected' && (response.status === 400 || response.status === 404)) return null;
    const body = this.client.withoutKey(expectObject(response, 'campaign details'));
    const { message: _message, name, description, tags, draft, created_at, updated_at, ...rest } = body;
    return {
      id,
      workspaceId,
      name: text(name) ?? '',
      description: text(description),
      tagNames: strings(tags),
      draft: draft === true,
      body: rest,
      createdAt: date(created_at, updated_at),
      updatedAt: date(updated_at, created_at),
      duplicatedFrom: null,
    };
  }

  /**
   * Newest first. The cursor is an offset into the upstream's list, so campaigns created while a caller pages
   * shift later pages by as many (the upstream pages by number, not by key).
   */
  async list(workspaceId: string, first: number, after: string | null, requestId?: string): Promise<Page<ListedCampaign>> {
    const offset = decodeOffsetCursor(CURSOR_KIND, after) ?? 0;
    // Each campaign with its position in the upstream's list, which is what a cursor records.
    const found: { position: number; campaign: ListedCampaign }[] = [];
    let page = Math.floor(offset / BRAZE_PAGE_SIZE);
    // Enough pages for one campaign more than asked for, which says whether there is a next page.
    const lastPage = Math.floor((offset + first) / BRAZE_PAGE_SIZE);
    let more = true;
    while (more && found.length <= first && page <= lastPage) {
      const response = await this.call(workspaceId, '/campaigns/list', { page: String(page), sort_direction: 'desc' }, requestId);
      const campaigns = this.client.withoutKey(expectObject(response, 'a campaign list')).campaigns;
      if (!Array.isArray(campaigns)) throw unreadable('a campaign list');
      campaigns.forEach((item, index) => {
        const position = page * BRAZE_PAGE_SIZE + index;
        if (position >= offset && isRecord(item) && typeof item.id === 'string') {
          found.push({ position, campaign: fromListItem(workspaceId, item) });
        }
      });
      more = campaigns.length >= BRAZE_PAGE_SIZE;
      page += 1;
    }
    const visible = found.slice(0, first);
    const cursors = visible.map(({ position }) => encodeCursor(CURSOR_KIND, position + 1));
    return {
      items: visible.map(({ campaign }) => campaign),
      hasNextPage: found.length > first || (more && page > lastPage),
      endCursor: cursors.at(-1) ?? null,
      cursors,
    };
  }
}

/** The list carries no description, draft flag or creation time: the entry is partial, and its details have them. */
function fromListItem(workspaceId: string, item: Record<string, unknown>): ListedCampaign {
  return {
    partial: true,
    id: String(item.id),
    workspaceId,
    name: text(item.name) ?? '',
    tagNames: strings(item.tags),
    body: { is_api_campaign: item.is_api_campaign === true },
    updatedAt: date(item.last_edited),
    duplicatedFrom: null,
  };
}

const unreadable = (what: string) => new GatewayError('UPSTREAM_ERROR', `The upstream returned ${what} the gateway cannot read`);

/** The same mapping for every read: refusals are the upstream's error, outages are unavailability. */
function expectObject(response: UpstreamResponse, what: string): Record<string, unknown> {
  switch (response.kind) {
    case 'ok':
      if (!isRecord(response.body)) throw unreadable(what);
      return response.body;
    case 'rejected':
      throw new GatewayError('UPSTREAM_ERROR', response.error.message);
    case 'unavailable':
      throw new GatewayError('UNAVAILABLE', response.error.message, {
        ...(response.retryAfterMs === undefined ? {} : { retryAfterSeconds: Math.max(1, Math.ceil(response.retryAfterMs / 1000)) }),
      });
  }
}
