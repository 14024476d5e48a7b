package dev.sagaflow.participant;

/**
 * The work for one command or compensation type. It may throw anything: the store is rolled
 * back, nothing is sent, and the same message is tried again after a backoff.
 */
@FunctionalInterface
public interface Handler {
    Result handle(Command command) throws Exception;
}
