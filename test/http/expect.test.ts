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

/** A duplication's body. */
const body = () => JSON.stringify({ campaign_id: team.campaign.id, name: 'Copy' });

describe('Expect: 100-continue', () => {
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

describe('a request pipelined behind one refused without 100 Continue', () => {
  const accepted = async () =>
    metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_duplications_total', { channel: 'REST', outcome: 'accepted' }) ?? 0;
  const dropped = async () =>
    metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', {
      method: 'POST',
      route: '/campaigns/duplicate',
      status_code: '499',
    }) ?? 0;

  it.each([
    { name: 'no key', auth: () => 'X-None: 1', length: () => body().length, status: 401 },
    { name: 'an unknown key', auth: () => 'Authorization: Bearer cgw_nope', length: () => body().length, status: 401 },
    { name: 'a Content-Length over the limit', auth: () => `Authorization: Bearer ${team.key}`, length: () => BODY_LIMIT + 1, status: 413 },
  ])('is dropped, not carried out, when the refusal of $name closes the connection', async ({ name, auth, length, status }) => {
    const [acceptedBefore, droppedBefore] = [await accepted(), await dropped()];
    const requestId = `behind-${name.replaceAll(' ', '-')}`;
    const behind = body();
    const { socket, received, closed } = connection();
    // The refused request's body is sent anyway, and the next request in the same write: Node parses both at once.
    socket.write(
      head('/campaigns/duplicate', [auth(), 'Expect: 100-continue'], length()) +
        'x'.repeat(length()) +
        head('/campaigns/duplicate', [`Authorization: Bearer ${team.key}`, `X-Request-Id: ${requestId}`], Buffer.byteLength(behind)) +
        behind,
    );
    await closed;
    expect(received(), name).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(received().match(/HTTP\/1\.1 /g)).toHaveLength(1);
    const linesOf = () => logs.lines.map((text) => JSON.parse(text)).filter((entry) => entry.reqId === requestId);
    await waitFor(async () => linesOf().some((entry) => entry.msg.startsWith('request dropped')));
    expect(linesOf().map((entry) => entry.msg)).toEqual(['incoming request', 'request dropped: its connection closed before its turn to be answered']);
    expect(linesOf()[1]).toMatchObject({ level: 30, res: { statusCode: 499 } });
    expect(await accepted()).toBe(acceptedBefore);
    expect(await dropped()).toBe(droppedBefore + 1);
  });
});

describe('a request pipelined behind one refused without 100 Continue after it arrived', () => {
  const heldLogs = recordingLogger();
  let held: TestGateway;
  let heldTeam: TestWorkspace;
  let heldReader: { key: string };
  // The next key lookup waits until the test lets it go, as one over the network can take longer than the request
  // behind it takes to arrive.
  let hold: Promise<void> | undefined;
  beforeAll(async () => {
    held = await startGateway({ WORKER_CONCURRENCY: '0' }, { logger: heldLogs.logger }, {
      wrapStore: (store) =>
        new Proxy(store, {
          get(target, property) {
            const value = Reflect.get(target, property, target);
            if (property !== 'findApiKeyByHash' || typeof value !== 'function') return value;
            return async (...args: unknown[]) => {
              const waiting = hold;
              hold = undefined;
              await waiting;
              return value.apply(target, args);
            };
          },
        }),
    });
    heldTeam = await held.workspace();
    heldReader = await heldTeam.addKey(['security_events.read']);
  });
  afterAll(() => held?.close());

  it('waits for its turn, and is dropped when the refusal closes the connection', async () => {
    let release!: () => void;
    hold = new Promise((resolve) => (release = resolve));
    const behind = JSON.stringify({ campaign_id: heldTeam.campaign.id, name: 'Copy' });
    const socket = connect(Number(new URL(held.baseUrl).port), '127.0.0.1');
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', () => undefined);
    socket.write(
      head('/campaigns/duplicate', [`Authorization: Bearer ${heldReader.key}`, 'Expect: 100-continue'], 2) +
        '{}' +
        head('/campaigns/duplicate', [`Authorization: Bearer ${heldTeam.key}`, 'X-Request-Id: behind-held'], Buffer.byteLength(behind)) +
        behind,
    );
    const linesOf = () => heldLogs.lines.map((text) => JSON.parse(text)).filter((entry) => entry.reqId === 'behind-held');
    await waitFor(async () => linesOf().length > 0);
    release();
    await closed;
    await waitFor(async () => linesOf().length > 1);
    expect(linesOf().map((entry) => entry.msg)).toEqual(['incoming request', 'request dropped: its connection closed before its turn to be answered']);
    expect(await held.app.store.listJobs({ workspaceId: heldTeam.workspace.id }, 10, null)).toHaveLength(0);
  });
});

describe('another expectation', () => {
  it('is refused with 417 in the error shape, with a request id, logged and counted, and a request behind it answered', async () => {
    const before = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', { status_code: '417' }) ?? 0;
    const { socket, received } = connection();
    const behind = body();
    // A C1 control (CSI) and more than a log line should hold of what the caller chose.
    const expectation = `200-ok\x9b31m${'x'.repeat(200)}`;
    socket.write(
      Buffer.concat([
        Buffer.from(head('/campaigns/duplicate', [`Authorization: Bearer ${team.key}`, `Expect: ${expectation}`, 'X-Request-Id: expect-417'], 2) + '{}', 'latin1'),
        Buffer.from(head('/campaigns/duplicate', [`Authorization: Bearer ${team.key}`, 'X-Request-Id: behind-417'], Buffer.byteLength(behind)) + behind),
      ]),
    );
    await waitFor(async () => /\r\nx-request-id: behind-417\r\n[\s\S]*?\r\n\r\n\{[^}]*\}/i.test(received()));
    const answerHead = received().slice(0, received().indexOf('\r\n\r\n'));
    expect(answerHead).toMatch(/^HTTP\/1\.1 417 /);
    expect(answerHead).toMatch(/\r\ncontent-type: application\/json; charset=utf-8\r\n/i);
    expect(answerHead).toMatch(/\r\nx-request-id: expect-417(\r\n|$)/i);
    const refusal = received().slice(answerHead.length + 4);
    expect(JSON.parse(refusal.slice(0, refusal.indexOf('}') + 1))).toEqual({ message: 'Only Expect: 100-continue is supported', code: 'EXPECTATION_FAILED' });
    // The request pipelined behind it is answered: its job is not made behind a closed connection.
    const second = refusal.slice(refusal.indexOf('}') + 1);
    expect(second).toMatch(/^HTTP\/1\.1 202 /);
    const jobId = JSON.parse(second.slice(second.indexOf('\r\n\r\n') + 4)).job_id;
    expect((await gateway.app.store.getJob(team.workspace.id, jobId))?.requestId).toBe('behind-417');
    socket.destroy();
    const line = logs.lines.map((text) => JSON.parse(text)).find((entry) => entry.reqId === 'expect-417');
    expect(line).toMatchObject({ level: 30, expect: `200-ok\\u009B31m${'x'.repeat(54)}…` });
    const after = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_http_requests_total', { status_code: '417' });
    expect(after).toBe(before + 1);
  });
});
