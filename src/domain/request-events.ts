// The security events a request causes, as every one of them is built: the key that made the request, its
// channel, address and request id.
import { newId } from './ids.js';
import type { Clock } from './ports.js';
import type { DuplicationJob, KeySecret, NewSecurityEvent, Principal } from './types.js';

export function requestEvent<T extends NewSecurityEvent['type']>(
  clock: Clock,
  principal: Principal,
  type: T,
  fields: Partial<Pick<NewSecurityEvent, 'jobId' | 'campaignId' | 'details'>>,
): NewSecurityEvent & { type: T } {
  return {
    id: newId(),
    workspaceId: principal.workspaceId,
    type,
    occurredAt: clock.now(),
    apiKeyId: principal.keyId,
    apiKeyName: principal.keyName,
    channel: principal.channel,
    ip: principal.ip,
    jobId: fields.jobId ?? null,
    campaignId: fields.campaignId ?? null,
    // Every event made here is a request's: its id joins the event to the caller's log and the gateway's.
    details: { ...fields.details, requestId: principal.requestId },
  };
}

/**
 * What a request event's details say of the secret presented: only that it was the previous one, during a
 * rotation's overlap (or past it, for API_KEY_REJECTED), so that the events of the old and the new tell apart.
 */
export const secretUsed = (principal: Principal): { secret?: KeySecret } => (principal.secret === 'previous' ? { secret: 'previous' } : {});

/** An event of a job after its request (its outcome, an operator failing it): the request's key, channel and address. */
export function jobEvent(job: DuplicationJob, type: NewSecurityEvent['type'], at: Date, details: Record<string, unknown>): NewSecurityEvent {
  return {
    id: newId(),
    workspaceId: job.workspaceId,
    type,
    occurredAt: at,
    apiKeyId: job.apiKeyId,
    apiKeyName: job.apiKeyName,
    channel: job.channel,
    ip: job.ip,
    jobId: job.id,
    campaignId: job.sourceCampaignId,
    details,
  };
}
