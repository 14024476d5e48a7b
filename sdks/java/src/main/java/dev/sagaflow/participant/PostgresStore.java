package dev.sagaflow.participant;

import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.EnumMap;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import javax.sql.DataSource;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * The PostgreSQL {@link OutcomeStore}, on the table all sagaflow participant libraries share.
 * One transaction per message: an advisory lock on (saga id, step), both phases' rows read, the
 * handler's own writes on the same connection, the outcome upserted, then commit.
 */
public final class PostgresStore implements OutcomeStore {
    static final String CREATE_TABLE = """
            CREATE TABLE IF NOT EXISTS sagaflow_participant_outcomes (
                saga_id     uuid        NOT NULL,
                step        text        NOT NULL,
                phase       text        NOT NULL CHECK (phase IN ('command', 'compensation')),
                command_id  text        NOT NULL,
                reply_type  text        NOT NULL,
                payload     jsonb       NOT NULL,
                retryable   boolean     NOT NULL,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (saga_id, step, phase)
            )""";
    private static final String LOCK =
            "SELECT pg_advisory_xact_lock(hashtextextended(?::uuid::text || '/' || ?, 0))";
    private static final String READ = "SELECT phase, command_id, reply_type, payload::text, retryable"
            + " FROM sagaflow_participant_outcomes WHERE saga_id = ? AND step = ?";
    private static final String UPSERT = """
            INSERT INTO sagaflow_participant_outcomes
                (saga_id, step, phase, command_id, reply_type, payload, retryable)
            VALUES (?, ?, ?, ?, ?, ?::jsonb, ?)
            ON CONFLICT (saga_id, step, phase) DO UPDATE SET
                command_id = EXCLUDED.command_id, reply_type = EXCLUDED.reply_type,
                payload = EXCLUDED.payload, retryable = EXCLUDED.retryable, recorded_at = now()""";

    private final DataSource dataSource;

    private PostgresStore(DataSource dataSource) {
        this.dataSource = dataSource;
    }

    /** A store on {@code dataSource} (ideally a pool); creates the table when missing. */
    public static PostgresStore create(DataSource dataSource) throws SQLException {
        PostgresStore store = new PostgresStore(dataSource);
        store.createTable();
        return store;
    }

    /**
     * A store on a {@code postgres://} or {@code jdbc:postgresql://} URL. No pool: it opens a
     * physical connection per message, which suits tests, demos and low rates; in production
     * use {@link #create(DataSource)} with a pooled DataSource.
     */
    public static PostgresStore connect(String url) throws SQLException {
        PostgresUrl parsed = PostgresUrl.parse(url);
        PGSimpleDataSource dataSource = new PGSimpleDataSource();
        dataSource.setURL(parsed.jdbcUrl());
        if (parsed.user() != null) {
            dataSource.setUser(parsed.user());
        }
        if (parsed.password() != null) {
            dataSource.setPassword(parsed.password());
        }
        return create(dataSource);
    }

    private void createTable() throws SQLException {
        try (Connection connection = dataSource.getConnection();
                Statement statement = connection.createStatement()) {
            statement.execute(CREATE_TABLE);
        } catch (SQLException e) {
            // Two participants creating the table at once: the loser sees a duplicate type.
            if (!"23505".equals(e.getSQLState()) && !"42P07".equals(e.getSQLState())) {
                throw e;
            }
        }
    }

    @Override
    public <T> T withLock(UUID sagaId, String step, Work<T> work) throws Exception {
        try (Connection connection = dataSource.getConnection()) {
            connection.setAutoCommit(false);
            try {
                lock(connection, sagaId, step);
                Map<Phase, Outcome> rows = read(connection, sagaId, step);
                T result = work.run(new PostgresTransaction(connection, sagaId, step, rows));
                connection.commit();
                return result;
            } catch (Exception | Error e) {
                rollback(connection, e);
                throw e;
            }
        }
    }

    /** Rolls back; a failure doing so (a dropped connection) must not hide why we roll back. */
    private static void rollback(Connection connection, Throwable cause) {
        try {
            connection.rollback();
        } catch (SQLException | RuntimeException e) {
            cause.addSuppressed(e);
        }
    }

    private static void lock(Connection connection, UUID sagaId, String step) throws SQLException {
        try (PreparedStatement statement = connection.prepareStatement(LOCK)) {
            statement.setString(1, sagaId.toString());
            statement.setString(2, step);
            statement.execute();
        }
    }

    private static Map<Phase, Outcome> read(Connection connection, UUID sagaId, String step)
            throws SQLException {
        Map<Phase, Outcome> rows = new EnumMap<>(Phase.class);
        try (PreparedStatement statement = connection.prepareStatement(READ)) {
            statement.setObject(1, sagaId);
            statement.setString(2, step);
            try (ResultSet rs = statement.executeQuery()) {
                while (rs.next()) {
                    Phase phase = Phase.fromWire(rs.getString(1)).orElseThrow();
                    rows.put(phase, new Outcome(rs.getString(2), rs.getString(3),
                            Json.parse(rs.getString(4)), rs.getBoolean(5)));
                }
            }
        }
        return rows;
    }

    /** The rows read under the lock, and the upsert of a new outcome. */
    private record PostgresTransaction(
            Connection db, UUID sagaId, String step, Map<Phase, Outcome> rows)
            implements Transaction {

        @Override
        public Optional<Outcome> read(Phase phase) {
            return Optional.ofNullable(rows.get(phase));
        }

        @Override
        public void write(Phase phase, Outcome outcome) throws SQLException {
            try (PreparedStatement statement = db.prepareStatement(UPSERT)) {
                statement.setObject(1, sagaId);
                statement.setString(2, step);
                statement.setString(3, phase.wireName());
                statement.setString(4, outcome.commandId());
                statement.setString(5, outcome.replyType());
                statement.setString(6, new String(Json.bytes(outcome.payload()), StandardCharsets.UTF_8));
                statement.setBoolean(7, outcome.retryable());
                statement.executeUpdate();
            }
            rows.put(phase, outcome);
        }

        @Override
        public Optional<Connection> connection() {
            return Optional.of(db);
        }
    }
}
