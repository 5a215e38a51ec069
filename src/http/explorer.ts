import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * The GraphQL explorer: GraphiQL's UMD build and React's, served by the gateway from node_modules, so it works
 * with no internet access. Apollo's own landing page would load its Sandbox from a CDN.
 */

const require = createRequire(import.meta.url);
const packageDir = (name: string): string => dirname(require.resolve(`${name}/package.json`));

interface Asset {
  type: string;
  load: () => Promise<string>;
}

// Source maps are not shipped: drop the comment so browsers do not ask for them.
const fromPackage = (name: string, file: string) => async () =>
  (await readFile(join(packageDir(name), file), 'utf8')).replace(/\n\/[/*]# sourceMappingURL=\S+\s*$/, '\n');

const JS = 'text/javascript; charset=utf-8';
const CSS = 'text/css; charset=utf-8';

/**
 * The page's own style, as a file (the CSP lets in no inline style but GraphiQL's dialogs', by nonce). It fixes what
 * GraphiQL's does not: the editor tools keep room at 200 % zoom, the panes stack on a narrow screen, the focus is
 * visible, and the logo, strings (the warning colour), JSON keys (the info colour) and line numbers reach 4.5:1.
 * GraphiQL's dark theme sets its colours on more specific selectors, so it keeps them.
 */
const PAGE_STYLE = `html, body, #explorer { height: 100%; margin: 0; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
body .graphiql-container { --color-warning: 36, 100%, 30%; --color-info: 208, 100%, 40%; }
.graphiql-container .graphiql-logo, .graphiql-container .graphiql-logo .graphiql-logo-link,
.cm-s-graphiql .CodeMirror-linenumber { color: hsl(var(--color-neutral)); }
.graphiql-container .graphiql-editor-tool { min-height: 7.5em; }
:focus-visible { outline: 3px solid hsl(var(--color-primary, 320, 95%, 43%)) !important; outline-offset: 1px; }
.graphiql-container .CodeMirror-focused { outline: 3px solid hsl(var(--color-primary)); outline-offset: -3px; }
@media (max-width: 600px) {
  .graphiql-container #graphiql-session { flex-direction: column; overflow-y: auto; }
  .graphiql-container #graphiql-session > .graphiql-horizontal-drag-bar { display: none; }
  .graphiql-container .graphiql-editors, .graphiql-container .graphiql-response { flex: 1 0 auto !important; min-height: 18em; }
  .graphiql-container .graphiql-logo { font-size: var(--font-size-body); white-space: nowrap; }
}
`;

/** Starts GraphiQL from the configuration the page carries (no inline script, so the CSP can forbid them). */
const BOOT_SCRIPT = `(function () {
  var config = JSON.parse(document.getElementById('explorer-config').textContent);
  // GraphiQL's dialogs (settings, short keys) lock the page's scroll with a <style> element they add, and name it
  // with this global's nonce: the page's CSP lets in no other inline style.
  window.__webpack_nonce__ = config.styleNonce;

  // GraphiQL's history and favourites keep the headers of every run, API key included, and shouldPersistHeaders
  // covers only the tabs. Nothing GraphiQL stores keeps headers here, nor what an earlier page stored: entries
  // read back carry the page's template instead, so choosing one from an earlier visit asks for the key again.
  var PREFIX = 'graphiql:';
  var WITH_HEADERS = ['graphiql:tabState', 'graphiql:queries', 'graphiql:favorites'];
  var HISTORY = ['graphiql:queries', 'graphiql:favorites'];
  function replaceHeaders(text, headers) {
    try {
      return JSON.stringify(JSON.parse(text), function (key, value) {
        return key === 'headers' ? headers : value;
      });
    } catch (error) {
      return null;
    }
  }
  function storageWithoutHeaders() {
    var local;
    try {
      local = window.localStorage;
      local.removeItem(PREFIX + 'headers');
    } catch (error) {
      return null;
    }
    var ownKeys = function () {
      return Object.keys(local).filter(function (key) {
        return key.indexOf(PREFIX) === 0;
      });
    };
    var storage = {
      getItem: function (key) {
        var value = local.getItem(key);
        return value !== null && HISTORY.indexOf(key) >= 0 ? replaceHeaders(value, config.headers) : value;
      },
      setItem: function (key, value) {
        var kept = key === PREFIX + 'headers' ? null : WITH_HEADERS.indexOf(key) >= 0 ? replaceHeaders(value, null) : value;
        if (kept === null) local.removeItem(key);
        else local.setItem(key, kept);
      },
      removeItem: function (key) {
        local.removeItem(key);
      },
      clear: function () {
        ownKeys().forEach(function (key) {
          local.removeItem(key);
        });
      },
      get length() {
        return ownKeys().length;
      },
    };
    WITH_HEADERS.forEach(function (key) {
      var value = local.getItem(key);
      if (value !== null) storage.setItem(key, value);
    });
    return storage;
  }

  // CodeMirror takes Tab to indent, which traps keyboard users in an editor: there, as in any other field,
  // Tab and Shift-Tab move to the next and previous control.
  var tabMoves = { Tab: false, 'Shift-Tab': false };
  var tabbable = new WeakSet();
  document.addEventListener('focusin', function (event) {
    var wrapper = event.target.closest && event.target.closest('.CodeMirror');
    var editor = wrapper && wrapper.CodeMirror;
    if (!editor || tabbable.has(editor)) return;
    editor.addKeyMap(tabMoves);
    tabbable.add(editor);
  });

  // The editors' textareas carry no name of their own: screen readers would announce four unnamed text fields.
  var EDITOR_NAMES = [
    ['.graphiql-query-editor .CodeMirror textarea', 'Query'],
    ['.graphiql-editor-tool .graphiql-editor:nth-child(1) .CodeMirror textarea', 'Variables'],
    ['.graphiql-editor-tool .graphiql-editor:nth-child(2) .CodeMirror textarea', 'Headers'],
    ['.result-window .CodeMirror textarea', 'Result'],
  ];
  var explorer = document.getElementById('explorer');
  function nameEditors() {
    EDITOR_NAMES.forEach(function (entry) {
      var textarea = explorer.querySelector(entry[0]);
      if (textarea && textarea.getAttribute('aria-label') !== entry[1]) textarea.setAttribute('aria-label', entry[1]);
    });
  }
  new MutationObserver(nameEditors).observe(explorer, { childList: true, subtree: true });

  // A result appears in an editor with no announcement: the live region says it arrived. A gateway that does not
  // answer makes fetch reject with a bare "Failed to fetch", which GraphiQL shows with its stack: say what it means.
  var status = document.getElementById('explorer-status');
  function announce(text) {
    status.textContent = status.textContent === text ? text + '\u00a0' : text;
  }
  // One leading slash: a path served as //graphql would be a URL of the host "graphql".
  var fetchFromGateway = GraphiQL.createFetcher({ url: window.location.pathname.replace(/^[/]+/, '/') });
  // The Headers editor's template, "Bearer " with nothing after it, holds no key: sent, it would be refused as an
  // invalid key and counted against this address as a failed authentication. The schema loads without one, and an
  // operation is answered here, saying where the key goes.
  var NO_KEY = 'No API key: put yours in the Headers editor, after \\u201cBearer \\u201d, then run the operation again.';
  function withoutBlankKey(headers) {
    var kept = {};
    var blank = false;
    Object.keys(headers || {}).forEach(function (name) {
      if (name.toLowerCase() === 'authorization' && /^\\s*(bearer\\s*)?$/i.test(String(headers[name]))) blank = true;
      else kept[name] = headers[name];
    });
    return blank ? kept : null;
  }
  function fetcher(params, options) {
    // GraphiQL's own schema request is no answer the user asked for.
    var asked = params.operationName !== 'IntrospectionQuery';
    var keyless = withoutBlankKey(options && options.headers);
    if (keyless && asked) {
      announce(NO_KEY);
      return Promise.resolve({ errors: [{ message: NO_KEY }] });
    }
    if (keyless) options = Object.assign({}, options, { headers: keyless });
    function answered(result) {
      if (asked) announce(result && result.errors ? 'The gateway answered with an error.' : 'The gateway answered.');
      return result;
    }
    function unanswered(error) {
      // fetch rejects with a TypeError only when no response came.
      if (!(error instanceof TypeError)) throw error;
      var message = 'The gateway at ' + window.location.origin + ' did not answer: is it running and reachable?';
      if (asked) announce(message);
      return { errors: [{ message: message }] };
    }
    return Promise.resolve()
      .then(function () {
        return fetchFromGateway(params, options);
      })
      .then(function (result) {
        // GraphiQL's fetcher answers with an iterator (it reads multipart answers too): its first step fetches.
        if (!result || typeof result[Symbol.asyncIterator] !== 'function') return answered(result);
        var steps = result[Symbol.asyncIterator]();
        var failed = false;
        var wrapped = {
          next: function () {
            if (failed) return Promise.resolve({ done: true, value: undefined });
            return steps.next().then(
              function (step) {
                if (!step.done) answered(step.value);
                return step;
              },
              function (error) {
                failed = true;
                return { done: false, value: unanswered(error) };
              },
            );
          },
          return: function (value) {
            return steps.return ? steps.return(value) : Promise.resolve({ done: true, value: value });
          },
        };
        wrapped[Symbol.asyncIterator] = function () {
          return wrapped;
        };
        return wrapped;
      }, unanswered);
  }

  // GraphiQL 4 leaves the variables editor empty on a first visit even when the default tab has variables.
  var storedVariables = null;
  try {
    storedVariables = window.localStorage.getItem('graphiql:variables');
  } catch (error) {}
  var root = ReactDOM.createRoot(explorer);
  root.render(
    React.createElement(
      GraphiQL,
      {
        fetcher: fetcher,
        storage: storageWithoutHeaders(),
        defaultTabs: [{ query: config.query, variables: config.variables, headers: config.headers }],
        variables: storedVariables === null ? config.variables : undefined,
        defaultHeaders: config.headers,
        defaultEditorToolsVisibility: 'headers',
        shouldPersistHeaders: false,
        isHeadersEditorEnabled: true,
      },
      React.createElement(GraphiQL.Logo, null, 'campaign-gateway'),
    ),
  );
})();
`;

const ASSETS: Record<string, Asset> = {
  'react.js': { type: JS, load: fromPackage('react', 'umd/react.production.min.js') },
  'react-dom.js': { type: JS, load: fromPackage('react-dom', 'umd/react-dom.production.min.js') },
  'graphiql.js': { type: JS, load: fromPackage('graphiql', 'dist/index.umd.js') },
  'graphiql.css': { type: CSS, load: fromPackage('graphiql', 'dist/style.css') },
  'explorer.css': { type: CSS, load: async () => PAGE_STYLE },
  'explorer.js': { type: JS, load: async () => BOOT_SCRIPT },
};

interface LoadedAsset {
  type: string;
  body: Buffer;
  /** Of the content: the page names each file with it, so any change, the gateway's own scripts included, is a new URL. */
  version: string;
  gzip: () => Buffer;
}

const contentVersion = (body: Buffer): string => createHash('sha256').update(body).digest('hex').slice(0, 20);

// Read and hashed once per process, when the first server with the explorer starts; compressed on first use.
let loading: Promise<Map<string, LoadedAsset>> | undefined;
/** Each loaded file's version, for the page to name it by: made once, with the files. */
let loadedVersions: ReadonlyMap<string, string> | undefined;
function loadAssets(): Promise<Map<string, LoadedAsset>> {
  loading ??= Promise.all(
    Object.entries(ASSETS).map(async ([name, asset]): Promise<[string, LoadedAsset]> => {
      const body = Buffer.from(await asset.load());
      let gzip: Buffer | undefined;
      return [name, { type: asset.type, body, version: contentVersion(body), gzip: () => (gzip ??= gzipSync(body)) }];
    }),
  ).then(
    (entries) => {
      loadedVersions = new Map(entries.map(([name, { version }]) => [name, version]));
      return new Map(entries);
    },
    (error: unknown) => {
      loading = undefined;
      throw error;
    },
  );
  return loading;
}

const EXAMPLE_OPERATIONS = `# Duplicate a campaign, then poll its job.
#
# 1. Headers: your API key after "Bearer ".
# 2. Run ListCampaigns; copy an id into
#    Variables: input.campaignId.
# 3. Run DuplicateCampaign (PENDING at once);
#    copy job.id into Variables: jobId.
# 4. Run PollJob until job.status is
#    SUCCEEDED or FAILED.
#
# Ctrl-Enter runs the operation at the cursor.
# Tab moves to the next editor or button.
# Docs: the book icon, top left.

query ListCampaigns {
  campaigns(first: 20) {
    edges {
      node {
        id
        name
        tagNames
      }
    }
  }
}

mutation DuplicateCampaign($input: DuplicateCampaignInput!) {
  duplicateCampaign(input: $input) {
    job {
      id
      status
      sourceCampaignId
      name
      createdAt
    }
  }
}

# A job has two events at most: its request and its
# outcome. A read costs the page it asks for.
query PollJob($jobId: ID!) {
  securityEvents(filter: { jobId: $jobId }, first: 2) {
    edges {
      node {
        type
        occurredAt
        channel
        details
        job {
          status
          resultCampaignId
          error {
            code
            message
          }
        }
      }
    }
  }
}
`;

export const EXAMPLE_VARIABLES = JSON.stringify(
  // No job id yet: null is refused by name ("$jobId" must not be null), where an id of no job lists no events.
  { input: { campaignId: 'PUT-A-CAMPAIGN-ID-HERE', name: 'Copy made in the explorer' }, jobId: null },
  null,
  2,
);

export const DEFAULT_HEADERS = JSON.stringify({ Authorization: 'Bearer ' }, null, 2);

/**
 * Everything the page loads comes from the gateway itself; the browser enforces it too. The one inline style let
 * in is the <style> element GraphiQL's dialogs add to lock the page's scroll, which carries the page's nonce.
 */
const contentSecurityPolicy = (styleNonce: string): string =>
  [
    "default-src 'self'",
    "script-src 'self'",
    `style-src 'self' 'nonce-${styleNonce}'`,
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');

// JSON inside <script> must not be able to close the element.
const scriptSafeJson = (value: unknown): string => JSON.stringify(value).replace(/</g, '\\u003c');

/**
 * The page, its assets named relative to where it is served: the router also serves it at `/graphql/`, whose
 * relative URLs resolve one level further down, so each trailing slash takes a `../`. `versions` holds each
 * asset's content version; `styleNonce` is the one the page's Content-Security-Policy names.
 */
export function explorerPage(path: string, versions: ReadonlyMap<string, string>, styleNonce: string): string {
  const up = '../'.repeat(path.length - path.replace(/\/+$/, '').length);
  const asset = (name: string) => `${up}explorer/assets/${name}?v=${versions.get(name)}`;
  const config = { query: EXAMPLE_OPERATIONS, variables: EXAMPLE_VARIABLES, headers: DEFAULT_HEADERS, styleNonce };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>campaign-gateway · GraphQL explorer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${asset('graphiql.css')}">
<link rel="stylesheet" href="${asset('explorer.css')}">
</head>
<body>
<div id="explorer">Loading the GraphQL explorer…</div>
<div id="explorer-status" class="visually-hidden" role="status" aria-live="polite"></div>
<script id="explorer-config" type="application/json">${scriptSafeJson(config)}</script>
<script src="${asset('react.js')}"></script>
<script src="${asset('react-dom.js')}"></script>
<script src="${asset('graphiql.js')}"></script>
<script src="${asset('explorer.js')}"></script>
</body>
</html>
`;
}

/**
 * What a GraphQL client's GET carries (GraphQL over HTTP), and a browser navigating to the page does not: an
 * automatic persisted query sends `extensions` (the hash) with no `query`. Any of them marks a client, which
 * gets the API, so one that forgot the query is told what is missing rather than handed the page.
 */
const GRAPHQL_PARAMETERS = ['query', 'extensions', 'operationName', 'variables'];

/**
 * A browser navigating to the endpoint, as opposed to a GraphQL client: a GET (or its HEAD) that accepts HTML and
 * carries no GraphQL parameter. A GET with one is a GraphQL client's, whatever else it accepts.
 */
export function wantsExplorer(request: FastifyRequest): boolean {
  if ((request.method !== 'GET' && request.method !== 'HEAD') || GRAPHQL_PARAMETERS.some((name) => Object.hasOwn(request.query as object, name))) return false;
  const accept = request.headers.accept ?? '';
  return accept.split(',').some((type) => type.trim().toLowerCase().startsWith('text/html'));
}

export function sendExplorer(reply: FastifyReply): FastifyReply {
  // A new one for every page: a nonce that never changes would let in any <style> that carries it.
  const styleNonce = randomBytes(16).toString('base64');
  return reply
    .type('text/html; charset=utf-8')
    .header('content-security-policy', contentSecurityPolicy(styleNonce))
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY')
    .header('cache-control', 'no-cache')
    .send(explorerPage(reply.request.url.split('?')[0], assetVersions(), styleNonce));
}

/** A browser on /graphql of a server whose explorer is off: better than the CSRF refusal a GET would get. */
export function sendExplorerOff(reply: FastifyReply): FastifyReply {
  return reply
    .status(404)
    .type('text/plain; charset=utf-8')
    .header('x-content-type-options', 'nosniff')
    .send('The GraphQL explorer is not enabled on this server. GraphQL clients send their operations to this URL with POST.\n');
}

function assetVersions(): ReadonlyMap<string, string> {
  // Loaded by explorerAssetRoutes, which a server with the explorer registers before it listens.
  if (!loadedVersions) throw new Error('the explorer is served without its assets: register explorerAssetRoutes');
  return loadedVersions;
}

/** The explorer's static files. Registered only when the explorer is enabled. */
export async function explorerAssetRoutes(app: FastifyInstance): Promise<void> {
  const assets = await loadAssets();
  app.get<{ Params: { file: string }; Querystring: { v?: string } }>('/explorer/assets/:file', { schema: { hide: true } }, async (request, reply) => {
    const asset = assets.get(request.params.file);
    // The answer every unknown URL gets, from the error table.
    if (!asset) return reply.callNotFound();
    const acceptsGzip = /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''));
    reply
      .type(asset.type)
      .header('x-content-type-options', 'nosniff')
      // A URL naming this content never changes; any other (an old page's, none) is checked on every use.
      .header('cache-control', request.query.v === asset.version ? 'public, max-age=31536000, immutable' : 'no-cache')
      .header('vary', 'accept-encoding');
    if (acceptsGzip) reply.header('content-encoding', 'gzip');
    return reply.send(acceptsGzip ? asset.gzip() : asset.body);
  });
}
