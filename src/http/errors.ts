import { STATUS_CODES } from 'node:http';
import type { FastifyError } from 'fastify';
import { ERROR_CODES, GatewayError, isGatewayError, type ErrorCode, type FieldIssue } from '../domain/errors.js';
import { INVALID_REQUEST } from '../domain/validation.js';

/**
 * Braze's error body: every REST error has one, never HTML or an empty body. `code`, which Braze does not send
 * and its clients ignore, lets a script tell errors apart without reading the message.
 */
export interface RestErrorBody {
  message: string;
  code: ErrorCode;
  errors?: string[];
}

const snakeCase = (field: string): string => field.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);

/** Inputs a REST caller sends outside the body, named as the caller sent them. */
const REST_HEADER_FIELDS: Record<string, string> = { idempotencyKey: 'Idempotency-Key' };

/** The service's camelCase field, as REST callers know it: a body field in snake_case, or a header. */
const restFieldName = (field: string): string => REST_HEADER_FIELDS[field] ?? snakeCase(field);

const renderRestIssue = (issue: FieldIssue): string => `'${restFieldName(issue.field)}' ${issue.message}`;

/** A request without a body, whether or not it said its (absent) body was JSON. */
export const emptyBodyError = (): GatewayError => new GatewayError('BAD_USER_INPUT', 'Request body is empty; send a JSON object');

/** Errors fastify raises before a handler runs (URL decoding, body parsing, content type, size). */
function fromFastify(error: FastifyError): GatewayError | null {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new GatewayError('PAYLOAD_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new GatewayError('UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return emptyBodyError();
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new GatewayError('BAD_USER_INPUT', 'Malformed JSON body');
    case 'FST_ERR_BAD_URL':
      return new GatewayError('BAD_USER_INPUT', 'Malformed URL');
    default:
      break;
  }
  if (error instanceof SyntaxError || error.statusCode === 400) return new GatewayError('BAD_USER_INPUT', 'Malformed request');
  if (error.statusCode === 413) return new GatewayError('PAYLOAD_TOO_LARGE');
  if (error.statusCode === 415) return new GatewayError('UNSUPPORTED_MEDIA_TYPE');
  if (error.statusCode === 404) return new GatewayError('NOT_FOUND');
  return null;
}

/**
 * The headers of an answer that refuses a request with `error`, on either door: Retry-After when it says when
 * to come back, and on a 401 the scheme to authenticate with, which RFC 9110 requires.
 */
export function errorHeaders(error: GatewayError): Record<string, string> {
  const headers: Record<string, string> = {};
  if (ERROR_CODES[error.code].httpStatus === 401) headers['www-authenticate'] = 'Bearer';
  if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
  return headers;
}

/** The one place REST maps an error to a status, headers and a body. Unknown errors say nothing about their cause. */
export function toRestError(error: unknown): {
  status: number;
  headers: Record<string, string>;
  body: RestErrorBody;
  gatewayError: GatewayError;
  unexpected: boolean;
} {
  const gatewayError = isGatewayError(error)
    ? error
    : (error instanceof Error && fromFastify(error as FastifyError)) || null;
  if (!gatewayError) {
    return {
      status: 500,
      headers: {},
      body: { message: ERROR_CODES.INTERNAL.message, code: 'INTERNAL' },
      gatewayError: new GatewayError('INTERNAL'),
      unexpected: true,
    };
  }
  const body: RestErrorBody = { message: gatewayError.message, code: gatewayError.code };
  if (gatewayError.issues.length > 0) {
    body.errors = gatewayError.issues.map(renderRestIssue);
    // Braze says what is wrong in `message` ('campaign_id' must be a string of the object api identifier), where Braze
    // clients show and match it, rather than a heading.
    if (gatewayError.message === INVALID_REQUEST) body.message = body.errors.join('; ');
  }
  const status = ERROR_CODES[gatewayError.code].httpStatus;
  return { status, headers: errorHeaders(gatewayError), body, gatewayError, unexpected: gatewayError.code === 'INTERNAL' };
}

/** Requests Node's HTTP parser refuses, by Node's error code; any other parse error is a 400. */
const CLIENT_ERRORS: Record<string, ErrorCode> = {
  ERR_HTTP_REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  HPE_HEADER_OVERFLOW: 'HEADERS_TOO_LARGE',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 'PAYLOAD_TOO_LARGE',
};

/** The status and body a request Node could not parse is refused with, by Node's error code. */
export function clientError(nodeCode: string | undefined): { status: number; body: RestErrorBody } {
  const code = CLIENT_ERRORS[nodeCode ?? ''];
  return code === undefined ? { status: 400, body: { message: 'Malformed request', code: 'BAD_USER_INPUT' } } : serverRefusal(code);
}

/** A refusal the HTTP server answers before any route, in the error shape. */
export const serverRefusal = (code: ErrorCode): { status: number; body: RestErrorBody } => ({
  status: ERROR_CODES[code].httpStatus,
  body: { message: ERROR_CODES[code].message, code },
});

/**
 * The headers of an answer given outside fastify: the same JSON body and request id as any other error. The
 * connection is closed unless `keepAlive`, as what follows on it cannot be trusted to start a request when the
 * request could not be parsed.
 */
export function serverRefusalHeaders(body: string, requestId: string, keepAlive = false): Record<string, string> {
  return {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'X-Request-Id': requestId,
    ...(keepAlive ? {} : { Connection: 'close' }),
  };
}

/** The raw HTTP answer to a request fastify never sees because Node could not parse it, with nothing of what was sent. */
export function clientErrorResponse(code: string | undefined, requestId: string): string {
  const { status, body: error } = clientError(code);
  const body = JSON.stringify(error);
  const headers = Object.entries(serverRefusalHeaders(body, requestId)).map(([name, value]) => `${name}: ${value}`);
  return [`HTTP/1.1 ${status} ${STATUS_CODES[status]}`, ...headers, '', body].join('\r\n');
}
