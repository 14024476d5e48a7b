// Every protocol vector against the PostgreSQL store, plus the store's lock and rollback.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { Participant, PostgresStore, success } from '../src/index.js';
import type { InboundMessage } from '../src/index.js';
import { freshTestDatabase } from './pg-setup.js';
import { loadVector, runVector, vectorFiles } from './vector-runner.js';

const SAGA = '019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b';
let pool: pg.Pool;
let store: PostgresStore;

before(async () => {
  pool = new pg.Pool({ connectionString: await freshTestDatabase() });
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
    await waitFor(async () => (await pool.query(WAITING_FOR_ADVISORY_LOCK)).rowCount === 1);
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
});

const WAITING_FOR_ADVISORY_LOCK = `SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`;

/** Polls `condition` until it holds, failing after a deadline (never a fixed sleep). */
async function waitFor(condition: () => Promise<boolean>, deadlineMs = 5000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail('condition not met before the deadline');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

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
