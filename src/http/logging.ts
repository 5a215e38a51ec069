import type { FastifyRequest, FastifyServerOptions } from 'fastify';
import { prettyFactory } from 'pino-pretty';
import type { Config } from '../config.js';
import { redactApiKeys } from '../domain/keys.js';

// Query parameters whose values are secrets whatever they look like.
const SECRET_PARAMS = /([?&](?:api[_-]?key|key|token|access[_-]?token|auth|authorization|password|secret)=)[^&#]*/gi;

/** A URL as it may be logged: no secret query parameter values, no key-shaped tokens. */
export const redactUrl = (url: string): string => redactApiKeys(url.replace(SECRET_PARAMS, '$1[redacted]'));

export function usesPrettyLogs(config: Config, stdoutIsTty = Boolean(process.stdout.isTTY)): boolean {
  if (config.logFormat !== 'auto') return config.logFormat === 'pretty';
  return config.nodeEnv === 'development' && stdoutIsTty;
}

/**
 * pino through fastify: JSON lines (readable ones in development), the request id on every line of a request
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
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie'],
      censor: '[redacted]',
    },
    serializers: {
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: redactUrl(request.url),
        host: request.host,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
    stream: { write: (line: string) => destination.write(format(redactApiKeys(line))) },
  };
}
