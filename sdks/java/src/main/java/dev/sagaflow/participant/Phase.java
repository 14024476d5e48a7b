package dev.sagaflow.participant;

import java.util.Optional;

/** The saga phase a message belongs to: the {@code ce_sagaphase} attribute. */
public enum Phase {
    COMMAND("command"),
    COMPENSATION("compensation");

    private final String wireName;

    Phase(String wireName) {
        this.wireName = wireName;
    }

    /** The value of {@code ce_sagaphase}, also the {@code phase} column of the outcome table. */
    public String wireName() {
        return wireName;
    }

    static Optional<Phase> fromWire(String value) {
        for (Phase phase : values()) {
            if (phase.wireName.equals(value)) {
                return Optional.of(phase);
            }
        }
        return Optional.empty();
    }
}
