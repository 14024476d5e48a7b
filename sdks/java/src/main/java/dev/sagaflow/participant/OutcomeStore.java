package dev.sagaflow.participant;

import java.sql.Connection;
import java.util.Optional;
import java.util.UUID;

/**
 * Keeps one {@link Outcome} per (saga id, step, phase) and serialises the work on one
 * (saga id, step), so that a command and a compensation of one step never run at once.
 */
public interface OutcomeStore {

    /**
     * Runs {@code work} holding the lock on (saga id, step) inside one transaction: its writes
     * are kept when it returns and dropped when it throws.
     */
    <T> T withLock(UUID sagaId, String step, Work<T> work) throws Exception;

    /** The work done under the lock. */
    @FunctionalInterface
    interface Work<T> {
        T run(Transaction transaction) throws Exception;
    }

    /** The outcomes of the locked (saga id, step), read and written within the transaction. */
    interface Transaction {
        Optional<Outcome> read(Phase phase) throws Exception;

        void write(Phase phase, Outcome outcome) throws Exception;

        /** The open database transaction a handler may write in; empty for in-memory stores. */
        Optional<Connection> connection();
    }
}
