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

/**
 * First start with an empty store: a `demo` workspace, sample campaigns and tags, and an admin key. In upstream mode
 * no samples: the workspace's campaigns are then the Braze workspace's, which the gateway reads and copies there.
 */
export async function seedDemoWorkspace(store: GatewayStore, admin: AdminService, { upstream = false } = {}): Promise<DemoSeed | null> {
  if (await store.hasWorkspaces()) return null;
  let workspace: Workspace;
  try {
    workspace = await admin.createWorkspace('demo');
  } catch (error) {
    // Several instances started on one empty database at once, and another one is seeding it.
    if (await store.findWorkspace('demo')) return null;
    throw error;
  }
  const campaigns: Campaign[] = [];
  if (!upstream) {
    await store.upsertTags(workspace.id, ['newsletter']);
    for (const sample of SAMPLE_CAMPAIGNS) campaigns.push(await admin.addCampaign(workspace.id, sample));
  }
  const { key } = await admin.createKey({ workspace: workspace.id, name: 'demo admin', permissions: [...PERMISSIONS] });
  return { workspace, key, campaigns };
}

/**
 * The first-start banner: the key, once, and examples that work exactly as printed, but for the ids they say to put
 * in: the job's, and in upstream mode a campaign's of the Braze workspace, which the first example lists.
 */
export function demoBanner(seed: DemoSeed, baseUrl: string, explorer: boolean): string {
  const [sample] = seed.campaigns;
  const campaignId = sample?.id ?? 'CAMPAIGN_ID';
  const name = sample ? sample.name : 'Campaign';
  const restBody = JSON.stringify({ campaign_id: campaignId, name: `${name} (copy)`, ...(sample ? { tag_names: ['newsletter'] } : {}) });
  const mutation = JSON.stringify({
    query: `mutation { duplicateCampaign(input: {campaignId: "${campaignId}", name: "${name} (GraphQL copy)"}) { job { id status } } }`,
  });
  const list = JSON.stringify({ query: '{ campaigns(first: 20) { edges { node { id name } } } }' });
  const poll = JSON.stringify({
    query: 'query($job: ID!) { securityEvents(filter: {jobId: $job}, first: 2) { edges { node { type occurredAt } } } duplicationJob(id: $job) { status resultCampaignId } }',
    variables: { job: 'JOB_ID' },
  });
  return [
    '',
    sample
      ? 'Created workspace "demo" with sample campaigns, and an admin API key with every permission.'
      : 'Created workspace "demo", whose campaigns are those of the Braze workspace of UPSTREAM_API_KEY, and an admin API key with every permission.',
    'This key is shown only once; store it now:',
    '',
    `  ${seed.key}`,
    '',
    ...(sample
      ? []
      : [
          'List the campaigns (Braze\'s, read through the gateway), and put an id of one in place of CAMPAIGN_ID below:',
          '',
          `  curl -sS ${baseUrl}/graphql -H 'Authorization: Bearer ${seed.key}' -H 'Content-Type: application/json' \\`,
          `    -d '${list}'`,
          '',
        ]),
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
    ...(explorer ? ['Or explore the API in a browser, the key after "Bearer " in its Headers editor:', '', `  ${baseUrl}/graphql`, ''] : []),
  ].join('\n');
}
