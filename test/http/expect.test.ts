/**
 * The Expect header, over raw sockets on loopback: `100-continue` is answered 100 Continue only once the request
 * will read its body, after its key and size are checked.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const BODY_LIMIT = 1024;
let gateway: TestGateway;
let team: TestWorkspace;
let reader: { key: string };

beforeAll(async () => {
  gateway = await startGateway({ BODY_LIMIT_BYTES: String(BODY_LIMIT), WORKER_CONCURRENCY: '0' });
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
