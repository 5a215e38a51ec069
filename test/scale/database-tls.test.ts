import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { selfSigned } from '../support/certificates.js';
import { withAdmin } from '../support/postgres.js';
import { startFailureOf } from '../support/process.js';
import { createPrivateCluster, spawnGateway, type PrivateCluster } from './support.js';

// The shared server has no TLS, and turning it on would change it for every suite: this one runs its own.
describe.skipIf(!existsSync('/usr/lib/postgresql') && !process.env.CI)('TLS to PostgreSQL as DATABASE_URL asks for it', () => {
  let cluster: PrivateCluster;
  let dir: string;
  let server: { cert: string; key: string };
  let otherCa: { cert: string };

  beforeAll(async () => {
    cluster = await createPrivateCluster();
    dir = mkdtempSync(join(tmpdir(), 'cgw-tls-'));
    // The server, running as its own user, reads its certificate from here.
    chmodSync(dir, 0o755);
    server = selfSigned(dir, 'server');
    otherCa = selfSigned(dir, 'other');
    // PostgreSQL reads its key only if no one else may: owned by the server's user, mode 0600.
    chmodSync(server.key, 0o600);
    if (process.getuid?.() === 0) execFileSync('chown', ['postgres', server.key, server.cert]);
    await withAdmin(async (client) => {
      await client.query(`ALTER SYSTEM SET ssl_cert_file = '${server.cert}'`);
      await client.query(`ALTER SYSTEM SET ssl_key_file = '${server.key}'`);
      await client.query('ALTER SYSTEM SET ssl = on');
      await client.query('SELECT pg_reload_conf()');
    }, cluster.url);
  }, 120_000);

  afterAll(() => {
    cluster?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const withTls = (query: string) => `${cluster.url}?${query}`;

  it('verify-full with the CA that signed the server starts, every connection over TLS', async () => {
    const gateway = await spawnGateway('tls', { DATABASE_URL: withTls(`sslmode=verify-full&sslrootcert=${server.cert}`) });
    try {
      const sessions = await withAdmin(
        (client) => client.query(`SELECT bool_and(ssl) AS all_tls, count(*)::int AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'campaign-gateway'`),
        cluster.url,
      );
      expect(sessions.rows[0]).toMatchObject({ all_tls: true });
      expect(sessions.rows[0].n).toBeGreaterThan(0);
      expect(gateway.logs.filter((line) => line.level >= 40)).toEqual([]);
    } finally {
      await gateway.kill();
    }
  }, 120_000);

  it('verify-full with another CA refuses start-up with one line', async () => {
    // Newer Node versions add a hint of their own to the certificate's error ("…; if the root CA is installed locally, try
    // running Node.js with --use-system-ca"): one line still, ending with the code.
    expect(await startFailureOf({ SEED_DEMO: 'false', DATABASE_URL: withTls(`sslmode=verify-full&sslrootcert=${otherCa.cert}`) })).toMatch(
      /^dist\/main\.js exited with 1 before listening:\ncampaign-gateway: failed to start: could not connect to the PostgreSQL database in DATABASE_URL: self-signed certificate(; [^\n]*)? \(DEPTH_ZERO_SELF_SIGNED_CERT\)\n$/,
    );
  }, 60_000);

  it('require checks the certificate as verify-full does, unlike libpq, and the driver warns of it on stderr', async () => {
    const failure = await startFailureOf({ SEED_DEMO: 'false', DATABASE_URL: withTls('sslmode=require') });
    expect(failure).toContain('campaign-gateway: failed to start: could not connect to the PostgreSQL database in DATABASE_URL: self-signed certificate');
    expect(failure).toContain("SECURITY WARNING: The SSL modes 'prefer', 'require', and 'verify-ca' are treated as aliases for 'verify-full'.");
  }, 60_000);

  it('no-verify encrypts and checks nothing', async () => {
    const store = await createStore(loadConfig({ LOG_LEVEL: 'silent', DATABASE_URL: withTls('sslmode=no-verify') }), { olderSchema: 'upgrade' });
    try {
      expect(await store.ping()).toBeUndefined();
    } finally {
      await store.close();
    }
  });
});
