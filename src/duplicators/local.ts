import { newId } from '../domain/ids.js';
import type { Clock, Duplicator, DuplicationResult, GatewayStore } from '../domain/ports.js';
import type { DuplicationJob } from '../domain/types.js';
import { quoted } from '../domain/validation.js';

/**
 * Copies a campaign inside the gateway's own store (SQLite or PostgreSQL). It only builds the copy: the worker writes it together with
 * the job's terminal state and outcome event in one transaction, so a crash can never leave two copies.
 */
export class LocalDuplicator implements Duplicator {
  readonly actsOutsideStore = false;

  constructor(
    private readonly store: GatewayStore,
    private readonly clock: Clock,
  ) {}

  async duplicate(job: DuplicationJob): Promise<DuplicationResult> {
    const source = await this.store.getCampaign(job.workspaceId, job.sourceCampaignId);
    if (!source) {
      return { kind: 'permanent', error: { code: 'CAMPAIGN_NOT_FOUND', message: 'Invalid Campaign ID' } };
    }
    if (job.tagNames?.length) {
      const missing = await this.store.missingTags(job.workspaceId, job.tagNames);
      if (missing.length > 0) {
        return { kind: 'permanent', error: { code: 'TAG_NOT_FOUND', message: `Unknown tag ${quoted(missing[0])}` } };
      }
    }
    const now = this.clock.now();
    const newCampaign = {
      ...source,
      id: newId(),
      name: job.name,
      description: job.description ?? source.description,
      tagNames: job.tagNames ?? source.tagNames,
      draft: true,
      createdAt: now,
      updatedAt: now,
      duplicatedFrom: source.id,
    };
    return { kind: 'succeeded', resultCampaignId: newCampaign.id, newCampaign };
  }
}
