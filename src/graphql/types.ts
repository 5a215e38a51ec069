import { GraphQLScalarType, Kind } from 'graphql';
import { DateTimeResolver, JSONObjectResolver } from 'graphql-scalars';
import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { PERMISSIONS } from '../domain/permissions.js';
import { CHANNELS, JOB_ERROR_CODES, JOB_STATUSES, SECURITY_EVENT_TYPES, type Campaign as DomainCampaign, type CampaignDetailField } from '../domain/types.js';
import { CHARACTERS, eventTimeBound, LIMITS } from '../domain/validation.js';

/** What every connection's edges, cursors and pageInfo are. */
const EDGES_DESCRIPTION = 'The items of this page, each with its cursor.';
const CURSOR_DESCRIPTION = "Pass as `after` to get the items after this one. Opaque: don't read anything into it.";
const PAGE_INFO_DESCRIPTION = 'Whether more items follow, and the cursors to get them.';

/** A GraphQL enum of the domain's own values, so that the two cannot drift apart. */
const enumOf = <T extends string>(values: readonly T[]) => Object.fromEntries(values.map((value) => [value, value])) as { [K in T]: K };

export const DuplicationJobStatus = enumOf(JOB_STATUSES);
export const RequestChannel = enumOf(CHANNELS);
export const SecurityEventType = enumOf(SECURITY_EVENT_TYPES);

registerEnumType(DuplicationJobStatus, {
  name: 'DuplicationJobStatus',
  description: 'PENDING → RUNNING → SUCCEEDED | FAILED. A job whose worker died stays RUNNING until its lease runs out, then runs again.',
  valuesConfig: {
    PENDING: { description: 'Accepted, waiting for its first attempt, or for its next one after an attempt failed.' },
    RUNNING: { description: 'An attempt is running.' },
    SUCCEEDED: { description: 'The copy was made. Finished.' },
    FAILED: { description: 'The duplication failed for good; error says why. Finished.' },
  },
});
registerEnumType(RequestChannel, {
  name: 'RequestChannel',
  description: 'The transport a request came through.',
  valuesConfig: {
    REST: { description: 'The Braze-compatible REST API (POST /campaigns/duplicate).' },
    GRAPHQL: { description: 'This GraphQL API.' },
  },
});
registerEnumType(SecurityEventType, {
  name: 'SecurityEventType',
  description: 'What a security event records.',
  valuesConfig: {
    CAMPAIGN_DUPLICATION_REQUESTED: { description: 'A duplication job was accepted.' },
    CAMPAIGN_DUPLICATED: { description: 'A duplication job succeeded.' },
    CAMPAIGN_DUPLICATION_FAILED: { description: 'A duplication job failed for good.' },
    PERMISSION_DENIED: {
      description: 'A valid key was refused a permission it lacks, or used from an address outside its IP allowlist (details.reason: ip_not_allowed).',
    },
    API_KEY_CREATED: { description: 'An API key was created.' },
    API_KEY_REVOKED: { description: 'An API key was revoked.' },
    API_KEY_ROTATED: { description: "An API key's secret was replaced; details say until when the old one is valid." },
    SECURITY_EVENTS_DOWNLOADED: {
      description: "A key downloaded the workspace's security events as CSV (REST); details say which range. Reads through securityEvents leave no event, only a line in the gateway's log.",
    },
    API_KEY_REJECTED: {
      description:
        'A request presented a secret of a key the gateway holds but refused it (details.reason: revoked, expired or ' +
        'rotated_out, a previous secret past its overlap or replaced with none); the caller got the 401 an unknown key gets. ' +
        'Unknown and malformed keys, and a secret that a second rotation replaced, are recorded nowhere here.',
    },
  },
});

@ObjectType({ description: 'An API key, as events and jobs refer to it. Never the secret.' })
export class ApiKeyRef {
  @Field(() => ID, { description: "The key's public id." })
  id!: string;

  @Field(() => String, { description: 'The name the key was given when it was made.' })
  name!: string;
}

@ObjectType({ description: 'Why a job failed, or why its last attempt failed.' })
export class JobError {
  @Field(() => String, { description: `A stable, machine-readable code: ${JOB_ERROR_CODES.join(', ')}, or one a later version adds.` })
  code!: string;

