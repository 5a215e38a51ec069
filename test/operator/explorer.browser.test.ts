import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_HEADERS } from '../../src/http/explorer.js';
import { http, metricSample, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

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

/** What one page loaded and raised. */
interface PageLog {
  requested: string[];
  failed: string[];
  errors: string[];
}

/** Every value the page's origin keeps in localStorage and sessionStorage, by key (the tests compile without the DOM's types). */
const storedValues = (page: Page): Promise<[string, string][]> =>
  page.evaluate(() => {
    const { localStorage, sessionStorage } = globalThis as any;
    return [localStorage, sessionStorage].flatMap((storage) => Object.keys(storage).map((key): [string, string] => [key, storage.getItem(key) ?? '']));
  });

/**
 * The contrast ratio (WCAG 2) between an element's colour property and what is behind it: its nearest ancestor
 * with a background, translucent colours blended over what is behind them.
 */
const contrastOf = (page: Page, selector: string, property: 'color' | 'outline-color'): Promise<number> =>
  page.$eval(
    selector,
    (element, colourProperty) => {
      const { getComputedStyle } = globalThis as any;
      const parse = (value: string): number[] => {
        const [r, g, b, a = 1] = (value.match(/[\d.]+/g) ?? []).map(Number);
        return [r, g, b, a];
      };
      const over = ([r, g, b, a]: number[], [br, bg, bb]: number[]): number[] => [r * a + br * (1 - a), g * a + bg * (1 - a), b * a + bb * (1 - a), 1];
      const layers: number[][] = [];
      for (let node: any = element; node; node = node.parentElement) {
        const background = parse(getComputedStyle(node).backgroundColor);
        if (background[3] > 0) layers.push(background);
      }
      const behind = layers.reduceRight((below, layer) => over(layer, below), [255, 255, 255, 1]);
      const front = over(parse(getComputedStyle(element).getPropertyValue(colourProperty)), behind);
      const luminance = (rgb: number[]) =>
        rgb
          .slice(0, 3)
          .map((channel) => channel / 255)
          .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4))
          .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
      const [light, dark] = [luminance(front), luminance(behind)].sort((a, b) => b - a);
      return (light + 0.05) / (dark + 0.05);
    },
    property,
  );

/** Where an element is, as the page lays it out. */
const boxOf = (page: Page, selector: string) =>
  page.$eval(selector, (element: any) => {
    const { x, y, width, height } = element.getBoundingClientRect();
    return { x, y, width, height, overflows: element.scrollWidth > element.clientWidth || element.scrollHeight > element.clientHeight };
  });

