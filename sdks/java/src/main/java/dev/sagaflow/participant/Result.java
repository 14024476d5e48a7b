package dev.sagaflow.participant;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * What a handler returns: {@link #success(Object)} or {@link #failure(String, Object, boolean)}.
 * A success's reply type is the one registered with the handler, so it carries none.
 *
 * @param failureType the failure's reply type; null for a success
 * @param payload     the reply body
 * @param retryable   for a failure, whether the step's definition calls this type retryable
 */
public record Result(String failureType, JsonNode payload, boolean retryable) {

    /** A success; {@code payload} is a {@link JsonNode} or anything Jackson can convert to one. */
    public static Result success(Object payload) {
        return new Result(null, Json.toTree(payload), false);
    }

    /**
     * A failure of {@code type}. {@code retryable} must match the step's definition: a retryable
     * failure lets the next attempt run the handler again, a non-retryable one is final.
     */
    public static Result failure(String type, Object payload, boolean retryable) {
        if (type == null || type.isEmpty()) {
            throw new IllegalArgumentException("a failure needs its reply type");
        }
        return new Result(type, Json.toTree(payload), retryable);
    }

    public boolean isSuccess() {
        return failureType == null;
    }
}
