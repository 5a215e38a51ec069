import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyRequest } from 'fastify';

/** What a shutdown whose grace period ran out cuts. */
export interface InFlightSummary {
  /** Connections still open: each either answering a request or still receiving one. */
  connections: number;
  /** Requests whose response is not over. */
  requests: number;
  /** Those requests by method and route template (`unmatched` for none), e.g. `{"GET /security_events/download": 1}`. */
  routes: Record<string, number>;
}

/** The requests a server is answering and the connections it holds, for the shutdown to say what it cuts. */
export class InFlight {
  private readonly requests = new Set<FastifyRequest>();
  private readonly connections = new Set<Socket>();

  watch(server: Server): void {
    server.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
    });
  }

  started(request: FastifyRequest): void {
    this.requests.add(request);
  }

  ended(request: FastifyRequest): void {
    this.requests.delete(request);
  }

  summary(): InFlightSummary {
    const routes: Record<string, number> = {};
    for (const request of this.requests) {
      const route = `${request.method} ${request.routeOptions.url ?? 'unmatched'}`;
      routes[route] = (routes[route] ?? 0) + 1;
    }
    return { connections: this.connections.size, requests: this.requests.size, routes };
  }
}
