// Every protocol vector against the PostgreSQL store, plus the store's lock and rollback.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { Participant, PostgresStore, success } from '../src/index.js';
import type { InboundMessage } from '../src/index.js';
import { freshTestDatabase } from './pg-setup.js';
import { loadVector, runVector, vectorFiles } from './vector-runner.js';
import { waitFor } from './wait.js';

const SAGA = '019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b';
let url: string;
let pool: pg.Pool;
let store: PostgresStore;

before(async () => {
  url = await freshTestDatabase();
  pool = new pg.Pool({ connectionString: url });
  store = await PostgresStore.connect(pool);
});

after(async () => {
  await store.close();
  await pool.end();
});

describe('protocol vectors, PostgreSQL store', () => {
  for (const file of vectorFiles()) {
    test(file, async () => {
      await pool.query('TRUNCATE sagaflow_participant_outcomes');
      await runVector(loadVector(file), store);
    });
  }
});

describe('PostgreSQL store', () => {
  test('the advisory lock serialises two units of work on one (saga, step)', async () => {
    const events: string[] = [];
    let releaseFirst!: () => void;
    const firstHolds = new Promise<void>((resolve) => (releaseFirst = resolve));
    let firstStarted!: () => void;
    const started = new Promise<void>((resolve) => (firstStarted = resolve));
    const first = store.withStep(SAGA, 'lock_step', async () => {
      events.push('first in');
      firstStarted();
      await firstHolds;
      events.push('first out');
    });
    await started;
    const second = store.withStep(SAGA, 'lock_step', () => {
      events.push('second in');
      return Promise.resolve();
    });
    // Another step is not blocked meanwhile.
    await store.withStep(SAGA, 'other_step', () => Promise.resolve(events.push('other step')));
    await waitFor(async () => (await pool.query(WAITING_FOR_ADVISORY_LOCK)).rowCount === 1, 'second waits for the lock');
    releaseFirst();
    await Promise.all([first, second]);
    assert.deepStrictEqual(events, ['first in', 'other step', 'first out', 'second in']);
  });

  test('a handler that throws rolls back its own writes and the outcome', async () => {
    await pool.query('TRUNCATE sagaflow_participant_outcomes');
    await pool.query('CREATE TABLE IF NOT EXISTS side_effects (note text)');
    const participant = new Participant({ source: '/test', store });
    let fail = true;
    participant.command('test.do', { success: 'test.done' }, async (_command, { transaction }) => {
      await transaction.query(`INSERT INTO side_effects VALUES ('written')`);
      if (fail) throw new Error('boom');
      return success({ ok: true });
    });
    await assert.rejects(participant.process(command('test.do')), /boom/);
    const rows = async (sql: string): Promise<number> => (await pool.query(sql)).rowCount ?? 0;
    assert.equal(await rows('SELECT * FROM side_effects'), 0);
    assert.equal(await rows('SELECT * FROM sagaflow_participant_outcomes'), 0);
    fail = false;
    const disposition = await participant.process(command('test.do'));
    assert.equal(disposition.kind, 'reply');
    assert.equal(await rows('SELECT * FROM side_effects'), 1);
    assert.equal(await rows('SELECT * FROM sagaflow_participant_outcomes'), 1);
  });

  test('replicas starting at once on an empty database all create the table, none fails', async () => {
    await pool.query('DROP TABLE sagaflow_participant_outcomes');
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => PostgresStore.connect(url)));
    await Promise.all(results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.close()] : [])));
    assert.deepStrictEqual(
      results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : [])),
      [],
    );
    const exists = await pool.query<{ ok: boolean }>(`SELECT to_regclass('sagaflow_participant_outcomes') IS NOT NULL AS ok`);
    assert.equal(exists.rows[0]?.ok, true);
  });

  test('a pool the store made logs an idle connection that PostgreSQL closed, and the process goes on', async () => {
    const errors: unknown[] = [];
    const logger = { info: () => undefined, warn: () => undefined, error: (_m: string, e?: unknown) => errors.push(e) };
    const own = await PostgresStore.connect(url, logger);
    try {
      const pid = await own.withStep(SAGA, 'pid_step', async (tx) => {
        return (await tx.handle.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      });
      // What a PostgreSQL restart does to the idle connections: pg re-emits the error on the pool.
      await pool.query('SELECT pg_terminate_backend($1)', [pid]);
      await waitFor(() => errors.length > 0, 'the idle connection error logged');
      assert.match(String(errors[0]), /terminat/i);
    } finally {
      await own.close();
    }
  });
});

const WAITING_FOR_ADVISORY_LOCK = `SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`;

function command(type: string): InboundMessage {
  const headers: [string, string][] = [
    ['ce_specversion', '1.0'],
    ['ce_id', 'c0ffee00-0000-4000-8000-000000000001'],
    ['ce_source', '/sagaflow'],
    ['ce_type', type],
    ['ce_sagaid', SAGA],
    ['ce_sagastep', 'rollback_step'],
    ['ce_sagaattempt', '1'],
    ['ce_sagaphase', 'command'],
    ['ce_sagareplyto', 'test.replies'],
    ['ce_sagatoken', 'token'],
  ];
  return {
    topic: 'test.commands',
    partition: 0,
    offset: '0',
    key: null,
    value: Buffer.from('{}'),
    headers: headers.map(([n, v]) => [n, Buffer.from(v)]),
  };
}
