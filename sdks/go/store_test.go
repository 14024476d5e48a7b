package participant

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// holdLock runs Atomically on (testSaga, step) in the background and keeps the lock until
// release is closed; entered is closed once fn runs.
func holdLock(store Store, step string, release <-chan struct{}) (entered, done chan struct{}) {
	entered, done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = store.Atomically(context.Background(), testSaga, step, func(context.Context, Outcomes) (*Save, error) {
			close(entered)
			<-release
			return nil, nil
		})
	}()
	return entered, done
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkLockSerialisesStep: while one caller holds (saga, step), a second one for the same key
// waits (seen through waiting()) and runs only after release; another step is not blocked.
func checkLockSerialisesStep(t *testing.T, store Store, waiting func() bool) {
	release1 := make(chan struct{})
	entered1, done1 := holdLock(store, "reserve", release1)
	<-entered1

	release2 := make(chan struct{})
	close(release2)
	entered2, done2 := holdLock(store, "reserve", release2)
	eventually(t, "the second caller to wait on the lock", waiting)
	select {
	case <-entered2:
		t.Fatal("two callers held the lock of one (saga, step) at once")
	default:
	}

	var otherRan atomic.Bool
	_ = store.Atomically(context.Background(), testSaga, "ship", func(context.Context, Outcomes) (*Save, error) {
		otherRan.Store(true)
		return nil, nil
	})
	if !otherRan.Load() {
		t.Fatal("another step was blocked")
	}

	close(release1)
	<-done1
	<-entered2
	<-done2
}

func TestMemoryStoreLockSerialisesStep(t *testing.T) {
	store := NewMemoryStore()
	checkLockSerialisesStep(t, store, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		l := store.locks[stepKey{testSaga, "reserve"}]
		return l != nil && l.users == 2
	})
	if len(store.locks) != 0 {
		t.Fatalf("%d locks left behind", len(store.locks))
	}
}

func TestPostgresStoreLockSerialisesStep(t *testing.T) {
	store := freshPostgresStore(t)
	pool := testPool(t)
	checkLockSerialisesStep(t, store, func() bool {
		return count(t, pool, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == 1
	})
}

func TestMemoryStoreKeepsNothingOnError(t *testing.T) {
	store := NewMemoryStore()
	save := &Save{Phase: PhaseCommand, Outcome: Outcome{CommandID: "c", ReplyType: "t", Payload: []byte(`{}`)}}
	_ = store.Atomically(context.Background(), testSaga, "s", func(context.Context, Outcomes) (*Save, error) {
		return save, context.Canceled
	})
	_ = store.Atomically(context.Background(), testSaga, "s", func(_ context.Context, stored Outcomes) (*Save, error) {
		if stored.Command != nil || stored.Compensation != nil {
			t.Error("an outcome was stored although fn failed")
		}
		return nil, nil
	})
}