  @Field(() => String, { description: 'What went wrong, for a person to read; its wording may change, the code does not.' })
  message!: string;
}

@ObjectType({
  description:
    'An asynchronous campaign duplication. A finished job is kept for a limited time, 7 days by default, after which it is not found any more; REST callers follow a job at GET /duplication_jobs/{id}.',
})
export class DuplicationJob {
  @Field(() => ID, { description: "The job's id, to follow it with duplicationJob(id) or securityEvents(filter: {jobId})." })
  id!: string;

  @Field(() => DuplicationJobStatus, { description: 'Where the job stands.' })
  status!: string;

  @Field(() => ID, { description: 'The campaign being copied.' })
  sourceCampaignId!: string;

  @Field(() => String, { description: 'Name of the new campaign.' })
  name!: string;

  @Field(() => String, { nullable: true, description: "Description of the new campaign; null when the source campaign's is kept." })
  description!: string | null;

  @Field(() => [String], { description: 'Tags of the new campaign, as requested; empty when keepsSourceTags.' })
  tagNames!: string[];

  @Field(() => Boolean, { description: "True when the request named no tags: the new campaign keeps the source campaign's tags." })
  keepsSourceTags!: boolean;

  @Field(() => RequestChannel, { description: 'The transport the duplication was asked for through.' })
  channel!: string;

  @Field(() => ApiKeyRef, { description: 'The key that asked for the duplication.' })
  apiKey!: ApiKeyRef;

  @Field(() => Int, { description: 'Attempts started so far.' })
  attempts!: number;

  @Field(() => Date, { description: 'When the job was accepted.' })
  createdAt!: Date;

  @Field(() => Date, { description: 'When the job last changed: accepted, started, put back for a retry, or finished.' })
  updatedAt!: Date;

  @Field(() => Date, { nullable: true, description: 'When the job succeeded or failed for good; null until then.' })
  finishedAt!: Date | null;

  @Field(() => ID, {
    nullable: true,
    description: 'The new campaign, once the job has succeeded; null before, and when the service that made the copy does not name it.',
  })
  resultCampaignId!: string | null;

  @Field(() => JobError, { nullable: true, description: 'Why the job failed, or why the last attempt failed while it is retried.' })
  error!: JobError | null;

  /** Not a field: when the job runs next, which its pollAfterSeconds is worked out from. */
  runAt!: Date;
}

@ObjectType({ description: 'What duplicateCampaign answers.' })
export class DuplicateCampaignPayload {
  @Field(() => DuplicationJob, { description: 'The accepted job: PENDING, or as it is now for a replay of an idempotency key. Poll it with duplicationJob or securityEvents(filter: {jobId}).' })
  job!: DuplicationJob;
}

@ObjectType({ description: 'A campaign of your workspace.' })
export class Campaign {
  @Field(() => ID, { description: "The campaign's id: duplicate it with duplicateCampaign(input: {campaignId})." })
  id!: string;

  @Field(() => String, { description: "The campaign's name." })
  name!: string;

  @Field(() => [String], { description: "The campaign's tags." })
  tagNames!: string[];

  @Field(() => Date, { description: 'When the campaign last changed.' })
  updatedAt!: Date;

  @Field(() => ID, {
    nullable: true,
    description: 'The campaign this one was copied from; null when it is not a copy, and always in upstream mode, where the upstream does not say.',
  })
  duplicatedFrom!: string | null;

  /**
   * Not a field: description, draft and createdAt (CampaignResolver), or null on an entry of the upstream's list,
   * which leaves them out.
   */
  details!: Pick<DomainCampaign, CampaignDetailField> | null;
}

@ObjectType({ description: "Where a page stands in its list (Relay's PageInfo)." })
export class PageInfo {
  @Field(() => Boolean, { description: 'True when more items follow this page: ask for them with after: endCursor.' })
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

@ObjectType({ description: 'A campaign in a page, with its cursor.' })
export class CampaignEdge {
  @Field(() => String, { description: CURSOR_DESCRIPTION })
  cursor!: string;

  @Field(() => Campaign, { description: 'The campaign.' })
  node!: Campaign;
}

@ObjectType({ description: 'A page of campaigns, newest first (a Relay connection).' })
export class CampaignConnection {
  @Field(() => [CampaignEdge], { description: EDGES_DESCRIPTION })
  edges!: CampaignEdge[];

