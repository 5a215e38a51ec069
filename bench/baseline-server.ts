import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';

/**
 * The yardstick: a bare fastify route in the same kind of process as the gateway (node with tsx), answering
 * what the gateway's REST door answers, with no authentication, quota, validation or storage.
 */
const app = Fastify();
app.post('/campaigns/duplicate', async (_request, reply) =>
  reply.status(202).send({ message: 'success', job_id: randomUUID(), status: 'pending' }),
);
const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
process.stdout.write(`${JSON.stringify({ msg: 'baseline is listening', url })}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
