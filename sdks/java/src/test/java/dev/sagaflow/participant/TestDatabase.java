package dev.sagaflow.participant;

import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import javax.sql.DataSource;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * The test database {@code sdk_java_test}, dropped and created once per test run on the server
 * of {@code SAGAFLOW_TEST_DATABASE_URL}. Not reachable means the tests fail, not skip.
 */
final class TestDatabase {
    static final String NAME = "sdk_java_test";
    private static DataSource dataSource;

    private TestDatabase() {}

    static synchronized DataSource dataSource() throws SQLException {
        if (dataSource == null) {
            String url = System.getenv().getOrDefault("SAGAFLOW_TEST_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/postgres");
            PostgresUrl admin = PostgresUrl.parse(url);
            Properties credentials = new Properties();
            if (admin.user() != null) {
                credentials.setProperty("user", admin.user());
            }
            if (admin.password() != null) {
                credentials.setProperty("password", admin.password());
            }
            try (Connection connection = DriverManager.getConnection(admin.jdbcUrl(), credentials);
                    Statement statement = connection.createStatement()) {
                statement.execute("DROP DATABASE IF EXISTS " + NAME + " WITH (FORCE)");
                statement.execute("CREATE DATABASE " + NAME);
            }
            URI jdbc = URI.create(admin.jdbcUrl().substring("jdbc:".length()));
            PGSimpleDataSource test = new PGSimpleDataSource();
            test.setURL("jdbc:postgresql://" + jdbc.getRawAuthority() + "/" + NAME
                    + (jdbc.getRawQuery() == null ? "" : "?" + jdbc.getRawQuery()));
            if (admin.user() != null) {
                test.setUser(admin.user());
            }
            if (admin.password() != null) {
                test.setPassword(admin.password());
            }
            dataSource = test;
        }
        return dataSource;
    }

    /** A PostgreSQL store on an empty outcome table. */
    static PostgresStore emptyStore() throws SQLException {
        PostgresStore store = PostgresStore.create(dataSource());
        try (Connection connection = dataSource().getConnection();
                Statement statement = connection.createStatement()) {
            statement.execute("TRUNCATE sagaflow_participant_outcomes");
        }
        return store;
    }
}
