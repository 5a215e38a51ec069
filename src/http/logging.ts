import type { FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { stdTimeFunctions } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Config } from '../config.js';
import { redactApiKeys } from '../domain/keys.js';

const QUERY_PARAMETER = /([?&])([^=&#]*)=([^&#]*)/g;
// Matched against the name in lower case without '-' and '_', so `X-Api-Key`, `client_secret` and `accessToken` all match.
const SECRET_NAME_PART = /key|secret|token|passw(?:or)?d|auth|signature/;
// `query` and `variables` carry a GraphQL GET's document and variables, which may hold personal data (an email address).
const SECRET_NAMES = new Set(['sig', 'code', 'credential', 'credentials', 'query', 'variables']);

/** Whether a query parameter's value is kept out of the log whatever it looks like, judged by the parameter's name. */
function isSecretParameter(name: string): boolean {
  // Decoded as a server would read it; a malformed escape stays as it was sent.
  const [decoded = ''] = new URLSearchParams(`${name}=`).keys();
  const normalized = decoded.toLowerCase().replace(/[-_]/g, '');
  return SECRET_NAME_PART.test(normalized) || SECRET_NAMES.has(normalized);
}

/** A URL as it may be logged: no secret or possibly personal query parameter values, no key-shaped tokens. */
const redactUrl = (url: string): string =>
  redactApiKeys(url.replace(QUERY_PARAMETER, (parameter, separator: string, name: string) => (isSecretParameter(name) ? `${separator}${name}=[redacted]` : parameter)));

// Built once: the Host header is logged with every request. `search` ignores the global flag's lastIndex, where `test`
// would start from where the last match ended.
const NOT_VISIBLE_ASCII = /[^\x21-\x7E]/g;
const escapeCharacter = (char: string): string => `\\u${char.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * The Host header as it may be logged: a host name or address is visible ASCII, logged as sent; any other character is
 * escaped (`a\u009B31m`). Node reads a header's bytes as Latin-1, so a C1 control such as CSI (0x9B) sent raw would
 * reach the log as that character, for a terminal showing it to act on.
 */
const loggableHost = (host: string): string =>
  host.search(NOT_VISIBLE_ASCII) === -1 ? host : host.replace(NOT_VISIBLE_ASCII, escapeCharacter);

const NOT_PRINTABLE_ASCII = /[^\x20-\x7E]/g;
/** How much of a header the caller chose is logged: enough to recognise it, not 16 KiB of it on every line. */
const LOGGED_HEADER_LENGTH = 64;

/** Any other header a line names, as loggableHost escapes the Host, and cut short. */
export const loggableHeader = (value: string): string => {
  const shown = value.slice(0, LOGGED_HEADER_LENGTH).replace(NOT_PRINTABLE_ASCII, escapeCharacter);
  return value.length > LOGGED_HEADER_LENGTH ? `${shown}…` : shown;
};

/**
 * The `res` of a request's last line (`request completed`, `stream closed prematurely`): its status, method and route
 * template, the User-Agent it gave, and what the request came to where it is known: the workspace and the key id of
 * its caller, the code it was refused with, the job it was accepted as, the GraphQL operation's type and top-level
 * fields (so that what a key read can be told from the log). Read from the request (RequestTrace) as the line is written, so that
 * a request whose line is not written pays nothing for it and none pays for a logger of its own. Ids and codes only:
 * no field holds the key.
 */
function completedResponse(reply: Partial<FastifyReply> & Pick<FastifyReply, 'statusCode'>): Record<string, unknown> {
  const line: Record<string, unknown> = { statusCode: reply.statusCode };
  // Always there on fastify's own lines; the logger's types let any partial reply through.
  const { request } = reply;
  if (!request) return line;
  line.method = request.method;
  line.route = request.routeOptions.url;
  const userAgent = request.headers['user-agent'];
  // The caller's text, like the URL: a key in it is redacted before it is cut, which could leave too little of it to be recognised.
  if (userAgent !== undefined) line.userAgent = loggableHeader(redactApiKeys(userAgent));
  if (request.caller) {
    line.workspaceId = request.caller.workspaceId;
    line.keyId = request.caller.keyId;
  }
  if (request.refusal !== undefined) line.code = request.refusal;
  if (request.jobId !== undefined) line.jobId = request.jobId;
  if (request.graphql !== undefined) line.graphql = request.graphql;
  return line;
}

export function usesPrettyLogs(config: Config, stdoutIsTty = Boolean(process.stdout.isTTY)): boolean {
  if (config.logFormat !== 'auto') return config.logFormat === 'pretty';
  return config.nodeEnv === 'development' && stdoutIsTty;
}

/**
 * pino through fastify: JSON lines (readable ones in development), each `time` in epoch milliseconds or ISO 8601 (LOG_TIME), the request id on every line of a request
 * (fastify's `reqId`), secret headers censored, and every line scrubbed of key-shaped tokens before it is
 * written, so a key sent in a query string, a body or an error message never reaches the log.
 */
export function loggerOptions(config: Config, destination: NodeJS.WritableStream = process.stdout): FastifyServerOptions['logger'] {
  // Formatted in place, line by line: no transport thread or stream pipeline that could end stdout.
  const format = usesPrettyLogs(config)
    ? prettyFactory({
        colorize: destination === process.stdout && Boolean(process.stdout.isTTY),
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid,hostname',
      })
    : (line: string) => line;
  return {
    level: config.logLevel,
    timestamp: config.logTime === 'iso' ? stdTimeFunctions.isoTime : stdTimeFunctions.epochTime,
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie'],
      censor: '[redacted]',
    },
    serializers: {
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: redactUrl(request.url),
        host: loggableHost(request.host),
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
      res: completedResponse,
    },
    stream: { write: (line: string) => destination.write(format(redactApiKeys(line))) },
  };
}
