import { Arg, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { GatewayError } from '../domain/errors.js';
import type { Campaign as DomainCampaign, CampaignDetailField, SecurityEventType as DomainEventType, JobStatus } from '../domain/types.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../domain/service.js';
import { recordRateLimit, type GraphQLContext } from './context.js';
import { toConnection, toGraphQLCampaign, toGraphQLEvent, toGraphQLJob, toGraphQLViewer } from './mappers.js';
import {
  Campaign,
  CampaignConnection,
  DuplicateCampaignInput,
  DuplicateCampaignPayload,
  DuplicationJob,
  DuplicationQuota,
  SecurityEvent,
  SecurityEventConnection,
  SecurityEventFilter,
  Viewer,
} from './types.js';

/** The service refuses larger pages; the docs say so on every `first`. */
const FIRST_DESCRIPTION = `How many items this page holds, from 1. At most ${MAX_PAGE_SIZE}.`;
const AFTER_DESCRIPTION = 'The endCursor of the page before, for the page after it; the first page when left out.';

/** Why the root lists are nullable: non-null, one refused list would null every other root field's answer too. */
const refusedList = (reasons: string) => `Null, with an error at its path, when refused (${reasons}); the other fields of the operation keep their answers.`;

/** Every root query field: the query's estimated cost is taken from the workspace's read budget before it reads. */
const READ_BUDGET = "Null, with RATE_LIMITED (reason READ_BUDGET_EXCEEDED) at its path, once the workspace's read budget for the minute is spent.";

@Resolver()
export class DuplicationResolver {
  @Mutation(() => DuplicateCampaignPayload, {
    nullable: true,
    description:
      'Accepts a duplication job and answers at once with it, PENDING (a replay of an idempotency key answers the job as it is now, and costs no point). Permission campaigns.duplicate. Costs one point of the workspace quota per field. Null, with an error at its path, when refused; the other fields of the operation keep their answers.',
  })
  async duplicateCampaign(
    @Arg('input', () => DuplicateCampaignInput, { description: 'The campaign to copy, and what the copy is to be.' }) input: DuplicateCampaignInput,
    @Ctx() context: GraphQLContext,
  ): Promise<DuplicateCampaignPayload | null> {
    const { job, rateLimit } = await context.service.duplicateCampaign(context.request.channel, context.principal(), {
      campaignId: input.campaignId,
      name: input.name,
      description: input.description,
      tagNames: input.tagNames,
    }, input.idempotencyKey);
    // A refusal's state is read from the error it throws, where every GraphQL error is (applyHttpSemantics).
    recordRateLimit(context, rateLimit);
    return { job: toGraphQLJob(job) };
  }

  @Query(() => DuplicationJob, { nullable: true, description: `A job of yours (or of your workspace with security_events.read). ${READ_BUDGET}` })
  async duplicationJob(
    @Arg('id', () => ID, { description: "The job's id, as duplicateCampaign answered it (REST: job_id)." }) id: string,
    @Ctx() context: GraphQLContext,
  ): Promise<DuplicationJob | null> {
    const job = await context.service.getJob(await context.reader(), id);
    return job ? toGraphQLJob(job) : null;
  }

  @Query(() => CampaignConnection, {
    nullable: true,
    description: `Campaigns of your workspace, newest first. Permission campaigns.list. ${refusedList('without the permission, for an invalid `first` or `after`, or past the read budget')}`,
  })
  async campaigns(
    @Arg('first', () => Int, { nullable: true, defaultValue: DEFAULT_PAGE_SIZE, description: FIRST_DESCRIPTION }) first: number | null,
    @Arg('after', () => String, { nullable: true, description: AFTER_DESCRIPTION }) after: string | null,
    @Ctx() context: GraphQLContext,
  ): Promise<CampaignConnection | null> {
    const page = await context.service.listCampaigns(await context.reader(), first ?? DEFAULT_PAGE_SIZE, after);
    return toConnection(page, toGraphQLCampaign);
  }

  @Query(() => Campaign, { nullable: true, description: `One campaign of your workspace. Permission campaigns.details. ${READ_BUDGET}` })
  async campaign(@Arg('id', () => ID, { description: "The campaign's id." }) id: string, @Ctx() context: GraphQLContext): Promise<Campaign | null> {
    const campaign = await context.service.getCampaign(await context.reader(), id);
    return campaign ? toGraphQLCampaign(campaign) : null;
  }
}

/** What the field answers on an entry of the upstream's campaign list, and what refuses it. */
const FROM_DETAILS =
  "On an entry of campaigns in upstream mode, read from the campaign's details: one upstream read per campaign and request, taken from the workspace's budget of upstream reads; null, with an error at its path, when that read is refused or fails.";

type CampaignDetails = Pick<DomainCampaign, CampaignDetailField>;

/** Known already (local mode, `campaign`), without a promise; or read for this partial list entry. */
function detail<F extends CampaignDetailField>(campaign: Campaign, context: GraphQLContext, field: F): CampaignDetails[F] | Promise<CampaignDetails[F]> {
  if (campaign.details) return campaign.details[field];
  return context.listedCampaignDetails(campaign.id).then((found) => {
    // Deleted upstream since it was listed: there is nothing to answer with.
    if (!found) throw new GatewayError('UPSTREAM_ERROR', `The upstream no longer has campaign ${campaign.id}`);
    return found[field];
  });
}

/** The fields that Braze's campaign list leaves out, which an entry of it reads from the campaign's details. */
@Resolver(() => Campaign)
export class CampaignResolver {
  @FieldResolver(() => String, { nullable: true, description: `The campaign's description; null when it has none. ${FROM_DETAILS}` })
  description(@Root() campaign: Campaign, @Ctx() context: GraphQLContext): string | null | Promise<string | null> {
    return detail(campaign, context, 'description');
  }

  @FieldResolver(() => Boolean, { nullable: true, description: `True while the campaign is a draft. ${FROM_DETAILS}` })
  draft(@Root() campaign: Campaign, @Ctx() context: GraphQLContext): boolean | Promise<boolean> {
    return detail(campaign, context, 'draft');
  }

  @FieldResolver(() => Date, { nullable: true, description: `When the campaign was made. ${FROM_DETAILS}` })
  createdAt(@Root() campaign: Campaign, @Ctx() context: GraphQLContext): Date | Promise<Date> {
    return detail(campaign, context, 'createdAt');
  }
}

@Resolver(() => SecurityEvent)
export class SecurityEventResolver {
  @Query(() => SecurityEventConnection, {
    nullable: true,
    description: `Security events, the last recorded first: in the order the workspace recorded them, not strictly that of occurredAt. To find the events recorded since you last looked, read from the first page down to the newest event id you hold (since: the newest occurredAt seen can miss some). With security_events.read: every event of your workspace; without: the events your own key caused. Poll a job with filter: {jobId}. ${refusedList('an invalid `first`, `after` or filter, or past the read budget')}`,
  })
  async securityEvents(
    @Arg('filter', () => SecurityEventFilter, { nullable: true, description: 'Which events; every event the key may see when left out.' })
    filter: SecurityEventFilter | null,
    @Arg('first', () => Int, { nullable: true, defaultValue: DEFAULT_PAGE_SIZE, description: FIRST_DESCRIPTION }) first: number | null,
    @Arg('after', () => String, {
      nullable: true,
      description: `${AFTER_DESCRIPTION} The cursor of an event deleted since (past its retention period), or of another workspace's, is refused (BAD_USER_INPUT): start again from the first page.`,
    })
    after: string | null,
    @Ctx() context: GraphQLContext,
  ): Promise<SecurityEventConnection | null> {
    const page = await context.service.listSecurityEvents(
      await context.reader(),
      {
        jobId: filter?.jobId ?? undefined,
        types: (filter?.types as DomainEventType[] | null | undefined) ?? undefined,
        apiKeyId: filter?.apiKeyId ?? undefined,
        since: filter?.since ?? undefined,
        until: filter?.until ?? undefined,
      },
      first ?? DEFAULT_PAGE_SIZE,
      after,
    );
    return toConnection(page, toGraphQLEvent);
  }

  @FieldResolver(() => DuplicationJob, { nullable: true, description: 'The current state of the job the event is about.' })
  async job(@Root() event: SecurityEvent, @Ctx() context: GraphQLContext): Promise<DuplicationJob | null> {
    if (!event.jobId) return null;
    const job = await context.eventJob(event.jobId);
    return job ? toGraphQLJob(job) : null;
  }
}

@Resolver(() => Viewer)
export class ViewerResolver {
  @Query(() => Viewer, {
    nullable: true,
    description: `The API key making the request, what it may do and the quota it would spend, so that a client can offer only what the key may do. Any valid key may ask: it needs no permission, takes no quota point and records no event. ${READ_BUDGET}`,
  })
  async viewer(@Ctx() context: GraphQLContext): Promise<Viewer> {
    return toGraphQLViewer(await context.service.describeKey(await context.reader()));
  }

  @FieldResolver(() => DuplicationQuota, {
    nullable: true,
    description: "The workspace's duplication quota as it stands now, read without taking a point; null when it cannot be read right now.",
  })
  async duplicationQuota(@Ctx() context: GraphQLContext): Promise<DuplicationQuota | null> {
    return context.service.duplicationQuota(await context.reader());
  }
}

@Resolver(() => DuplicationJob)
export class DuplicationJobResolver {
  /**
   * A field of its own: in upstream mode it reads the shared pacing limiter, which only a caller asking should cost,
   * once per request however many pending jobs ask.
   */
  @FieldResolver(() => Int, {
    nullable: true,
    description:
      'While the job is not finished, the seconds to wait before asking for it again: until its next attempt when that is scheduled later (a retry after a failed attempt, a wait for the upstream), otherwise 1. Null once it is finished. The Retry-After of REST\'s GET /duplication_jobs/{id}.',
  })
  async pollAfterSeconds(@Root() job: DuplicationJob, @Ctx() context: GraphQLContext): Promise<number | null> {
    return context.service.pollAfterSeconds({ status: job.status as JobStatus, runAt: job.runAt, updatedAt: job.updatedAt }, context.upstreamPausedMs);
  }
}
