package participant

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const testDatabase = "sdk_go_test"

var (
	testPoolOnce sync.Once
	testPoolVal  *pgxpool.Pool
	testPoolErr  error
)

// testPool (re)creates the test database once per run. It fails, never skips, when PostgreSQL
// cannot be reached: the PostgreSQL store is part of what these tests check.
func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	testPoolOnce.Do(func() { testPoolVal, testPoolErr = createTestDatabase() })
	if testPoolErr != nil {
		t.Fatalf("PostgreSQL (SAGAFLOW_TEST_DATABASE_URL): %v", testPoolErr)
	}
	return testPoolVal
}

func createTestDatabase() (*pgxpool.Pool, error) {
	ctx := context.Background()
	url := os.Getenv("SAGAFLOW_TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/postgres"
	}
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = admin.Close(ctx) }()
	for _, sql := range []string{
		"DROP DATABASE IF EXISTS " + testDatabase + " WITH (FORCE)",
		"CREATE DATABASE " + testDatabase,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			return nil, err
		}
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.Database = testDatabase
	return pgxpool.NewWithConfig(ctx, cfg)
}

// freshPostgresStore empties the outcomes table: every vector starts from a fresh store.
func freshPostgresStore(t *testing.T) *PostgresStore {
	t.Helper()
	pool := testPool(t)
	store, err := NewPostgresStore(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), "TRUNCATE sagaflow_participant_outcomes"); err != nil {
		t.Fatal(err)
	}
	return store
}

func TestVectorsPostgresStore(t *testing.T) {
	vectors := loadVectors(t)
	for _, name := range sortedNames(vectors) {
		t.Run(name, func(t *testing.T) {
			requireTx := func(ctx context.Context) {
				if Tx(ctx) == nil {
					t.Error("the handler's context carries no transaction")
				}
			}
			runVector(t, vectors[name], freshPostgresStore(t), requireTx)
		})
	}
}

// The handler's writes and the outcome commit together, or not at all.
func TestPostgresStoreRollsBackHandlerWork(t *testing.T) {
	store := freshPostgresStore(t)
	ctx := context.Background()
	pool := testPool(t)
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS work (note text); TRUNCATE work"); err != nil {
		t.Fatal(err)
	}
	write := func(ctx context.Context, fail error) error {
		return store.Atomically(ctx, testSaga, "s", func(ctx context.Context, _ Outcomes) (*Save, error) {
			if _, err := Tx(ctx).Exec(ctx, "INSERT INTO work VALUES ('done')"); err != nil {
				return nil, err
			}
			return &Save{Phase: PhaseCommand, Outcome: Outcome{CommandID: "c1", ReplyType: "ok", Payload: []byte(`{}`)}}, fail
		})
	}
	boom := errors.New("boom")
	if err := write(ctx, boom); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM work") + count(t, pool, "SELECT count(*) FROM sagaflow_participant_outcomes"); n != 0 {
		t.Fatalf("a failed handler left %d rows", n)
	}
	if err := write(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, "SELECT count(*) FROM work") + count(t, pool, "SELECT count(*) FROM sagaflow_participant_outcomes"); n != 2 {
		t.Fatalf("got %d rows, want the work and the outcome", n)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Replicas starting together on a database without the table all succeed.
func TestNewPostgresStoreConcurrently(t *testing.T) {
	pool := testPool(t)
	ctx := context.Background()
	for round := range 10 {
		if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS sagaflow_participant_outcomes"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				if _, err := NewPostgresStore(ctx, pool); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