  @Field(() => PageInfo, { description: PAGE_INFO_DESCRIPTION })
  pageInfo!: PageInfo;
}

@ObjectType({
  description:
    'Something that happened to a key, a job or a permission check; in lists, the last recorded first. Kept for a limited time, 90 days by default, and never less long than the job it is about.',
})
export class SecurityEvent {
  @Field(() => ID, { description: "The event's id." })
  id!: string;

  @Field(() => SecurityEventType, { description: 'What happened.' })
  type!: string;

  @Field(() => Date, {
    description:
      'When it happened, stamped just before it was recorded. Lists are in the order events were recorded, so an event may be listed above one stamped up to a fraction of a second after it.',
  })
  occurredAt!: Date;

  @Field(() => ApiKeyRef, { nullable: true, description: 'Who; null only for events with no key.' })
  apiKey!: ApiKeyRef | null;

  @Field(() => RequestChannel, { nullable: true, description: 'Where a request caused it.' })
  channel!: string | null;

  @Field(() => String, {
    nullable: true,
    description: "The client address of the request that caused it (for a job's outcome, the request that asked for the job); null when no request did, as for a key made or revoked by an operator.",
  })
  ip!: string | null;

  @Field(() => ID, { nullable: true, description: 'The duplication job it is about; null when it is about none.' })
  jobId!: string | null;

  @Field(() => ID, { nullable: true, description: "The campaign it is about, a duplication's source campaign; null when it is about none." })
  campaignId!: string | null;

  @Field(() => JSONObjectResolver, {
    description:
      'More, by type. CAMPAIGN_DUPLICATION_REQUESTED: name, description and tagNames asked for. CAMPAIGN_DUPLICATED: ' +
      'sourceCampaignId, resultCampaignId, name, attempts, and in upstream mode upstreamStatus, upstreamMessage and, when Braze sent any, upstreamErrors, its non-fatal errors as one line of text. ' +
      'CAMPAIGN_DUPLICATION_FAILED: sourceCampaignId, name, attempts and error. PERMISSION_DENIED: permission, the one refused, ' +
      'or reason: ip_not_allowed; with unrecordedBefore, the number of the key\'s denials left unrecorded since its last such event, when there were any. ' +
      'API_KEY_REJECTED: reason (revoked, expired or rotated_out), with unrecordedBefore as PERMISSION_DENIED has it. ' +
      'CAMPAIGN_DUPLICATION_REQUESTED, PERMISSION_DENIED and API_KEY_REJECTED also hold secret: previous when the request ' +
      'presented the key\'s previous secret (a rotation\'s overlap), and no secret for its current one. ' +
      'API_KEY_CREATED: permissions, expiresAt and allowedCidrs. API_KEY_ROTATED: previousValidUntil, until when the old ' +
      'secret works (null: it stopped at once); earlierSecretCutShortFrom when the rotation ended an earlier overlap, until when ' +
      'that older secret was to work. API_KEY_CREATED, API_KEY_ROTATED and API_KEY_REVOKED: operator, the label ' +
      'the one who ran the key command gave themselves, and reason, each when given; the demo key a first start makes has neither. ' +
      'SECURITY_EVENTS_DOWNLOADED: start (included) and end (excluded) of the range downloaded, when one was given, and after, the id of the event it listed the events recorded after, when given. ' +
      'The events a request causes (CAMPAIGN_DUPLICATION_REQUESTED, PERMISSION_DENIED, API_KEY_REJECTED, SECURITY_EVENTS_DOWNLOADED) also hold requestId, the id the gateway ' +
      "answered that request with (its X-Request-Id header: the caller's own when it sent one of 1 to 128 of A-Z a-z 0-9 . _ : -), " +
      "to find the request in the caller's and the gateway's logs. A job's outcome is not a request's: its CAMPAIGN_DUPLICATION_REQUESTED, " +
      'found by jobId, holds the id of the request that asked for the job.',
  })
  details!: Record<string, unknown>;
}

@ObjectType({ description: 'A security event in a page, with its cursor.' })
export class SecurityEventEdge {
  @Field(() => String, { description: CURSOR_DESCRIPTION })
  cursor!: string;

