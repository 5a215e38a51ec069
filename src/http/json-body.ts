import type { FastifyInstance } from 'fastify';
import { GatewayError } from '../domain/errors.js';

/** Fatal: a byte sequence that is not UTF-8 is refused, not turned into U+FFFD and accepted as other text. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The charset parameter of a Content-Type header, unquoted, or undefined when there is none. */
function charsetOf(contentType: string | undefined): string | undefined {
  const match = /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType ?? '');
  return match ? (match[1] ?? match[2]) : undefined;
}

/** Whether a charset label names UTF-8 (WHATWG labels: utf-8, utf8, unicode-1-1-utf-8…), case-insensitively. */
function isUtf8(label: string): boolean {
  if (label.toLowerCase() === 'utf-8') return true;
  try {
    return new TextDecoder(label).encoding === 'utf-8';
  } catch {
    return false;
  }
}

/** The content codings of a Content-Encoding header the gateway does not decode: every one but identity. */
const unsupportedCodings = (header: string): string[] =>
  header
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');

/**
 * JSON request bodies, for REST and GraphQL alike, refused before any handler runs (so before any quota
 * point) when the gateway would otherwise read them as something they are not: a content coding it does not
 * decode (RFC 9110 §8.4.1, 415), a charset other than UTF-8 (415), bytes that are not UTF-8 (400). A
 * `__proto__` key, or a `constructor` holding a `prototype`, is dropped rather than refusing a valid JSON
 * body: neither is ever a field of a request, and dropped they cannot reach any object's prototype.
 */
export function jsonBodies(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('remove', 'remove');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const charset = charsetOf(request.headers['content-type']);
    if (charset !== undefined && !isUtf8(charset)) {
      const named = charset === '' ? 'the charset parameter is empty' : `charset ${charset} is not supported`;
      done(new GatewayError('UNSUPPORTED_MEDIA_TYPE', `JSON bodies must be UTF-8; ${named}`), undefined);
      return;
    }
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(new GatewayError('BAD_USER_INPUT', 'Request body is not valid UTF-8'), undefined);
      return;
    }
    parseJson(request, text, done);
  });

  // Before the body is read. Only POST bodies are read (fastify ignores those of GET and HEAD), and an unknown
  // route stays a 404. A callback, not an async hook: it runs for every request, nearly all without a coding.
  app.addHook('preParsing', (request, reply, payload, done) => {
    const header = request.headers['content-encoding'];
    const unsupported = header === undefined || request.method !== 'POST' || request.is404 ? [] : unsupportedCodings(header);
    if (unsupported.length === 0) return done(null, payload);
    reply.header('accept-encoding', 'identity');
    done(new GatewayError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${unsupported.join(', ')} is not supported; send the body without a content coding`));
  });
}
