import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { holdsApiKey } from '../domain/keys.js';
import { clientError, clientErrorResponse, serverRefusal, serverRefusalHeaders } from './errors.js';
import type { InFlight } from './in-flight.js';
import { loggableHeader } from './logging.js';
import type { GatewayMetrics } from './metrics.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * An incoming x-request-id is kept when it is safe to log and to keep: not key-shaped, since the id is stored on the
 * job and its events (which every reader of the workspace's events sees) and sent upstream. Otherwise one is made.
 */
export const requestIdOf = (request: IncomingMessage): string => {
  const incoming = request.headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) && !holdsApiKey(incoming) ? incoming : randomUUID();
};

/**
 * The status a request is counted with when its response was cut short: its client went away, or the gateway ended
 * it (a download's client too slow, a shutdown whose grace ran out), whatever status its headers carried. nginx's
 * "client closed request": a status_code value rather than another label, so every existing query on the request
 * series keeps its meaning, and a cut download is no longer counted as a 200 or left out.
 */
const CUT_SHORT_STATUS = 499;

/** Where a raw response keeps its fastify reply, for the listener of its close. */
const REPLY = Symbol('reply');

/** What fastify's parser-level options call, for the requests and connections a server's routes never see. */
export interface Connections {
  /** fastify's `clientErrorHandler`: a request Node cannot parse. */
  clientError(error: NodeJS.ErrnoException, socket: Socket): void;
  /**
   * A request that failed before routing (`frameworkErrors`), before its answer: counted and logged when its response
   * closes, as fastify does for a routed one.
   */
  unrouted(request: FastifyRequest, reply: FastifyReply): void;
}

/**
 * The connections of a server, below its routes: requests pipelined on one connection answered in turn, bodies Node
 * cannot parse answered as their request's, heads it cannot parse refused on the socket, `Expect` headers, and every
 * request counted once when its response is over. Called right after the server is made, before any other hook.
 */
