package participant

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// createTable is shared by the four participant libraries (protocol/README.md, "Stores").
const createTable = `CREATE TABLE IF NOT EXISTS sagaflow_participant_outcomes (
    saga_id     uuid        NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('command', 'compensation')),
    command_id  text        NOT NULL,
    reply_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    retryable   boolean     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step, phase)
)`

const (
	lockStep     = `SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text || '/' || $2, 0))`
	selectStored = `SELECT phase, command_id, reply_type, payload, retryable
  FROM sagaflow_participant_outcomes WHERE saga_id = $1 AND step = $2`
	upsertOutcome = `INSERT INTO sagaflow_participant_outcomes
  (saga_id, step, phase, command_id, reply_type, payload, retryable)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  ON CONFLICT (saga_id, step, phase) DO UPDATE SET command_id = EXCLUDED.command_id,
    reply_type = EXCLUDED.reply_type, payload = EXCLUDED.payload,
    retryable = EXCLUDED.retryable, recorded_at = now()`
)

// PostgresStore keeps outcomes in PostgreSQL, in the handler's own transaction: the handler
// reaches it with Tx(ctx) and does its writes there, so work and outcome commit together.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// lockCreateTable serialises the creation of the table: two sessions running CREATE TABLE IF
// NOT EXISTS at once on a database without it can both try to create it, and one fails.
const lockCreateTable = `SELECT pg_advisory_xact_lock(hashtextextended('sagaflow_participant_outcomes', 0))`

// NewPostgresStore uses pool and creates the outcomes table when it is missing.
func NewPostgresStore(ctx context.Context, pool *pgxpool.Pool) (*PostgresStore, error) {
	if err := createOutcomesTable(ctx, pool); err != nil {
		return nil, fmt.Errorf("creating sagaflow_participant_outcomes: %w", err)
	}
	return &PostgresStore{pool: pool}, nil
}

// createOutcomesTable creates the table under an advisory lock, so that replicas starting
// together do not race. A library that creates it without the lock (another language's, an
// older version) can still win the race: the unique violation (23505, on pg_type) or
// duplicate_table (42P07) it leaves us then means that the table exists.
func createOutcomesTable(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockCreateTable); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, createTable)
		return err
	})
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) &&
		(pgErr.Code == "23505" || pgErr.Code == "42P07") {
		return nil
	}
	return err
}

type txKey struct{}

// Tx returns the PostgreSQL transaction of the message being handled, or nil when the store is
// not a PostgresStore.
func Tx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(txKey{}).(pgx.Tx)
	return tx
}

// Atomically implements Store: one transaction per message, the advisory lock of
// (saga id, step) first, the upsert last; the caller replies only after the commit.
func (s *PostgresStore) Atomically(ctx context.Context, sagaID, step string, fn DecideFunc) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	// Rollback after a commit is a no-op, so this covers every early return and panic.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if _, err := tx.Exec(ctx, lockStep, sagaID, step); err != nil {
		return fmt.Errorf("locking the step: %w", err)
	}
	stored, err := readOutcomes(ctx, tx, sagaID, step)
	if err != nil {
		return err
	}
	save, err := fn(context.WithValue(ctx, txKey{}, tx), stored)
	if err != nil {
		return err
	}
	if save != nil {
		o := save.Outcome
		_, err := tx.Exec(ctx, upsertOutcome, sagaID, step, string(save.Phase), o.CommandID,
			o.ReplyType, string(o.Payload), o.Retryable)
		if err != nil {
			return fmt.Errorf("storing the outcome: %w", err)
		}
	}
	return tx.Commit(ctx)
}

func readOutcomes(ctx context.Context, tx pgx.Tx, sagaID, step string) (Outcomes, error) {
	rows, err := tx.Query(ctx, selectStored, sagaID, step)
	if err != nil {
		return Outcomes{}, err
	}
	defer rows.Close()
	var stored Outcomes
	for rows.Next() {
		var phase, payload string
		var o Outcome
		if err := rows.Scan(&phase, &o.CommandID, &o.ReplyType, &payload, &o.Retryable); err != nil {
			return Outcomes{}, err
		}
		o.Payload = []byte(payload)
		switch Phase(phase) {
		case PhaseCommand:
			stored.Command = &o
		case PhaseCompensation:
			stored.Compensation = &o
		default:
			return Outcomes{}, errors.New("unexpected phase " + phase)
		}
	}
	return stored, rows.Err()
}
