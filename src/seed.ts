import type { AdminService } from './domain/admin.js';
import { PERMISSIONS } from './domain/permissions.js';
import type { GatewayStore } from './domain/ports.js';
import type { Campaign, Workspace } from './domain/types.js';

export interface DemoSeed {
  workspace: Workspace;
  key: string;
  campaigns: Campaign[];
}

const SAMPLE_CAMPAIGNS = [
  {
    name: 'Welcome series',
    description: 'Three onboarding emails for new sign-ups',
    tagNames: ['onboarding', 'email'],
    body: { channels: ['email'], messages: 3, schedule: { type: 'action_based', trigger: 'sign_up' } },
  },
  {
    name: 'Spring sale push',
    description: 'Push notification for the spring sale',
    tagNames: ['promo', 'push'],
    body: { channels: ['ios_push', 'android_push'], messages: 1, schedule: { type: 'scheduled', at: '2027-03-21T09:00:00Z' } },
  },
  {
    name: 'Win-back',
    description: null,
    tagNames: ['retention', 'email'],
    body: { channels: ['email'], messages: 2, schedule: { type: 'recurring', every: 'week' } },
  },
];

/** First start with an empty store: a `demo` workspace, sample campaigns and tags, and an admin key. */
export async function seedDemoWorkspace(store: GatewayStore, admin: AdminService): Promise<DemoSeed | null> {
  if (await store.hasWorkspaces()) return null;
  let workspace: Workspace;
  try {
    workspace = await admin.createWorkspace('demo');
  } catch (error) {
    // Several instances started on one empty database at once, and another one is seeding it.
    if (await store.findWorkspace('demo')) return null;
    throw error;
  }
  await store.upsertTags(workspace.id, ['newsletter']);
  const campaigns: Campaign[] = [];
  for (const sample of SAMPLE_CAMPAIGNS) campaigns.push(await admin.addCampaign(workspace.id, sample));
  const { key } = await admin.createKey({ workspace: workspace.id, name: 'demo admin', permissions: [...PERMISSIONS] });
  return { workspace, key, campaigns };
}

/** The first-start banner: the key, once, and examples that work exactly as printed. */
export function demoBanner(seed: DemoSeed, baseUrl: string): string {
  const campaign = seed.campaigns[0];
  const restBody = JSON.stringify({ campaign_id: campaign.id, name: 'Welcome series (copy)', tag_names: ['newsletter'] });
  const mutation = JSON.stringify({
    query: `mutation { duplicateCampaign(input: {campaignId: "${campaign.id}", name: "Welcome series (GraphQL copy)"}) { job { id status } } }`,
  });
  const poll = JSON.stringify({
    query: 'query($job: ID!) { securityEvents(filter: {jobId: $job}, first: 2) { edges { node { type occurredAt } } } duplicationJob(id: $job) { status resultCampaignId } }',
    variables: { job: 'JOB_ID' },
  });
  return [
    '',
    'Created workspace "demo" with sample campaigns, and an admin API key with every permission.',
    'This key is shown only once; store it now:',
    '',
    `  ${seed.key}`,
    '',
    'Duplicate a campaign over REST (Braze-compatible):',
    '',
    `  curl -sS -X POST ${baseUrl}/campaigns/duplicate \\`,
    `    -H 'Authorization: Bearer ${seed.key}' -H 'Content-Type: application/json' \\`,
    `    -d '${restBody}'`,
    '',
    'The same over GraphQL:',
    '',
    `  curl -sS ${baseUrl}/graphql -H 'Authorization: Bearer ${seed.key}' -H 'Content-Type: application/json' \\`,
    `    -d '${mutation}'`,
    '',
    'Watch the job finish (put the job id in place of JOB_ID):',
    '',
    `  curl -sS ${baseUrl}/graphql -H 'Authorization: Bearer ${seed.key}' -H 'Content-Type: application/json' \\`,
    `    -d '${poll}'`,
    '',
  ].join('\n');
}
