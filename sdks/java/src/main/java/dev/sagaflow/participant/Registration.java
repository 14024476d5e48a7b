package dev.sagaflow.participant;

import java.util.Objects;

/** One registered handler: the phase and type it answers, its success and optional refusal type. */
record Registration(Phase phase, String type, String success, String refusal, Handler handler) {

    Registration {
        Objects.requireNonNull(phase, "phase");
        Objects.requireNonNull(type, "type");
        Objects.requireNonNull(success, "success");
        Objects.requireNonNull(handler, "handler");
        if (phase == Phase.COMPENSATION && refusal != null) {
            throw new IllegalArgumentException("a refusal type is for commands only: " + type);
        }
    }
}
