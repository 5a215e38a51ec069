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

/**
 * The requests a server is answering, counted by route, and the connections it holds, for the shutdown to say what it
 * cuts. Counts under string keys rather than a set of the requests themselves: every request passes through here.
 */
export class InFlight {
  private readonly byRoute = new Map<string, number>();
  private readonly connections = new Set<Socket>();

  watch(server: Server): void {
    server.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
    });
  }

  started(request: FastifyRequest): void {
    const route = routeOf(request);
    this.byRoute.set(route, (this.byRoute.get(route) ?? 0) + 1);
  }

  ended(request: FastifyRequest): void {
    const route = routeOf(request);
    const left = (this.byRoute.get(route) ?? 1) - 1;
    if (left > 0) this.byRoute.set(route, left);
    else this.byRoute.delete(route);
  }

  summary(): InFlightSummary {
    const routes = Object.fromEntries(this.byRoute);
    return { connections: this.connections.size, requests: [...this.byRoute.values()].reduce((sum, count) => sum + count, 0), routes };
  }
}

/** Method and route template (`unmatched` for none), e.g. `GET /security_events/download`. */
const routeOf = (request: FastifyRequest): string => `${request.method} ${request.routeOptions.url ?? 'unmatched'}`;
