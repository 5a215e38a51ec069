import type { FastifyRequest } from 'fastify';
import { withoutPort } from '../domain/ip-allowlist.js';
import type { RequestContext, RequestLog, RequestTrace } from '../domain/service.js';
import type { Principal } from '../domain/types.js';

declare module 'fastify' {
  interface FastifyRequest extends RequestTrace {
    principal?: Principal;
    /** The job an accepted duplication made, or an idempotent repeat answered with, for the request's log line. */
    jobId?: string;
  }
}

/**
 * Every value of a header, as many times as it was sent: Node keeps only the first of some repeated headers
 * (Authorization) and joins others into one value (`a, b`); the raw headers show each one.
 */
export function headerValues(request: FastifyRequest, name: string): string[] {
  const raw = request.raw.rawHeaders;
  const values: string[] = [];
  for (let index = 0; index < raw.length; index += 2) {
    if (raw[index].toLowerCase() === name) values.push(raw[index + 1]);
  }
  return values;
}

function authorization(request: FastifyRequest): RequestContext['authorization'] {
  const values = headerValues(request, 'authorization');
  return values.length > 1 ? values : request.headers.authorization;
}

/**
 * What the service needs to know of an HTTP request, REST or GraphQL: its key(s), the client address, the transport,
 * and its id.
 */
export const httpRequestContext = (request: FastifyRequest, channel: RequestContext['channel']): RequestContext => ({
  authorization: authorization(request),
  ip: withoutPort(request.ip),
  channel,
  requestId: request.id,
  // On the request's lines from here on, `request completed` with its 401 included. Fastify's logger here is always
  // pino's (built from options), whose children take more bindings.
  log: request.log as typeof request.log & RequestLog,
  trace: request,
});
