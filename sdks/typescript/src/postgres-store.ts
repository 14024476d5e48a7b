// The PostgreSQL store: one transaction per message, serialised per (saga id, step) by a transaction-level
// advisory lock whose key every participant library computes the same way.
import pg from 'pg';
import { consoleLogger } from './log.js';
import type { Logger } from './log.js';
import type { Store, StepOutcomes, StepTransaction } from './store.js';
import type { Outcome, Phase } from './types.js';

export const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS sagaflow_participant_outcomes (
    saga_id     uuid        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('command', 'compensation')),
    command_id  text        NOT NULL,
    reply_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    retryable   boolean     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step, phase)
)`;

// Replicas starting at once on an empty database would race in CREATE TABLE IF NOT EXISTS (it is not atomic:
// the loser fails with 23505 or 42P07). This lock serialises them; the key is the one every library uses.
const CREATE_LOCK = `SELECT pg_advisory_xact_lock(hashtextextended('sagaflow_participant_outcomes', 0))`;
const LOCK = `SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text || '/' || $2, 0))`;
const READ = `SELECT phase, command_id, reply_type, payload, retryable
    FROM sagaflow_participant_outcomes WHERE saga_id = $1 AND step = $2`;
const UPSERT = `INSERT INTO sagaflow_participant_outcomes (saga_id, step, phase, command_id, reply_type, payload, retryable)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
    ON CONFLICT (saga_id, step, phase) DO UPDATE SET command_id = EXCLUDED.command_id,
        reply_type = EXCLUDED.reply_type, payload = EXCLUDED.payload, retryable = EXCLUDED.retryable,
        recorded_at = now()`;

interface OutcomeRow {
  phase: Phase;
  command_id: string;
  reply_type: string;
  payload: unknown;
  retryable: boolean;
}

export class PostgresStore implements Store<pg.PoolClient> {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly ownsPool: boolean,
  ) {}

  /**
   * Connects with a connection string (or an existing pool) and creates the table when it is missing. A pool made
   * here gets an 'error' listener that logs: pg re-emits the errors of idle connections (a PostgreSQL restart) on
   * the pool, and an unlistened 'error' event would end the process. A pool passed in needs its own listener.
   */
  static async connect(target: string | pg.Pool, logger: Logger = consoleLogger): Promise<PostgresStore> {
    const ownsPool = typeof target === 'string';
    const pool = ownsPool ? new pg.Pool({ connectionString: target }) : target;
    if (ownsPool) {
      pool.on('error', (error) => logger.error('an idle PostgreSQL connection failed; the pool will open another', error));
    }
    const store = new PostgresStore(pool, ownsPool);
    try {
      await createTable(pool);
    } catch (error) {
      if (ownsPool) await pool.end();
      throw error;
    }
    return store;
  }

  async withStep<T>(sagaId: string, step: string, work: (tx: StepTransaction<pg.PoolClient>) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: unknown;
    try {
      await client.query('BEGIN');
      await client.query(LOCK, [sagaId, step]);
      const outcomes = await readOutcomes(client, sagaId, step);
      const save = async (phase: Phase, outcome: Outcome): Promise<void> => {
        const values = [sagaId, step, phase, outcome.commandId, outcome.replyType, JSON.stringify(outcome.payload ?? null)];
        await client.query(UPSERT, [...values, outcome.retryable]);
      };
      const result = await work({ outcomes, handle: client, save });
      await client.query('COMMIT');
      return result;
    } catch (error) {
      broken = await rollback(client);
      throw error;
    } finally {
      // A connection whose rollback failed is in an unknown state: destroy it rather than reuse it.
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  async close(): Promise<void> {
    if (this.ownsPool) await this.pool.end();
  }
}

async function createTable(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  let broken: unknown;
  try {
    await client.query('BEGIN');
    await client.query(CREATE_LOCK);
    await client.query(CREATE_TABLE);
    await client.query('COMMIT');
  } catch (error) {
    broken = await rollback(client);
    throw error;
  } finally {
    client.release(broken instanceof Error ? broken : undefined);
  }
}

async function readOutcomes(client: pg.PoolClient, sagaId: string, step: string): Promise<StepOutcomes> {
  const { rows } = await client.query<OutcomeRow>(READ, [sagaId, step]);
  const find = (phase: Phase): Outcome | undefined => {
    const row = rows.find((r) => r.phase === phase);
    return row && { commandId: row.command_id, replyType: row.reply_type, payload: row.payload, retryable: row.retryable };
  };
  return { command: find('command'), compensation: find('compensation') };
}

async function rollback(client: pg.PoolClient): Promise<unknown> {
  try {
    await client.query('ROLLBACK');
    return undefined;
  } catch (error) {
    return error;
  }
}
