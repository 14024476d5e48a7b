package dev.sagaflow.participant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.junit.jupiter.api.Test;
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

    @Test
    void aFailedRollbackDoesNotHideWhyTheWorkFailed() throws Exception {
        DataSource real = TestDatabase.dataSource();
        OutcomeStore store = PostgresStore.create(proxy(DataSource.class, (method, args) -> {
            Object result = method.invoke(real, args);
            return method.getName().equals("getConnection")
                    ? proxy(Connection.class, (m, a) -> {
                        Object r = m.invoke(result, a);
                        if (m.getName().equals("rollback")) {
                            throw new SQLException("connection lost");
                        }
                        return r;
                    })
                    : result;
        }));
        IllegalStateException thrown = assertThrows(IllegalStateException.class,
                () -> store.withLock(UUID.randomUUID(), "s", tx -> {
                    throw new IllegalStateException("handler failed");
                }));
        assertEquals("handler failed", thrown.getMessage());
        assertEquals("connection lost", thrown.getSuppressed()[0].getMessage());
    }

    @Test
    void theInMemoryStoreDropsIdleLocks() throws Exception {
        InMemoryStore store = new InMemoryStore();
        UUID saga = UUID.randomUUID();
        int[] counter = {0}; // guarded by the store's lock only
        List<CompletableFuture<Void>> workers = new ArrayList<>();
        for (int w = 0; w < 8; w++) {
            workers.add(CompletableFuture.runAsync(() -> {
                for (int i = 0; i < 200; i++) {
                    call(store, saga, "reserve", () -> {
                        int seen = counter[0];
                        Thread.yield();
                        counter[0] = seen + 1;
                    });
                }
            }));
        }
        CompletableFuture.allOf(workers.toArray(new CompletableFuture<?>[0])).get(30, TimeUnit.SECONDS);
        assertEquals(1600, counter[0], "still one holder at a time");
        call(store, saga, "other", () -> assertEquals(1, store.lockCount(), "held: present"));
        assertEquals(0, store.lockCount(), "no lock is kept once idle");
    }

    /** An invocation handler that may throw anything; target exceptions are unwrapped. */
    @FunctionalInterface
    private interface Calls {
        Object call(Method method, Object[] args) throws Throwable;
    }

    private static <T> T proxy(Class<T> type, Calls calls) {
        return type.cast(Proxy.newProxyInstance(type.getClassLoader(), new Class<?>[] {type},
                (self, method, args) -> {
                    try {
                        return calls.call(method, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                }));
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
