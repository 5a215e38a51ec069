import { decodeRowCursor } from '../domain/cursor.js';
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
    const rows = await this.store.listCampaigns(workspaceId, { first: first + 1, beforeId: decodeRowCursor('c', after) });
    return toPage(rows, first, 'c');
  }
}
