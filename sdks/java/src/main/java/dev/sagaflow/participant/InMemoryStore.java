package dev.sagaflow.participant;

import java.sql.Connection;
import java.util.EnumMap;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;

/**
 * An in-memory {@link OutcomeStore} for tests and demos: it keeps every outcome (memory grows
 * with every saga) and a restart forgets them all.
 */
public final class InMemoryStore implements OutcomeStore {
    private record Key(UUID sagaId, String step, Phase phase) {}

    private record StepKey(UUID sagaId, String step) {}

    /** The lock of one (saga id, step) and how many callers hold or wait for it. */
    private static final class StepLock {
        final ReentrantLock lock = new ReentrantLock();
        int users; // changed only inside the map's compute, which is atomic per key
    }

    // Only (saga id, step)s in use have an entry: the last user removes it, so that the locks
    // do not pile up with every step ever handled.
    private final Map<StepKey, StepLock> locks = new ConcurrentHashMap<>();
    private final Map<Key, Outcome> outcomes = new ConcurrentHashMap<>();

    @Override
    public <T> T withLock(UUID sagaId, String step, Work<T> work) throws Exception {
        StepKey key = new StepKey(sagaId, step);
        StepLock held = locks.compute(key, (k, existing) -> {
            StepLock entry = existing == null ? new StepLock() : existing;
            entry.users++;
            return entry;
        });
        held.lock.lock();
        try {
            return locked(sagaId, step, work);
        } finally {
            held.lock.unlock();
            locks.computeIfPresent(key, (k, entry) -> --entry.users == 0 ? null : entry);
        }
    }

    /** The number of (saga id, step)s whose lock is held or awaited; for tests. */
    int lockCount() {
        return locks.size();
    }

    private <T> T locked(UUID sagaId, String step, Work<T> work) throws Exception {
        // Writes are staged and applied only when the work returns: a throwing handler leaves
        // nothing behind, as a rolled-back database transaction would.
        Map<Phase, Outcome> staged = new EnumMap<>(Phase.class);
        T result = work.run(new Transaction() {
            @Override
            public Optional<Outcome> read(Phase phase) {
                Outcome pending = staged.get(phase);
                return Optional.ofNullable(pending != null ? pending
                        : outcomes.get(new Key(sagaId, step, phase)));
            }

            @Override
            public void write(Phase phase, Outcome outcome) {
                staged.put(phase, outcome);
            }

            @Override
            public Optional<Connection> connection() {
                return Optional.empty();
            }
        });
        staged.forEach((phase, outcome) -> outcomes.put(new Key(sagaId, step, phase), outcome));
        return result;
    }
}
