/**
 * The Expect header, over raw sockets on loopback: `100-continue` is answered 100 Continue only once the request
 * will read its body, after its key and size are checked; any other expectation is refused in the error shape.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http, metricSample, recordingLogger, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const BODY_LIMIT = 1024;
let gateway: TestGateway;
let team: TestWorkspace;
let reader: { key: string };
const logs = recordingLogger();

beforeAll(async () => {
  gateway = await startGateway({ BODY_LIMIT_BYTES: String(BODY_LIMIT), WORKER_CONCURRENCY: '0' }, { logger: logs.logger });
  team = await gateway.workspace();
  reader = await team.addKey(['security_events.read']);
});

afterAll(async () => {
  await gateway?.close();
});

/** A connection that keeps all the gateway sent, and says when it hung up. */
function connection(): { socket: Socket; received: () => string; closed: Promise<void> } {
  const socket = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
  let data = '';
  socket.on('data', (chunk) => (data += chunk.toString('latin1')));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, received: () => data, closed };
}

const FINAL_STATUS = /HTTP\/1\.1 [2-5]\d\d [^\r]*\r\n[\s\S]*?\r\n\r\n/;

/** The request's head, asking to be told to send a body of `length` bytes. */
const head = (path: string, headers: string[], length: number) =>
  [`POST ${path} HTTP/1.1`, 'Host: x', 'Content-Type: application/json', `Content-Length: ${length}`, ...headers, '', ''].join('\r\n');

describe('Expect: 100-continue', () => {
  const body = () => JSON.stringify({ campaign_id: team.campaign.id, name: 'Copy' });

  it.each([
    { name: 'an unknown key', auth: () => 'Authorization: Bearer cgw_nope', length: () => body().length, status: 401, code: 'UNAUTHENTICATED' },
    { name: 'no key', auth: () => 'X-None: 1', length: () => body().length, status: 401, code: 'UNAUTHENTICATED' },
    { name: 'a key without the permission', auth: () => `Authorization: Bearer ${reader.key}`, length: () => body().length, status: 403, code: 'FORBIDDEN' },
    { name: 'a Content-Length over the limit', auth: () => `Authorization: Bearer ${team.key}`, length: () => BODY_LIMIT + 1, status: 413, code: 'PAYLOAD_TOO_LARGE' },
  ])('refuses $name at once, without 100 Continue, and closes the connection', async ({ auth, length, status, code }) => {
    const { socket, received, closed } = connection();
    socket.write(head('/campaigns/duplicate', [auth(), 'Expect: 100-continue'], length()));
    await waitFor(async () => FINAL_STATUS.test(received()));
    expect(received()).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(received()).toMatch(/\r\nx-request-id: \S+\r\n/i);
    await closed;
    expect(JSON.parse(received().slice(received().indexOf('\r\n\r\n') + 4))).toMatchObject({ code });
  });

  it('answers 100 Continue to a request it will read, then takes its body', async () => {
    const { socket, received } = connection();
    socket.write(head('/campaigns/duplicate', [`Authorization: Bearer ${team.key}`, 'Expect: 100-continue'], Buffer.byteLength(body())));
    await waitFor(async () => received().startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
    socket.write(body());
    await waitFor(async () => FINAL_STATUS.test(received().slice('HTTP/1.1 100 Continue\r\n\r\n'.length)));
    expect(received()).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 202 /);
    socket.destroy();
  });
});

describe('another expectation', () => {
  it('is refused with 417 in the error shape, with a request id, logged and counted', async () => {
    const before = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', { status_code: '417' }) ?? 0;
    const { socket, received, closed } = connection();
    socket.write(head('/campaigns/duplicate', [`Authorization: Bearer ${team.key}`, 'Expect: 200-ok', 'X-Request-Id: expect-417'], 2));
    await waitFor(async () => FINAL_STATUS.test(received()));
    const answerHead = received().slice(0, received().indexOf('\r\n\r\n'));
    expect(answerHead).toMatch(/^HTTP\/1\.1 417 /);
    expect(answerHead).toMatch(/\r\ncontent-type: application\/json; charset=utf-8\r\n/i);
    expect(answerHead).toMatch(/\r\nx-request-id: expect-417(\r\n|$)/i);
    await closed;
    expect(JSON.parse(received().slice(answerHead.length + 4))).toEqual({ message: 'Only Expect: 100-continue is supported', code: 'EXPECTATION_FAILED' });
    const line = logs.lines.map((text) => JSON.parse(text)).find((entry) => entry.reqId === 'expect-417');
    expect(line).toMatchObject({ level: 30, expect: '200-ok' });
    const after = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', { status_code: '417' });
    expect(after).toBe(before + 1);
  });
});
