import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const chromiumPath = process.env.CHROMIUM_PATH;

// The flags keep Chromium itself from reaching out (updates, sync, QUIC probes), so every request seen is the page's.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Reads or changes one of GraphiQL's CodeMirror editors. */
const editor = {
  query: '.graphiql-query-editor .CodeMirror',
  // The editor tools pane shows either the variables or the headers editor; the other is hidden.
  tool: '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror',
  response: '.result-window .CodeMirror',
};

const editorValue = (page: Page, selector: string) =>
  page.$eval(selector, (element) => (element as unknown as { CodeMirror: { getValue(): string } }).CodeMirror.getValue());

/** Puts the cursor at the first occurrence of `text` (plus `offset`) and focuses the editor, as a click would. */
async function placeCursor(page: Page, selector: string, text: string, offset = 0): Promise<void> {
  await page.$eval(
    selector,
    (element, [target, shift]) => {
      const cm = (element as unknown as { CodeMirror: any }).CodeMirror;
      const index = cm.getValue().indexOf(target);
      if (index < 0) throw new Error(`'${target}' is not in the editor`);
      cm.focus();
      cm.setCursor(cm.posFromIndex(index + shift));
    },
    [text, offset] as [string, number],
  );
}

async function setEditorValue(page: Page, selector: string, value: string): Promise<void> {
  await page.$eval(selector, (element, text) => (element as unknown as { CodeMirror: { setValue(v: string): void } }).CodeMirror.setValue(text), value);
}

/** Runs the operation under the cursor with GraphiQL's shortcut and returns the parsed response once it is shown. */
async function runOperation(page: Page, operation: string, previous: string): Promise<any> {
  await placeCursor(page, editor.query, operation, operation.length + 2);
  await page.keyboard.press('Control+Enter');
  const text = await waitFor(async () => {
    const value = await editorValue(page, editor.response);
    return value && value !== previous ? value : null;
  }, 20_000);
  return JSON.parse(text);
}

describe.skipIf(!chromiumPath && !process.env.CI)('GraphQL explorer in a real browser', () => {
  let gateway: TestGateway;
  let workspace: TestWorkspace;
  let context: BrowserContext;
  let userDataDir: string;
  const requested: string[] = [];
  const failed: string[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!chromiumPath) throw new Error('CHROMIUM_PATH must be set (source .ci/services.sh)');
    gateway = await startGateway();
    workspace = await gateway.workspace('explorer-demo');
    userDataDir = mkdtempSync(join(tmpdir(), 'cgw-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1600, height: 1000 },
    });
    context.on('request', (request) => requested.push(request.url()));
    context.on('requestfailed', (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
  });

  afterAll(async () => {
    await context?.close();
    await gateway?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  it('duplicates a campaign and polls its events, loading nothing from any other host', async () => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${gateway.baseUrl}/graphql`);
    await page.waitForSelector(editor.query);

    // The header editor is open and pre-filled; the key is typed into it.
    expect(await editorValue(page, editor.tool)).toContain('"Authorization": "Bearer "');
    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    expect(await editorValue(page, editor.tool)).toContain(`"Bearer ${workspace.key}"`);

    // The schema docs come from the gateway's introspection.
    await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
    await page.locator('.graphiql-doc-explorer').getByText('Mutation', { exact: true }).click();
    await page.locator('.graphiql-doc-explorer').getByText('duplicateCampaign', { exact: true }).first().waitFor();

    await page.getByRole('button', { name: 'Variables' }).click();
    const variables = JSON.parse(await editorValue(page, editor.tool));
    variables.input.campaignId = workspace.campaign.id;
    await setEditorValue(page, editor.tool, JSON.stringify(variables, null, 2));

    const accepted = await runOperation(page, 'mutation DuplicateCampaign', '');
    expect(accepted.errors).toBeUndefined();
    const job = accepted.data.duplicateCampaign.job;
    expect(job).toMatchObject({ status: 'PENDING', sourceCampaignId: workspace.campaign.id });
    expect(await editorValue(page, editor.response)).toContain(job.id);

    variables.jobId = job.id;
    await setEditorValue(page, editor.tool, JSON.stringify(variables, null, 2));
    let previous = await editorValue(page, editor.response);
    const done = await waitFor(async () => {
      const result = await runOperation(page, 'query PollJob', previous);
      previous = await editorValue(page, editor.response);
      const types = result.data.securityEvents.edges.map((edge: any) => edge.node.type);
      return types.includes('CAMPAIGN_DUPLICATED') ? result : null;
    }, 30_000, 200);
    const succeeded = done.data.securityEvents.edges.find((edge: any) => edge.node.type === 'CAMPAIGN_DUPLICATED').node;
    expect(succeeded.job).toMatchObject({ status: 'SUCCEEDED' });
    expect(succeeded.job.resultCampaignId).toEqual(expect.any(String));

    const screenshot = await page.screenshot();
    expect(screenshot.subarray(1, 4).toString()).toBe('PNG');
    if (process.env.UPDATE_SCREENSHOTS) writeFileSync(new URL('../../docs/explorer.png', import.meta.url), screenshot);

    const origin = new URL(gateway.baseUrl).origin;
    expect(requested.length).toBeGreaterThan(5);
    expect(requested.filter((url) => !url.startsWith('data:') && new URL(url).origin !== origin)).toEqual([]);
    expect(failed).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 120_000);
});
