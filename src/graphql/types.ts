import { DateTimeResolver, JSONObjectResolver } from 'graphql-scalars';
import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { PERMISSIONS } from '../domain/permissions.js';
import { CHANNELS, JOB_STATUSES, SECURITY_EVENT_TYPES } from '../domain/types.js';
import { LIMITS } from '../domain/validation.js';

/** A GraphQL enum of the domain's own values, so that the two cannot drift apart. */
const enumOf = <T extends string>(values: readonly T[]) => Object.fromEntries(values.map((value) => [value, value])) as { [K in T]: K };

export const DuplicationJobStatus = enumOf(JOB_STATUSES);
export const RequestChannel = enumOf(CHANNELS);
export const SecurityEventType = enumOf(SECURITY_EVENT_TYPES);

registerEnumType(DuplicationJobStatus, {
  name: 'DuplicationJobStatus',
  description: 'PENDING → RUNNING → SUCCEEDED | FAILED. A job whose worker died stays RUNNING until its lease runs out, then runs again.',
});
registerEnumType(RequestChannel, { name: 'RequestChannel', description: 'The transport a request came through.' });
registerEnumType(SecurityEventType, {
  name: 'SecurityEventType',
  valuesConfig: {
    CAMPAIGN_DUPLICATION_REQUESTED: { description: 'A duplication job was accepted.' },
    CAMPAIGN_DUPLICATED: { description: 'A duplication job succeeded.' },
    CAMPAIGN_DUPLICATION_FAILED: { description: 'A duplication job failed for good.' },
    PERMISSION_DENIED: { description: 'A valid key was refused a permission.' },
    API_KEY_CREATED: { description: 'An API key was created.' },
    API_KEY_REVOKED: { description: 'An API key was revoked.' },
    API_KEY_ROTATED: { description: "An API key's secret was replaced; details say until when the old one is valid." },
  },
});

@ObjectType({ description: 'An API key, as events and jobs refer to it. Never the secret.' })
export class ApiKeyRef {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;
}

@ObjectType()
export class JobError {
  @Field(() => String, { description: 'A stable, machine-readable code.' })
  code!: string;

  @Field(() => String)
  message!: string;
}

@ObjectType({
  description:
    'An asynchronous campaign duplication. Finished jobs are deleted after JOB_RETENTION_DAYS (7 by default); REST callers follow a job at GET /duplication_jobs/{id}.',
})
export class DuplicationJob {
  @Field(() => ID)
  id!: string;

  @Field(() => DuplicationJobStatus)
  status!: string;

  @Field(() => ID)
  sourceCampaignId!: string;

  @Field(() => String, { description: 'Name of the new campaign.' })
  name!: string;

  @Field(() => String, { nullable: true, description: "Description of the new campaign; null when the source campaign's is kept." })
  description!: string | null;

  @Field(() => [String], { description: 'Tags of the new campaign, as requested; empty when keepsSourceTags.' })
  tagNames!: string[];

  @Field(() => Boolean, { description: "True when the request named no tags: the new campaign keeps the source campaign's tags." })
  keepsSourceTags!: boolean;

  @Field(() => RequestChannel)
  channel!: string;

  @Field(() => ApiKeyRef)
  apiKey!: ApiKeyRef;

  @Field(() => Int, { description: 'Attempts started so far.' })
  attempts!: number;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date)
  updatedAt!: Date;

  @Field(() => Date, { nullable: true })
  finishedAt!: Date | null;

  @Field(() => ID, { nullable: true, description: 'The new campaign (local mode); null when the upstream does not say.' })
  resultCampaignId!: string | null;

  @Field(() => JobError, { nullable: true, description: 'Why the job failed, or why the last attempt failed while it is retried.' })
  error!: JobError | null;

  @Field(() => Int, {
    nullable: true,
    description:
      'While the job is not finished, the seconds to wait before asking for it again: until its next attempt when that is scheduled later (a retry after a failed attempt, a wait for the upstream), otherwise 1. Null once it is finished. The Retry-After of REST\'s GET /duplication_jobs/{id}.',
  })
  pollAfterSeconds!: number | null;
}

@ObjectType()
export class DuplicateCampaignPayload {
  @Field(() => DuplicationJob, { description: 'The accepted job: PENDING, or as it is now for a replay of an idempotency key. Poll it with duplicationJob or securityEvents(filter: {jobId}).' })
  job!: DuplicationJob;
}

@ObjectType()
export class Campaign {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { nullable: true })
  description!: string | null;

  @Field(() => [String])
  tagNames!: string[];

  @Field(() => Boolean)
  draft!: boolean;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date)
  updatedAt!: Date;

  @Field(() => ID, { nullable: true, description: 'The campaign this one was copied from.' })
  duplicatedFrom!: string | null;
}

