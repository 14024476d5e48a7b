package dev.sagaflow.participant;

/** A message that cannot be a command; its message is the dead-letter reason. */
final class DecodeException extends Exception {
    private static final long serialVersionUID = 1L;

    DecodeException(String reason) {
        super(reason, null, false, false);
    }

    static DecodeException missing(String attribute) {
        return new DecodeException("missing CloudEvents attribute `" + attribute + "`");
    }

    static DecodeException invalid(String attribute, String why) {
        return new DecodeException("attribute `" + attribute + "` is invalid: " + why);
    }
}
