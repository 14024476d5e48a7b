package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.Statement;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The lock and the transaction, for both stores. */
class StoreTest {
    private static final Outcome DONE =
            new Outcome("c-1", "payments.authorized", Json.parse("{\"ok\":true}"), false);

    private static OutcomeStore store(String kind) throws Exception {
        return kind.equals("memory") ? new InMemoryStore() : TestDatabase.emptyStore();
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"memory", "postgres"})
    void theLockSerialisesOneSagaStepButNotOthers(String kind) throws Exception {
        OutcomeStore store = store(kind);
        UUID saga = UUID.randomUUID();
        CountDownLatch holding = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        CompletableFuture<Void> first = CompletableFuture.runAsync(() -> call(store, saga, "reserve", () -> {
            holding.countDown();
            release.await(10, TimeUnit.SECONDS);
        }));
        assertTrue(holding.await(10, TimeUnit.SECONDS));

        CountDownLatch otherStep = new CountDownLatch(1);
        CompletableFuture.runAsync(() -> call(store, saga, "capture", otherStep::countDown));
        assertTrue(otherStep.await(10, TimeUnit.SECONDS), "another step is not blocked");

        CountDownLatch sameStep = new CountDownLatch(1);
        CompletableFuture<Void> second = CompletableFuture.runAsync(
                () -> call(store, saga, "reserve", sameStep::countDown));
        assertFalse(sameStep.await(300, TimeUnit.MILLISECONDS), "the same step waits for the lock");
        release.countDown();
        assertTrue(sameStep.await(10, TimeUnit.SECONDS), "and runs once it is released");
        first.get(10, TimeUnit.SECONDS);
        second.get(10, TimeUnit.SECONDS);
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"memory", "postgres"})
    void aThrowingWorkLeavesNothingStored(String kind) throws Exception {
        OutcomeStore store = store(kind);
        UUID saga = UUID.randomUUID();
        assertThrows(IllegalStateException.class, () -> store.withLock(saga, "s", tx -> {
            tx.write(Phase.COMMAND, DONE);
            throw new IllegalStateException("handler failed");
        }));
        assertEquals(Optional.empty(), store.withLock(saga, "s", tx -> tx.read(Phase.COMMAND)));
        store.withLock(saga, "s", tx -> {
            tx.write(Phase.COMMAND, DONE);
            return null;
        });
        Optional<Outcome> stored = store.withLock(saga, "s", tx -> tx.read(Phase.COMMAND));
        assertEquals(DONE, stored.orElseThrow());
        assertEquals(Optional.empty(), store.withLock(saga, "s", tx -> tx.read(Phase.COMPENSATION)));
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"postgres"})
    void handlerWritesShareTheOutcomesTransaction(String kind) throws Exception {
        OutcomeStore store = store(kind);
        try (Connection c = TestDatabase.dataSource().getConnection(); Statement s = c.createStatement()) {
            s.execute("CREATE TABLE IF NOT EXISTS payments (id text PRIMARY KEY)");
            s.execute("TRUNCATE payments");
        }
        UUID saga = UUID.randomUUID();
        assertThrows(IllegalStateException.class, () -> store.withLock(saga, "s", tx -> {
            try (Statement s = tx.connection().orElseThrow().createStatement()) {
                s.execute("INSERT INTO payments VALUES ('p-1')");
            }
            throw new IllegalStateException("failed after its write");
        }));
        try (Connection c = TestDatabase.dataSource().getConnection(); Statement s = c.createStatement();
                var rs = s.executeQuery("SELECT count(*) FROM payments")) {
            rs.next();
            assertEquals(0, rs.getInt(1), "the handler's write was rolled back with the outcome");
        }
    }

    @FunctionalInterface
    private interface Body {
        void run() throws Exception;
    }

    private static void call(OutcomeStore store, UUID saga, String step, Body body) {
        try {
            store.withLock(saga, step, tx -> {
                body.run();
                return null;
            });
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

}
