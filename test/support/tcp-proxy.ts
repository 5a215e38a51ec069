import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on a loopback port in front of a server (a database), which a test can turn into a black hole:
 * connections stay open and new ones are accepted, but no byte goes through either way, as when a firewall
 * or a dead link drops packets. Nothing is lost meanwhile: what was held back flows once it forwards again.
 */
export class TcpProxy {
  private forwarding = true;
  private readonly sockets = new Set<Socket>();
  /** Client connections accepted while black-holing, connected to the target once it forwards again. */
  private readonly waiting: Socket[] = [];

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer({ pauseOnConnect: true });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    const proxy = new TcpProxy(server, target, address.port);
    server.on('connection', (client) => proxy.accept(client));
    return proxy;
  }

  /** The target's URL with its host and port replaced by the proxy's. */
  url(targetUrl: string): string {
    const url = new URL(targetUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  /** From now on nothing goes through, and nothing is closed. */
  blackHole(): void {
    this.forwarding = false;
    for (const socket of this.sockets) socket.pause();
  }

  /** Forwards again, what was held back first. */
  restore(): void {
    this.forwarding = true;
    for (const socket of this.sockets) socket.resume();
    for (const client of this.waiting.splice(0)) this.accept(client);
  }

  /** Cuts every connection and stops listening. */
  async close(): Promise<void> {
    for (const socket of [...this.sockets, ...this.waiting]) socket.destroy();
    this.server.close();
    await once(this.server, 'close');
  }

  private accept(client: Socket): void {
    if (!this.forwarding) {
      this.waiting.push(client);
      return;
    }
    const server = connect(this.target.port, this.target.host);
    for (const [from, to] of [
      [client, server],
      [server, client],
    ]) {
      this.sockets.add(from);
      from.on('data', (chunk) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => {
        if (this.forwarding) from.resume();
      });
      from.on('end', () => to.end());
      from.on('error', () => to.destroy());
      from.on('close', () => {
        this.sockets.delete(from);
        to.destroy();
      });
    }
    client.resume();
  }
}
