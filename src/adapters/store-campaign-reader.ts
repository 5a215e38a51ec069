import { campaignCursorUnknown, decodeRowCursor } from '../domain/cursor.js';
import { toPage } from '../domain/pages.js';
import type { CampaignReader, GatewayStore } from '../domain/ports.js';
import type { Campaign, Page } from '../domain/types.js';

/** Campaigns as the gateway's own store holds them (local mode). */
export class StoreCampaignReader implements CampaignReader {
  readonly validatesOnAccept = true;

  constructor(private readonly store: GatewayStore) {}

  get(workspaceId: string, id: string): Promise<Campaign | null> {
    return this.store.getCampaign(workspaceId, id);
  }

  async list(workspaceId: string, first: number, after: string | null): Promise<Page<Campaign>> {
    const beforeId = decodeRowCursor('c', after);
    const rows = await this.store.listCampaigns(workspaceId, { first: first + 1, beforeId });
    // The store lists nothing after a campaign it does not have, which would read as the end of the list. Campaigns
    // go only with their workspace, so such a cursor was never this workspace's: refused, as an event's is.
    if (rows.length === 0 && beforeId !== undefined && (await this.store.getCampaign(workspaceId, beforeId)) === null) throw campaignCursorUnknown();
    return toPage(rows, first, 'c');
  }
}