  @Field(() => SecurityEvent, { description: 'The event.' })
  node!: SecurityEvent;
}

@ObjectType({ description: 'A page of security events, the last recorded first (a Relay connection).' })
export class SecurityEventConnection {
  @Field(() => [SecurityEventEdge], { description: EDGES_DESCRIPTION })
  edges!: SecurityEventEdge[];

  @Field(() => PageInfo, { description: PAGE_INFO_DESCRIPTION })
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

@InputType({ description: "A duplication: the campaign to copy, and the new campaign's name, description and tags." })
export class DuplicateCampaignInput {
  @Field(() => ID, { description: 'The campaign to copy.' })
  campaignId!: string;

  @Field(() => String, { description: `Name of the new campaign: at most ${LIMITS.nameLength} ${CHARACTERS}, not counting the spaces around it, which are dropped.` })
  name!: string;

  @Field(() => String, { nullable: true, description: `Description of the new campaign, at most ${LIMITS.descriptionLength} ${CHARACTERS}; the source's when omitted.` })
  description?: string | null;

  @Field(() => [String], {
    nullable: true,
    description: `Existing tags, at most ${LIMITS.tagCount} of at most ${LIMITS.tagLength} ${CHARACTERS} each, not counting the spaces around it; when given they replace the source campaign's tags.`,
  })
  tagNames?: string[] | null;

  @Field(() => String, {
    nullable: true,
    description: `Retrying with the same key and input returns the same job without taking a quota point; the same key with other input is a CONFLICT. Scoped to the workspace, kept 24 h by default, 1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters.`,
  })
  idempotencyKey?: string | null;
}

@InputType({
  description: 'Which events to list: an event is listed when it matches every field given (jobId and apiKeyId and one of types and the window from since to until). A field left out or null matches every event.',
})
export class SecurityEventFilter {
  @Field(() => ID, { nullable: true, description: 'Only the events of this duplication job.' })
  jobId?: string | null;

  @Field(() => [SecurityEventType], { nullable: true, description: 'Only events of one of these types; an empty list matches no event.' })
  types?: string[] | null;

  @Field(() => ID, {
    nullable: true,
    description: 'Only the events this API key caused. Without security_events.read a key sees only its own events: another key names none.',
  })
  apiKeyId?: string | null;

  @Field(() => Date, { nullable: true, description: 'Events at or after this time.' })
  since?: Date | null;

  @Field(() => Date, { nullable: true, description: 'Events before this time; must be after since (BAD_USER_INPUT otherwise).' })
  until?: Date | null;
}

const dateTime = DateTimeResolver.toConfig();

/**
 * graphql-scalars' DateTime, described as it behaves (its own description says "at UTC", yet it takes any offset), and
 * with the specification it follows, which introspection shows (codegen's strictScalars wants one). Every DateTime a
 * client sends is a bound of a window of events (securityEvents' since and until), so each is taken as the CSV
 * download takes its range: finer than a millisecond, rounded up to the next.
 */
export const DateTimeScalar = new GraphQLScalarType({
  ...dateTime,
  parseValue: (value) => {
    const parsed = dateTime.parseValue(value);
    return typeof value === 'string' ? eventTimeBound(value) : parsed;
  },
  parseLiteral: (ast, variables) => {
    const parsed = dateTime.parseLiteral(ast, variables);
    return ast.kind === Kind.STRING ? eventTimeBound(ast.value) : parsed;
  },
  description:
    'An instant, as an RFC 3339 date-time (section 5.6). Given out in UTC with milliseconds, e.g. 2007-12-03T10:15:30.000Z. ' +
    'Taken with any offset (Z, +01:00, -05:30) and with or without fractions of a second, kept to the millisecond: ' +
    'a fraction finer than that is rounded up to the next millisecond, as events are stamped to the millisecond, so that ' +
    'a window from since (included) to until (excluded) holds exactly the events it would to the nanosecond. ' +
    'A date alone (2007-12-03) or a time without an offset is refused.',
  specifiedByURL: 'https://www.rfc-editor.org/rfc/rfc3339#section-5.6',
});

export const scalarsMap = [{ type: Date, scalar: DateTimeScalar }];
