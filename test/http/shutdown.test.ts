import { once } from 'node:events';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startGateway } from '../support/gateway.js';

describe('closing the gateway', () => {
  it('cuts a connection still sending its request when the grace period ends, instead of waiting for it', async () => {
    const gateway = await startGateway({ SHUTDOWN_GRACE_SECONDS: '1' });
    const slow = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
    await once(slow, 'connect');
    // Headers and 5 of the 100 body bytes promised: refused at once for want of a key, but the request is not
    // over until its body has arrived, and it never does.
    slow.write('POST /campaigns/duplicate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"cam');
    const [answer] = await once(slow, 'data');
    expect(String(answer)).toMatch(/^HTTP\/1\.1 401 /);
    const cut = once(slow, 'close');
    slow.resume();
    await gateway.close();
    await cut;
    expect(slow.destroyed).toBe(true);
  });
});