@ObjectType()
export class PageInfo {
  @Field(() => Boolean)
  hasNextPage!: boolean;

  @Field(() => Boolean, {
    description:
      'Always false: lists page forward only, with first and after, and the Relay connection specification lets a server answer false then, whether or not edges come before `after`.',
  })
  hasPreviousPage!: boolean;

  @Field(() => String, { nullable: true, description: 'The cursor of the first edge of this page; null when the page is empty.' })
  startCursor!: string | null;

  @Field(() => String, { nullable: true, description: 'Pass as `after` to get the next page.' })
  endCursor!: string | null;
}

@ObjectType()
export class CampaignEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => Campaign)
  node!: Campaign;
}

@ObjectType()
export class CampaignConnection {
  @Field(() => [CampaignEdge])
  edges!: CampaignEdge[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}

@ObjectType({
  description:
    'Something that happened to a key, a job or a permission check; newest first in lists. Kept EVENT_RETENTION_DAYS (90 by default), longer than jobs.',
})
export class SecurityEvent {
  @Field(() => ID)
  id!: string;

  @Field(() => SecurityEventType)
  type!: string;

  @Field(() => Date)
  occurredAt!: Date;

  @Field(() => ApiKeyRef, { nullable: true, description: 'Who; null only for events with no key.' })
  apiKey!: ApiKeyRef | null;

  @Field(() => RequestChannel, { nullable: true, description: 'Where a request caused it.' })
  channel!: string | null;

  @Field(() => String, { nullable: true })
  ip!: string | null;

  @Field(() => ID, { nullable: true })
  jobId!: string | null;

  @Field(() => ID, { nullable: true })
  campaignId!: string | null;

  @Field(() => JSONObjectResolver)
  details!: Record<string, unknown>;
}

@ObjectType()
export class SecurityEventEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => SecurityEvent)
  node!: SecurityEvent;
}

@ObjectType()
export class SecurityEventConnection {
  @Field(() => [SecurityEventEdge])
  edges!: SecurityEventEdge[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}

@ObjectType({ description: "The workspace's quota of duplications, shared by every key of the workspace and by REST and GraphQL." })
export class DuplicationQuota {
  @Field(() => Int, { description: 'Points per window. Each duplicateCampaign field executed takes one; a replay of an idempotency key takes none.' })
  limit!: number;

  @Field(() => Int, { description: 'Points left in the current window (the X-RateLimit-Remaining a duplication answers).' })
  remaining!: number;

  @Field(() => Date, { description: 'When the current window ends and the quota is whole again (the X-RateLimit-Reset a duplication answers).' })
  resetAt!: Date;
}

@ObjectType({ description: 'The API key making the request: who it is, and what it may do.' })
export class Viewer {
  @Field(() => ApiKeyRef, { description: 'The key itself.' })
  apiKey!: ApiKeyRef;

  @Field(() => ID, { description: 'The workspace the key belongs to; everything the key sees is of this workspace.' })
  workspaceId!: string;

  @Field(() => [String], {
    description: `The permissions the key holds, of ${PERMISSIONS.join(', ')}, in that order. A field that needs one the key lacks is refused with FORBIDDEN and recorded as a PERMISSION_DENIED event.`,
  })
  permissions!: string[];
}

@InputType()
export class DuplicateCampaignInput {
  @Field(() => ID, { description: 'The campaign to copy.' })
  campaignId!: string;

  @Field(() => String, { description: `Name of the new campaign (at most ${LIMITS.nameLength} characters).` })
  name!: string;

  @Field(() => String, { nullable: true, description: "Description of the new campaign; the source's when omitted." })
  description?: string | null;

  @Field(() => [String], { nullable: true, description: "Existing tags; when given they replace the source campaign's tags." })
  tagNames?: string[] | null;

  @Field(() => String, {
    nullable: true,
    description: `Retrying with the same key and input returns the same job without taking a quota point; the same key with other input is a CONFLICT. Scoped to the workspace, kept 24 h by default, 1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters.`,
  })
  idempotencyKey?: string | null;
}

@InputType()
export class SecurityEventFilter {
  @Field(() => ID, { nullable: true })
  jobId?: string | null;

  @Field(() => [SecurityEventType], { nullable: true })
  types?: string[] | null;

  @Field(() => ID, { nullable: true })
  apiKeyId?: string | null;

  @Field(() => Date, { nullable: true, description: 'Events at or after this time.' })
  since?: Date | null;

  @Field(() => Date, { nullable: true, description: 'Events before this time; must be after since (BAD_USER_INPUT otherwise).' })
  until?: Date | null;
}

export const scalarsMap = [{ type: Date, scalar: DateTimeResolver }];
