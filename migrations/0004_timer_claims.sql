-- Replicas share due timers. Each claims a batch for a short lease (FOR UPDATE SKIP
-- LOCKED, so two replicas never claim the same row), fires it, and the firing
-- transaction deletes the rows. If the replica dies, the lease expires and another
-- replica claims the rows again.
ALTER TABLE timers ADD COLUMN claimed_until TIMESTAMPTZ;
-- A row that cannot be read is parked with its reason: never claimed again, never spun on.
ALTER TABLE timers ADD COLUMN parked_reason TEXT;

DROP INDEX timers_due;
CREATE INDEX timers_due ON timers (due_at) WHERE parked_reason IS NULL;