export function watchConnections(app: FastifyInstance, deps: { metrics: GatewayMetrics; inFlight: InFlight }): Connections {
  // Connections whose request was answered before its body had all arrived (a key refused before the body is
  // read, a body over the limit), until the rest of the body has been read. Should it never arrive, or arrive
  // malformed, the client error that follows ends the connection without a second answer (a 408 or a 400).
  const answeredBeforeItsBody = new WeakSet<Socket>();
  const answered = (request: IncomingMessage) => {
    if (request.complete) return;
    answeredBeforeItsBody.add(request.socket);
    request.once('end', () => answeredBeforeItsBody.delete(request.socket));
  };
  // The request each connection has in fastify, until its response is over: a body Node then cannot parse (a bad
  // chunk, one that stops arriving) is that request's answer, under its id, not another request's.
  const requestOn = new WeakMap<Socket, FastifyReply>();
  // Responses answered on their socket that way, with the status they were answered: they end without finishing,
  // not cut short, and what fastify was still doing for the request (a key being checked) may set another.
  const answeredByTheParser = new WeakMap<ServerResponse, number>();
  // Connections whose request Node could not parse, refused once the responses before it are over.
  const refusalWaits = new WeakSet<Socket>();
  /** A request none of fastify's: refused under an id of its own, then the connection is closed. */
  const refuseUnmatched = (error: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) {
      // The client hung up, or sent more after its own `Connection: close`: no refusal can reach it, and none is
      // said to have been sent.
      app.log.info({ code: error.code }, 'malformed HTTP request not answered: its connection was closing');
    } else {
      const { status } = clientError(error.code);
      const requestId = randomUUID();
      // A client too slow to send its request in time (a bad link, often) did nothing malformed.
      const timedOut = status === 408;
      app.log.info({ reqId: requestId, code: error.code }, timedOut ? 'request timed out before it arrived in full' : 'malformed HTTP request refused');
      socket.write(clientErrorResponse(error.code, requestId));
      deps.metrics.malformedRequest(status);
    }
    // Once what was written has gone: the response before the refusal may still be on its way.
    socket.destroySoon();
  };
  /** A request whose head fastify has, whose body Node cannot parse: the answer is that request's, under its id. */
  const refuseInFlight = (error: NodeJS.ErrnoException, socket: Socket, reply: FastifyReply) => {
    // Its response has begun (a download streaming) or was made before its body: nothing may be written into it,
    // and Node's own handler then only hangs up. The response is counted as cut short.
    if (reply.raw.headersSent) {
      socket.destroy();
      return;
    }
    // It has its `incoming request` line, and gets its `request completed` here, where the response closing counts
    // it, with its method and route.
    const { status, body } = clientError(error.code);
    reply.request.refusal = body.code;
    reply.code(status);
    answeredByTheParser.set(reply.raw, status);
    if (socket.writable) socket.write(clientErrorResponse(error.code, reply.request.id));
    reply.log.info({ res: reply, responseTime: reply.elapsedTime, code: error.code }, 'request completed');
    socket.destroy();
  };

  // Node answers `Expect: 100-continue` with 100 Continue as the request arrives, so that its client sends the body
  // a refused key or a Content-Length over the limit then refuses. Sent instead once the body is read, which is
  // after those checks: a request refused before is answered at once, and Node closes its connection, whose
  // client may have sent no body.
  app.server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    // Node reads and drops the body of a request answered without it, after the answer: no 100 then.
    request.once('resume', () => {
      if (!response.headersSent) response.writeContinue();
    });
    app.server.emit('request', request, response);
  });
  // Any other expectation cannot be met (RFC 9110 §10.1.1): refused before any route, as a request Node cannot
  // parse is, in the error shape rather than Node's bare 417.
  app.server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    const requestId = requestIdOf(request);
    const { status, body } = serverRefusal('EXPECTATION_FAILED');
    const text = JSON.stringify(body);
    app.log.info({ reqId: requestId, expect: loggableHeader(request.headers.expect ?? '') }, 'request with an expectation the gateway cannot meet refused');
    // Parsed whole, so the connection goes on as Node's own 417 leaves it: a request pipelined behind this one was
    // parsed and is being handled already, and closing would drop its answer after its job was made.
    response.writeHead(status, STATUS_CODES[status], serverRefusalHeaders(text, requestId, true)).end(text);
    deps.metrics.malformedRequest(status);
  });
  deps.inFlight.watch(app.server);
  // Node emits an accept that failed (out of file descriptors beyond what libuv absorbs, say) on the server, where an
  // error without a listener ends the process. An error while not listening is listen()'s, which fastify reports.
  app.server.on('error', (error) => {
    if (app.server.listening) app.log.error({ err: error }, 'the HTTP server failed to accept a connection; it keeps listening');
  });

  // First, so that every request that reaches a hook is counted, once, when its response is over however it ended:
  // fastify's onResponse never comes for a response cut short (a download whose client went away, or that was ended).
  // One listener made once, not a closure per request: it finds the request through the reply kept on the response.
  function responseClosed(this: ServerResponse & { [REPLY]?: FastifyReply }): void {
    const reply = this[REPLY]!;
    requestOver(reply, answeredByTheParser.get(this) ?? (this.writableFinished ? reply.statusCode : CUT_SHORT_STATUS));
  }
  const requestOver = (reply: FastifyReply, status: number) => {
    const { request } = reply;
    deps.inFlight.ended(request);
    if (requestOn.get(request.raw.socket) === reply) requestOn.delete(request.raw.socket);
    // The route template, never the raw URL: label values must stay few.
    deps.metrics.observeRequest(request.method, request.routeOptions.url ?? 'unmatched', status, reply.elapsedTime / 1000);
  };
  // A request pipelined behind a response not yet over is answered once Node hands it the connection, when that
  // response is over; never, if that response closes the connection (an `Expect: 100-continue` request answered
  // without 100 Continue, which Node closes on, or a response with `Connection: close`, as during a shutdown),
  // whether it ended before this request arrived (the connection is no longer writable) or ends after. Nothing is
  // done for the request before its turn, so that none is carried out (a job made) whose answer cannot be sent.
  const awaitTurn = (reply: FastifyReply, socket: Socket, done: () => void) => {
    if (reply.raw.socket === socket) {
      if (socket.writable) done();
      else drop(reply, done);
      return;
    }
    const turn = () => {
      socket.off('close', closed);
      awaitTurn(reply, socket, done);
    };
    const closed = () => {
      reply.raw.off('socket', turn);
      drop(reply, done);
    };
    reply.raw.once('socket', turn);
    if (socket.closed) closed();
    else socket.once('close', closed);
  };
  /** A request whose answer cannot be sent: neither carried out nor answered, and counted as cut short. */
  const drop = (reply: FastifyReply, done: () => void) => {
    reply.raw.off('close', responseClosed);
    reply.code(CUT_SHORT_STATUS).hijack();
    reply.log.info({ res: reply, responseTime: reply.elapsedTime }, 'request dropped: its connection closed before its turn to be answered');
    requestOver(reply, CUT_SHORT_STATUS);
    done();
  };
  app.addHook('onRequest', (request, reply, done) => {
    const { socket } = request.raw;
    deps.inFlight.started(request);
    requestOn.set(socket, reply);
    (reply.raw as ServerResponse & { [REPLY]?: FastifyReply })[REPLY] = reply;
    // A response closes once: `on`, which, unlike `once`, wraps nothing.
    reply.raw.on('close', responseClosed);
    awaitTurn(reply, socket, done);
  });
  app.addHook('onResponse', (request, _reply, done) => {
    answered(request.raw);
    done();
  });

  return {
    // Node reads pipelined requests on while the responses before them go out, and nothing may be written on the
    // connection before those are over: the answer waits for them.
    clientError: (error, socket) => {
      if (error.code === 'ECONNRESET' || socket.destroyed || refusalWaits.has(socket)) return;
      if (answeredBeforeItsBody.has(socket)) {
        socket.destroy();
        return;
      }
      const reply = requestOn.get(socket);
      if (reply === undefined) {
        refuseUnmatched(error, socket);
      } else if (reply.request.raw.complete) {
        // Its request arrived in full: the error is a pipelined request's after it, whose head Node could not parse.
        refusalWaits.add(socket);
        reply.raw.once('close', () => refuseUnmatched(error, socket));
      } else if (reply.raw.socket !== socket) {
        // Its response's turn has not come (Node gives it the socket then).
        refusalWaits.add(socket);
        reply.raw.once('socket', () => refuseInFlight(error, socket, reply));
      } else {
        refuseInFlight(error, socket, reply);
      }
    },
    unrouted: (request, reply) => {
      const started = performance.now();
      const { socket } = request.raw;
      requestOn.set(socket, reply);
      reply.header('x-request-id', request.id);
      reply.raw.once('close', () => {
        if (requestOn.get(socket) === reply) requestOn.delete(socket);
        const responseTime = performance.now() - started;
        if (reply.raw.writableFinished) {
          answered(request.raw);
          reply.log.info({ res: reply, responseTime }, 'request completed');
        }
        const status = answeredByTheParser.get(reply.raw) ?? (reply.raw.writableFinished ? reply.statusCode : CUT_SHORT_STATUS);
        deps.metrics.observeRequest(request.method, 'unmatched', status, responseTime / 1000);
      });
    },
  };
}
