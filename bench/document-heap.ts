import { parse, TokenKind, type DocumentNode } from 'graphql';
import { entryBytes } from '../src/graphql/document-cache.js';

/**
 * The heap a parsed document holds, per shape of document, against the estimate the document caches account
 * for it (src/graphql/document-cache.ts): `node --expose-gc --import tsx bench/document-heap.ts`. Each shape is
 * parsed as Apollo parses (with locations, up to its 2,000-token limit; comments are not counted there) 300
 * times with distinct texts; the heap retained after a full GC, over the count, is the measured size.
 */
const COUNT = 300;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

const heapUsed = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

const SHAPES: Record<string, (id: number) => string> = {
  'bare fields': (id) => `query Q${id} { ${'__typename '.repeat(1990)}}`,
  'one-letter fields': (id) => `query Q${id} {${' a'.repeat(1990)}}`,
  'fragment spreads': (id) => `query Q${id} { ${'...F '.repeat(990)}} fragment F on Query { __typename }`,
  aliases: (id) => `query Q${id} { ${Array.from({ length: 660 }, (_, index) => `a${index}: __typename`).join(' ')} }`,
  'nested selections': (id) => `query Q${id} ${'{a'.repeat(995)}${'}'.repeat(995)}`,
  'selection sets': (id) => `query Q${id} { ${'a{b} '.repeat(495)}}`,
  'inline fragments': (id) => `query Q${id} { ${'...on Query{a} '.repeat(330)}}`,
  arguments: (id) => `query Q${id} { ${'a(b:1) '.repeat(330)}}`,
  'variable arguments': (id) => `query Q${id} { ${'a(b: $c) '.repeat(400)}}`,
  directives: (id) => `query Q${id} { ${'a @skip(if: false) '.repeat(280)}}`,
  'variable definitions': (id) => `query Q${id}(${Array.from({ length: 490 }, (_, index) => `$v${index}: Int`).join(' ')}) { a }`,
  'list types': (id) => `query Q${id}($v: ${'['.repeat(995)}Int${']'.repeat(995)}) { a }`,
  'nested lists': (id) => `query Q${id} { a(b: ${'['.repeat(995)}${']'.repeat(995)}) }`,
  'nested objects': (id) => `query Q${id} { a(b: ${'{a:'.repeat(660)}1${'}'.repeat(660)}) }`,
  'list of ints': (id) => `query Q${id} { a(b: [${'1 '.repeat(1990)}]) }`,
  'list of enums': (id) => `query Q${id} { a(b: [${'A '.repeat(1990)}]) }`,
  comments: (id) => `query Q${id} { a }${'\n#'.repeat(30000)}`,
  'long string': (id) => `query Q${id} { a(b: "${'x'.repeat(60000)}") }`,
  'long block string': (id) => `query Q${id} { a(b: """${'x\n'.repeat(30000)}""") }`,
  'long two-byte string': (id) => `query Q${id} { a(b: "${'ж'.repeat(30000)}") }`,
  duplicateCampaign: (id) =>
    `mutation Duplicate${id}($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id status name tagNames channel } } }`,
};

const tokensOf = (document: DocumentNode) => {
  let tokens = 0;
  for (let token = document.loc?.startToken ?? null; token !== null; token = token.next) if (token.kind !== TokenKind.COMMENT) tokens += 1;
  return tokens;
};

console.log('shape                  tokens  chars   measured  estimate  estimate÷measured  bytes a token (less the text)');
let lowest = Number.POSITIVE_INFINITY;
for (const [name, text] of Object.entries(SHAPES)) {
  const texts = Array.from({ length: COUNT }, (_, id) => text(id));
  const before = heapUsed();
  const documents = texts.map((query) => parse(query));
  texts.length = 0;
  const measured = (heapUsed() - before) / COUNT;
  const [document] = documents;
  const chars = document.loc!.source.body.length;
  const tokens = tokensOf(document);
  const estimate = entryBytes('', document);
  lowest = Math.min(lowest, estimate / measured);
  console.log(
    `${name.padEnd(22)} ${String(tokens).padStart(6)} ${String(chars).padStart(6)} ${Math.round(measured).toString().padStart(10)} ${String(estimate).padStart(9)} ${(estimate / measured).toFixed(2).padStart(18)}  ${tokens > 100 ? ((measured - chars) / tokens).toFixed(0) : ''}`,
  );
  documents.length = 0;
}
console.log(`lowest estimate÷measured: ${lowest.toFixed(2)} (below 1 would be a shape the caches undercount)`);
