package dev.sagaflow.participant;

import java.sql.Connection;
import java.util.EnumMap;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;

/** An in-memory {@link OutcomeStore} for tests and demos: a restart forgets every outcome. */
public final class InMemoryStore implements OutcomeStore {
    private record Key(UUID sagaId, String step, Phase phase) {}

    private record StepKey(UUID sagaId, String step) {}

    private final Map<StepKey, ReentrantLock> locks = new ConcurrentHashMap<>();
    private final Map<Key, Outcome> outcomes = new ConcurrentHashMap<>();

    @Override
    public <T> T withLock(UUID sagaId, String step, Work<T> work) throws Exception {
        ReentrantLock lock = locks.computeIfAbsent(new StepKey(sagaId, step), k -> new ReentrantLock());
        lock.lock();
        try {
            // Writes are staged and applied only when the work returns: a throwing handler
            // leaves nothing behind, as a rolled-back database transaction would.
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
        } finally {
            lock.unlock();
        }
    }
}
