package dev.sagaflow.participant;

import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;

/**
 * A libpq-style URL ({@code postgres://user:password@host:port/db?sslmode=...}) as the JDBC
 * driver wants it. JDBC URLs ({@code jdbc:postgresql://...}) pass through unchanged.
 */
record PostgresUrl(String jdbcUrl, String user, String password) {

    static PostgresUrl parse(String url) {
        if (url.startsWith("jdbc:")) {
            return new PostgresUrl(url, null, null);
        }
        URI uri = URI.create(url);
        if (!"postgres".equals(uri.getScheme()) && !"postgresql".equals(uri.getScheme())) {
            throw new IllegalArgumentException("not a PostgreSQL URL: " + uri.getScheme() + "://…");
        }
        String user = null;
        String password = null;
        String userInfo = uri.getRawUserInfo();
        if (userInfo != null) {
            int colon = userInfo.indexOf(':');
            user = decode(colon < 0 ? userInfo : userInfo.substring(0, colon));
            password = colon < 0 ? null : decode(userInfo.substring(colon + 1));
        }
        String host = uri.getHost() == null ? "localhost" : uri.getHost();
        String port = uri.getPort() < 0 ? "" : ":" + uri.getPort();
        String path = uri.getRawPath() == null || uri.getRawPath().isEmpty() ? "/" : uri.getRawPath();
        String query = uri.getRawQuery() == null ? "" : "?" + uri.getRawQuery();
        return new PostgresUrl("jdbc:postgresql://" + host + port + path + query, user, password);
    }

    private static String decode(String text) {
        return URLDecoder.decode(text, StandardCharsets.UTF_8);
    }
}
