package participant

import (
	"context"
	"encoding/json"
	"sync"
)

// Outcome is what a store keeps per (saga id, step, phase): the reply given and to which command.
type Outcome struct {
	CommandID string // the ce_id it answered
	ReplyType string
	Payload   json.RawMessage
	Retryable bool
}

// Outcomes are the stored outcomes of both phases of one (saga id, step); nil when none.
type Outcomes struct {
	Command      *Outcome
	Compensation *Outcome
}

// Save is an outcome to store for one phase, in the same transaction as the handler's work.
type Save struct {
	Phase   Phase
	Outcome Outcome
}

// DecideFunc runs under a store's lock on one (saga id, step). It returns the outcome to store,
// or nil to store nothing; an error rolls everything back.
type DecideFunc func(ctx context.Context, stored Outcomes) (*Save, error)

// Store keeps outcomes and serialises the work on one (saga id, step): a command and a
// compensation of the same step never run at once.
type Store interface {
	// Atomically holds the lock on (sagaID, step), reads both phases' outcomes, calls fn, and
	// stores what fn returns; all or nothing. The ctx given to fn carries the store's
	// transaction, if it has one (see Tx).
	Atomically(ctx context.Context, sagaID, step string, fn DecideFunc) error
}

// MemoryStore keeps outcomes in memory: for tests and demos, a restart forgets everything.
// The handler's own work is not part of any transaction.
type MemoryStore struct {
	mu       sync.Mutex
	locks    map[stepKey]*stepLock
	outcomes map[stepKey]Outcomes
}

type stepKey struct{ sagaID, step string }

// stepLock is a mutex shared by the callers working on one key; users counts them so that the
// entry is dropped when the last one leaves.
type stepLock struct {
	sync.Mutex
	users int
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{locks: map[stepKey]*stepLock{}, outcomes: map[stepKey]Outcomes{}}
}

// Atomically implements Store.
func (s *MemoryStore) Atomically(ctx context.Context, sagaID, step string, fn DecideFunc) error {
	key := stepKey{sagaID, step}
	lock := s.acquire(key)
	defer s.release(key, lock)

	s.mu.Lock()
	stored := s.outcomes[key]
	s.mu.Unlock()
	save, err := fn(ctx, stored)
	if err != nil || save == nil {
		return err
	}
	o := save.Outcome
	if save.Phase == PhaseCommand {
		stored.Command = &o
	} else {
		stored.Compensation = &o
	}
	s.mu.Lock()
	s.outcomes[key] = stored
	s.mu.Unlock()
	return nil
}

func (s *MemoryStore) acquire(key stepKey) *stepLock {
	s.mu.Lock()
	lock, ok := s.locks[key]
	if !ok {
		lock = &stepLock{}
		s.locks[key] = lock
	}
	lock.users++
	s.mu.Unlock()
	lock.Lock()
	return lock
}

func (s *MemoryStore) release(key stepKey, lock *stepLock) {
	lock.Unlock()
	s.mu.Lock()
	lock.users--
	if lock.users == 0 {
		delete(s.locks, key)
	}
	s.mu.Unlock()
}