describe.skipIf(!chromiumPath && !process.env.CI)('GraphQL explorer in a real browser', () => {
  let gateway: TestGateway;
  let workspace: TestWorkspace;
  let browser: Browser;

  beforeAll(async () => {
    if (!chromiumPath) throw new Error('CHROMIUM_PATH must be set (source .ci/services.sh)');
    gateway = await startGateway();
    workspace = await gateway.workspace('explorer-demo');
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    await gateway?.close();
  });

  /** The explorer in a browser profile of its own, as on a first visit. */
  async function openExplorer(path = '/graphql', viewport = { width: 1600, height: 1000 }, baseUrl = gateway.baseUrl): Promise<{ page: Page; log: PageLog }> {
    const context = await browser.newContext({ viewport });
    const log: PageLog = { requested: [], failed: [], errors: [] };
    context.on('request', (request) => log.requested.push(request.url()));
    context.on('requestfailed', (request) => log.failed.push(`${request.url()}: ${request.failure()?.errorText}`));
    const page = await context.newPage();
    page.on('pageerror', (error) => log.errors.push(error.message));
    // What the Content-Security-Policy refused (an inline style, a script) is said on the console only.
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) log.errors.push(message.text());
    });
    await page.goto(`${baseUrl}${path}`);
    await page.waitForSelector(editor.query);
    return { page, log };
  }

  function expectOnlyOwnRequests(log: PageLog): void {
    const origin = new URL(gateway.baseUrl).origin;
    expect(log.requested.length).toBeGreaterThan(5);
    expect(log.requested.filter((url) => !url.startsWith('data:') && new URL(url).origin !== origin)).toEqual([]);
    expect(log.failed).toEqual([]);
    expect(log.errors).toEqual([]);
  }

  it('duplicates a campaign and polls its events, loading nothing from any other host', async () => {
    const { page, log } = await openExplorer();

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

    // The picture in README shows the guide at the top of the operations, where polling left the cursor below.
    await page.$eval(editor.query, (element) => (element as unknown as { CodeMirror: { scrollTo(x: number, y: number): void } }).CodeMirror.scrollTo(0, 0));
    const screenshot = await page.screenshot();
    expect(screenshot.subarray(1, 4).toString()).toBe('PNG');
    if (process.env.UPDATE_SCREENSHOTS) writeFileSync(new URL('../../docs/explorer.png', import.meta.url), screenshot);

    // GraphiQL's requests (Accept: application/json, multipart/mixed) are answered without Apollo's pipeline
    // once Apollo has accepted their operation, as PollJob was.
    const prepared = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_graphql_requests_total', { path: 'prepared' }) ?? 0;
    const before = await prepared();
    await setEditorValue(page, editor.response, '');
    expect((await runOperation(page, 'query PollJob', '')).data).toEqual(done.data);
    expect(await prepared()).toBeGreaterThan(before);
    expectOnlyOwnRequests(log);
  }, 120_000);

  // A base URL ending in a slash makes //graphql, which a page must not read as the host "graphql".
  it.each(['//graphql', '/graphql/'])('runs operations against this gateway when opened at %s', async (path) => {
    const { page, log } = await openExplorer(path);
    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    await page.getByRole('button', { name: 'Variables' }).click();
    const variables = JSON.parse(await editorValue(page, editor.tool));
    await setEditorValue(page, editor.tool, JSON.stringify({ ...variables, jobId: randomUUID() }, null, 2));
    const polled = await runOperation(page, 'query PollJob', '');
    expect(polled.errors).toBeUndefined();
    expect(polled.data.securityEvents.edges).toEqual([]);
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('is usable with the keyboard alone: Tab leaves every editor, so a key can be put in the Headers editor', async () => {
    const { page, log } = await openExplorer();
    /** Which of the editors has the focus, if one has. */
    const focused = () =>
      page.evaluate((selectors) => {
        const { document } = globalThis as any;
        const wrapper = document.activeElement?.closest('.CodeMirror');
        return Object.entries(selectors).find(([, selector]) => wrapper && wrapper === document.querySelector(selector))?.[0] ?? null;
      }, editor);
    const pressUntilIn = async (key: string, target: keyof typeof editor) => {
      for (let presses = 0; presses < 40; presses += 1) {
        await page.keyboard.press(key);
        if ((await focused()) === target) return;
      }
      throw new Error(`${key} never reached the ${target} editor`);
    };

    const query = await editorValue(page, editor.query);
    await pressUntilIn('Tab', 'query');
    // On through Execute and the editor tools' buttons to the Headers editor, which is open.
    await pressUntilIn('Tab', 'tool');
    expect(await editorValue(page, editor.query)).toBe(query);
    expect(await editorValue(page, editor.tool)).toBe(DEFAULT_HEADERS);
    // The key goes after "Bearer ", before the closing quote.
    for (const key of ['Control+Home', 'ArrowDown', 'End', 'ArrowLeft']) await page.keyboard.press(key);
    await page.keyboard.type(workspace.key);
    expect(JSON.parse(await editorValue(page, editor.tool))).toEqual({ Authorization: `Bearer ${workspace.key}` });

    // Ctrl-Enter outside the query editor runs its first operation: ListCampaigns, as the guide's step 2 says.
    await page.keyboard.press('Control+Enter');
    const answer = JSON.parse(await waitFor(async () => (await editorValue(page, editor.response)) || null, 20_000));
    expect(answer.errors).toBeUndefined();
    expect(answer.data.campaigns.edges.map((edge: any) => edge.node.id)).toContain(workspace.campaign.id);

    await pressUntilIn('Tab', 'response');
    await page.keyboard.press('Shift+Tab');
    expect(await focused()).not.toBe('response');
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('keeps no headers in the browser\'s storage: not in history or favourites, not across a reload', async () => {
    const { page, log } = await openExplorer();
    const holdingKey = async () => (await storedValues(page)).filter(([, value]) => value.includes(workspace.key)).map(([key]) => key);
    const history = async () => JSON.parse((await storedValues(page)).find(([key]) => key === 'graphiql:queries')?.[1] ?? '{"queries":[]}').queries;
    const showHistory = async () => {
      const button = page.getByRole('button', { name: 'Show History' });
      if (await button.isVisible()) await button.click();
      await page.locator('.graphiql-history-items').first().waitFor();
    };

    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    const listed = await runOperation(page, 'query ListCampaigns', '');
    expect(listed.errors).toBeUndefined();
    expect((await history()).length).toBeGreaterThan(0);
    expect(await holdingKey()).toEqual([]);

    await showHistory();
    await page.locator('.graphiql-history-item').first().hover();
    await page.getByRole('button', { name: 'Add favorite' }).first().click();
    await waitFor(async () => (await storedValues(page)).some(([key]) => key === 'graphiql:favorites') || null);
    expect(await holdingKey()).toEqual([]);

    // A page before this one stored the headers of each run: loading the page takes them out.
    await page.evaluate((key) => {
      const { localStorage } = globalThis as any;
      const stored = JSON.parse(localStorage.getItem('graphiql:queries'));
      stored.queries.push({ query: '{ __typename }', variables: '{}', headers: JSON.stringify({ Authorization: `Bearer ${key}` }), operationName: null });
      localStorage.setItem('graphiql:queries', JSON.stringify(stored));
    }, workspace.key);
    await page.reload();
    await page.waitForSelector(editor.query);
    expect(await holdingKey()).toEqual([]);
    expect((await history()).map((entry: any) => entry.query)).toContain('{ __typename }');

    // An entry from the earlier visit brings its operation back, and the headers template, not the key.
    await showHistory();
    await page.locator('.graphiql-history-item-label', { hasText: 'ListCampaigns' }).first().click();
    await page.getByRole('button', { name: 'Headers', exact: true }).click();
    expect(await editorValue(page, editor.tool)).toBe(DEFAULT_HEADERS);

    // Run again with the key: a new history entry, stored without it.
    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    const before = (await history()).length;
    await runOperation(page, 'query ListCampaigns', await editorValue(page, editor.response));
    await waitFor(async () => ((await history()).length > before ? true : null));
    expect(await holdingKey()).toEqual([]);
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('keeps the Headers editor usable at 200 % zoom, and the result readable and the logo whole on a phone', async () => {
    // 200 % zoom of a 1280×720 window: the Headers editor holds its three lines, and the key can be typed in.
    const { page: zoomed, log } = await openExplorer('/graphql', { width: 640, height: 360 });
    const lineHeight = await zoomed.$eval(`${editor.tool} .CodeMirror-line`, (line: any) => line.getBoundingClientRect().height);
    await zoomed.locator(editor.tool).scrollIntoViewIfNeeded();
    const headers = await boxOf(zoomed, editor.tool);
    expect(headers.height).toBeGreaterThanOrEqual(3 * lineHeight);
    // All of it can be brought into the window.
    expect(headers.y).toBeGreaterThanOrEqual(0);
    expect(headers.y + headers.height).toBeLessThanOrEqual(360);
    await placeCursor(zoomed, editor.tool, 'Bearer ', 'Bearer '.length);
    await zoomed.keyboard.type(workspace.key);
    expect(JSON.parse(await editorValue(zoomed, editor.tool))).toEqual({ Authorization: `Bearer ${workspace.key}` });
    expectOnlyOwnRequests(log);

    for (const viewport of [{ width: 375, height: 667 }, { width: 320, height: 568 }]) {
      const { page } = await openExplorer('/graphql', viewport);
      // Stacked under the editors, the result takes the width they have.
      const [editors, result] = [await boxOf(page, '.graphiql-editors'), await boxOf(page, editor.response)];
      expect({ viewport, width: result.width }).toEqual({ viewport, width: editors.width });
      expect(result.y).toBeGreaterThanOrEqual(editors.y + editors.height);
      const [logo, header] = [await boxOf(page, '.graphiql-logo'), await boxOf(page, '.graphiql-session-header')];
      expect({ viewport, overflows: logo.overflows }).toEqual({ viewport, overflows: false });
      expect(logo.x + logo.width).toBeLessThanOrEqual(viewport.width);
      expect(logo.y).toBeGreaterThanOrEqual(header.y);
      expect(logo.y + logo.height).toBeLessThanOrEqual(header.y + header.height);
      await page.context().close();
    }
    await zoomed.context().close();
  }, 60_000);

  it('shows where the focus is, and draws its text at 4.5:1 or more', async () => {
    const { page, log } = await openExplorer();
    // The first control Tab reaches is a button of the sidebar.
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => (globalThis as any).document.activeElement.tagName)).toBe('BUTTON');
    const ring = (selector: string) => page.$eval(selector, (element: any) => parseFloat((globalThis as any).getComputedStyle(element).outlineWidth));
    expect(await ring(':focus')).toBeGreaterThanOrEqual(2);
    expect(await contrastOf(page, ':focus', 'outline-color')).toBeGreaterThanOrEqual(3);
    await placeCursor(page, editor.query, 'query ListCampaigns');
    expect(await ring('.CodeMirror-focused')).toBeGreaterThanOrEqual(2);
    expect(await contrastOf(page, '.CodeMirror-focused', 'outline-color')).toBeGreaterThanOrEqual(3);

    for (const selector of ['.graphiql-logo', `${editor.tool} .cm-string:not(.cm-property)`, `${editor.tool} .cm-property`, `${editor.query} .CodeMirror-linenumber`]) {
      expect({ selector, ratio: await contrastOf(page, selector, 'color') }).toEqual({ selector, ratio: expect.toSatisfy((ratio: number) => ratio >= 4.5) });
    }
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('names each editor for a screen reader and says when an answer arrived', async () => {
    const { page, log } = await openExplorer();
    const named = async () => {
      const names = ['Query', 'Variables', 'Headers', 'Result'];
      return Object.fromEntries(await Promise.all(names.map(async (name) => [name, await page.getByRole('textbox', { name, exact: true }).count()])));
    };
    // The editor tools show the headers, the variables being hidden until their tab is chosen.
    expect(await named()).toEqual({ Query: 1, Variables: 0, Headers: 1, Result: 1 });
    await page.getByRole('button', { name: 'Variables' }).click();
    expect(await named()).toEqual({ Query: 1, Variables: 1, Headers: 0, Result: 1 });
    await page.getByRole('button', { name: 'Headers', exact: true }).click();
    const status = page.getByRole('status');
    expect(await status.getAttribute('aria-live')).toBe('polite');

    // The example variables have no job id yet: PollJob says so, where an empty list would look like no events.
    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    const polled = await runOperation(page, 'query PollJob', '');
    expect(polled.data).toBeUndefined();
    expect(polled.errors.map((error: { message: string }) => error.message)).toEqual([expect.stringContaining('"$jobId"')]);
    await waitFor(async () => ((await status.textContent()) === 'The gateway answered with an error.' ? true : null));
    await runOperation(page, 'query ListCampaigns', await editorValue(page, editor.response));
    await waitFor(async () => ((await status.textContent()) === 'The gateway answered.' ? true : null));
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('answers an operation run before a key is in the Headers editor itself, and loads the schema without one', async () => {
    const { page, log } = await openExplorer();
    // The schema loaded (without a key) before the requests are watched.
    await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
    await page.locator('.graphiql-doc-explorer').getByText('Mutation', { exact: true }).waitFor();
    const sent: { operation: string; authorization?: string; status: number }[] = [];
    page.on('response', (response) => {
      const request = response.request();
      if (request.method() === 'POST') sent.push({ operation: request.postDataJSON().operationName, authorization: request.headers().authorization, status: response.status() });
    });
    expect(await editorValue(page, editor.tool)).toBe(DEFAULT_HEADERS);

    // Sent, the template's bare "Bearer" would be refused as an invalid key, and counted against the address.
    const message = 'No API key: put yours in the Headers editor, after \u201cBearer \u201d, then run the operation again.';
    expect(await runOperation(page, 'query ListCampaigns', '')).toEqual({ errors: [{ message }] });
    expect(await page.getByRole('status').textContent()).toBe(message);
    // The schema's request is sent without the template, and answered.
    const refetched = page.waitForResponse((response) => response.request().method() === 'POST');
    await page.getByRole('button', { name: 'Re-fetch GraphQL schema' }).click();
    await refetched;
    expect(sent).toEqual([{ operation: 'IntrospectionQuery', status: 200 }]);

    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    const listed = await runOperation(page, 'query ListCampaigns', await editorValue(page, editor.response));
    expect(listed.errors).toBeUndefined();
    expect(sent.at(-1)).toEqual({ operation: 'ListCampaigns', authorization: `Bearer ${workspace.key}`, status: 200 });
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('opens its dialogs within the Content-Security-Policy, their scroll lock applied', async () => {
    const { page, log } = await openExplorer();
    const scrollLocked = () => page.evaluate(() => (globalThis as any).getComputedStyle((globalThis as any).document.body).overflow === 'hidden');
    expect(await scrollLocked()).toBe(false);
    for (const name of ['Open settings dialog', 'Open short keys dialog']) {
      await page.getByRole('button', { name }).click();
      await page.getByRole('dialog').waitFor();
      // The lock is a <style> element GraphiQL's dialogs add: refused, the console says so and the page scrolls on.
      expect({ name, locked: await scrollLocked() }).toEqual({ name, locked: true });
      await page.keyboard.press('Escape');
      await page.getByRole('dialog').waitFor({ state: 'detached' });
    }
    expectOnlyOwnRequests(log);
  }, 60_000);

  it('says the gateway did not answer when it is gone, without a stack', async () => {
    const stopped = await startGateway();
    const { page } = await openExplorer('/graphql', undefined, stopped.baseUrl);
    await stopped.close();
    // A key, so that the operation is sent (any key: nothing answers).
    await placeCursor(page, editor.tool, 'Bearer ', 'Bearer '.length);
    await page.keyboard.type(workspace.key);
    const answer = await runOperation(page, 'query ListCampaigns', '');
    expect(answer).toEqual({ errors: [{ message: `The gateway at ${new URL(stopped.baseUrl).origin} did not answer: is it running and reachable?` }] });
    expect(await page.getByRole('status').textContent()).toBe(answer.errors[0].message);
  }, 60_000);
});
