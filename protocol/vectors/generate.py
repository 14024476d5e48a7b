#!/usr/bin/env python3
"""Writes protocol/vectors/*.json, the shared test vectors of the participant libraries.

The vectors are data; this script only spares their author from typing command ids,
tokens and headers by hand. Run it after changing it and commit both:

    python3 protocol/vectors/generate.py

The format is described in protocol/README.md.
"""
import base64
import hashlib
import json
import pathlib
import uuid

HERE = pathlib.Path(__file__).resolve().parent
SAGA = "019a2b3c-4d5e-7f60-8a1b-2c3d4e5f6a7b"
TRACE = "0af7651916cd43dd8448eb211c80319c"
REPLY_TOPIC = "orders.saga-replies"
COMMAND_TOPIC = "payments.commands"
DLQ = "payments.dead-letter"

PARTICIPANT = {
    "source": "/payments",
    "dead_letter_topic": DLQ,
    "handlers": [
        {"phase": "command", "type": "payments.authorize",
         "success": "payments.authorized", "refusal": "payments.declined"},
        {"phase": "compensation", "type": "payments.void_authorization",
         "success": "payments.authorization_voided"},
        # A step that declares no failure type: a command after its compensation gets no reply.
        {"phase": "command", "type": "payments.send_receipt", "success": "payments.receipt_sent"},
    ],
}


def command_id(step, phase, attempt):
    return str(uuid.uuid5(uuid.UUID(SAGA), f"{phase}/{step}/{attempt}"))


def token(cid):
    # Opaque to participants: any 43 base64url characters do. These are derived from the
    # command id only so that each command has its own.
    digest = hashlib.sha256(b"vector-key/" + cid.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def span_for(cid):
    return hashlib.sha256(cid.encode()).hexdigest()[:16]


def command(step="authorize_payment", phase="command", attempt=1, ctype="payments.authorize",
            payload=None, offset=0, key="cus-5531", extra=(), drop=(), replace=None,
            tracestate=None, body=None):
    cid = command_id(step, phase, attempt)
    headers = [
        ["ce_specversion", "1.0"],
        ["ce_id", cid],
        ["ce_source", "/sagaflow"],
        ["ce_type", ctype],
        ["ce_time", "2025-06-02T09:14:03.120Z"],
        ["content-type", "application/json"],
        ["ce_sagaid", SAGA],
        ["ce_sagadefinition", "order-fulfilment"],
        ["ce_sagastep", step],
        ["ce_sagaattempt", str(attempt)],
        ["ce_sagaphase", phase],
        ["ce_sagareplyto", REPLY_TOPIC],
        ["traceparent", f"00-{TRACE}-{span_for(cid)}-01"],
    ]
    if tracestate:
        headers.append(["tracestate", tracestate])
    headers.append(["ce_sagatoken", token(cid)])
    headers += [list(h) for h in extra]
    headers = [h for h in headers if h[0] not in drop]
    for name, value in (replace or {}).items():
        headers = [[h[0], value] if h[0] == name else h for h in headers]
    if payload is None:
        payload = {"amount": 74.97, "currency": "EUR", "customer_id": "cus-5531", "order_id": "ord-20417"}
    value = body if body is not None else json.dumps(payload, separators=(",", ":"))
    message = {"topic": COMMAND_TOPIC, "partition": 3, "offset": offset, "key": key,
               "headers": headers, "value": value}
    call = {"id": cid, "type": ctype, "phase": phase, "saga_id": SAGA, "definition": "order-fulfilment",
            "step": step, "attempt": attempt, "reply_to": REPLY_TOPIC, "token": token(cid),
            "payload": payload}
    return message, call


def reply(message, reply_type, body, tracestate=None):
    h = {k.lower(): v for k, v in reversed(message["headers"])}
    headers = {
        "ce_specversion": "1.0",
        "ce_source": PARTICIPANT["source"],
        "ce_type": reply_type,
        "content-type": "application/json",
        "ce_sagaid": h["ce_sagaid"],
        "ce_sagastep": h["ce_sagastep"],
        "ce_sagaattempt": h["ce_sagaattempt"],
        "ce_sagaphase": h["ce_sagaphase"],
        "ce_sagatoken": h["ce_sagatoken"],
    }
    if tracestate:
        headers["tracestate"] = tracestate
    return {"reply": {
        "topic": h["ce_sagareplyto"],
        "key": h["ce_sagaid"],
        "headers": headers,
        "generated": {"ce_id": "uuid", "ce_time": "rfc3339",
                      "traceparent": "child_of:" + h["traceparent"]},
        "body": body,
    }}


def dead_letter(message, reason_prefix):
    return {"dead_letter": {
        "topic": DLQ,
        "key": message["key"],
        "value": message["value"],
        "headers": message["headers"] + [
            ["dlq-reason", {"prefix": reason_prefix}],
            ["dlq-original-topic", message["topic"]],
            ["dlq-original-partition", str(message["partition"])],
            ["dlq-original-offset", str(message["offset"])],
        ],
    }}


AUTH = {"authorization_id": "auth-7f3a"}
DECLINED = {"error": "insufficient funds"}
REFUSED = {"error": "the step was compensated before it ran"}


def step(message, call=None, result=None, expect=None):
    s = {"message": message, "handler": None if call is None else {"call": call, "result": result}}
    s["expect"] = expect
    return s


def success(payload):
    return {"success": payload}


def failure(t, payload, retryable):
    return {"failure": {"type": t, "payload": payload, "retryable": retryable}}


def vectors():
    v = {}

    m, c = command()
    v["command-success"] = ("A command is handed to its handler once; the success reply copies the saga "
                            "attributes and the token, in binary mode, to the topic in ce_sagareplyto, keyed "
                            "by the saga id. Custom headers (x-idempotency-key) are not copied.",
                            [step(*_with_extra(m, c), success(AUTH), reply(m, "payments.authorized", AUTH))])

    m, c = command()
    v["command-failure"] = ("A non-retryable failure: the reply carries the failure type and data.",
                            [step(m, c, failure("payments.declined", DECLINED, False),
                                  reply(m, "payments.declined", DECLINED))])

    m, c = command()
    v["repeat-same-id"] = ("The same command twice (redelivery): the handler runs once, the repeat gets the "
                           "stored outcome in a new reply with its own ce_id.",
                           [step(m, c, success(AUTH), reply(m, "payments.authorized", AUTH)),
                            step(dict(m, offset=1), None, None, reply(m, "payments.authorized", AUTH))])

    m1, c1 = command()
    m2, _ = command(attempt=2, offset=1)
    v["new-attempt-after-success"] = (
        "Attempt 2 after a success (the first reply was late): the stored success again, with attempt 2's "
        "ce_sagaattempt and ce_sagatoken; the handler does not run again.",
        [step(m1, c1, success(AUTH), reply(m1, "payments.authorized", AUTH)),
         step(m2, None, None, reply(m2, "payments.authorized", AUTH))])

    m1, c1 = command()
    m2, _ = command(attempt=2, offset=1)
    v["new-attempt-after-failure"] = (
        "Attempt 2 after a non-retryable failure gets the stored failure; the handler does not run again.",
        [step(m1, c1, failure("payments.declined", DECLINED, False), reply(m1, "payments.declined", DECLINED)),
         step(m2, None, None, reply(m2, "payments.declined", DECLINED))])

    busy = {"error": "gateway busy"}
    m1, c1 = command()
    m2, c2 = command(attempt=2, offset=2)
    v["retryable-failure"] = (
        "A retryable failure: a repeat of the same attempt gets the same failure without running the handler; "
        "a new attempt is evaluated afresh, and its outcome is the one stored from then on.",
        [step(m1, c1, failure("payments.gateway_timeout", busy, True),
              reply(m1, "payments.gateway_timeout", busy)),
         step(dict(m1, offset=1), None, None, reply(m1, "payments.gateway_timeout", busy)),
         step(m2, c2, success(AUTH), reply(m2, "payments.authorized", AUTH)),
         step(dict(m2, offset=3), None, None, reply(m2, "payments.authorized", AUTH))])

    comp_payload = {"authorization_id": "auth-7f3a", "order_id": "ord-20417"}
    undone = {"voided": True}
    m1, c1 = command()
    m2, c2 = command(phase="compensation", ctype="payments.void_authorization", payload=comp_payload, offset=1)
    v["compensation-after-success"] = (
        "The compensation of a step that succeeded here runs its handler.",
        [step(m1, c1, success(AUTH), reply(m1, "payments.authorized", AUTH)),
         step(m2, c2, success(undone), reply(m2, "payments.authorization_voided", undone)),
         step(dict(m2, offset=2), None, None, reply(m2, "payments.authorization_voided", undone))])

    m, _ = command(phase="compensation", ctype="payments.void_authorization", payload=comp_payload)
    v["compensation-never-ran"] = (
        "The compensation of a step never seen here (it timed out at sagaflow before reaching us) is a no-op "
        "success with an empty object; the handler does not run.",
        [step(m, None, None, reply(m, "payments.authorization_voided", {}))])

    m1, c1 = command()
    m2, _ = command(phase="compensation", ctype="payments.void_authorization", payload=comp_payload, offset=1)
    v["compensation-after-failure"] = (
        "The compensation of a step that failed here (nothing was done) is a no-op success; the handler does "
        "not run.",
        [step(m1, c1, failure("payments.declined", DECLINED, False), reply(m1, "payments.declined", DECLINED)),
         step(m2, None, None, reply(m2, "payments.authorization_voided", {}))])

    m1, _ = command(phase="compensation", ctype="payments.void_authorization", payload=comp_payload)
    m2, _ = command(offset=1)
    v["command-after-compensation"] = (
        "A command that arrives after its compensation is refused with the handler's refusal type and the "
        "fixed body; the handler never runs, and a repeat gets the same refusal.",
        [step(m1, None, None, reply(m1, "payments.authorization_voided", {})),
         step(m2, None, None, reply(m2, "payments.declined", REFUSED)),
         step(dict(m2, offset=2), None, None, reply(m2, "payments.declined", REFUSED))])

    busy = {"error": "gateway busy"}
    m1, c1 = command()
    m2, _ = command(phase="compensation", ctype="payments.void_authorization", payload=comp_payload, offset=1)
    m3, _ = command(attempt=2, offset=2)
    v["command-after-compensation-retryable"] = (
        "A retryable failure, then the compensation (nothing to undo), then a new attempt: the new attempt is "
        "refused, not evaluated afresh, since the step is compensated. The refusal replaces the stored outcome, "
        "so a late repeat of the failed attempt gets the refusal too (one outcome per saga, step and phase).",
        [step(m1, c1, failure("payments.gateway_timeout", busy, True), reply(m1, "payments.gateway_timeout", busy)),
         step(m2, None, None, reply(m2, "payments.authorization_voided", {})),
         step(m3, None, None, reply(m3, "payments.declined", REFUSED)),
         step(dict(m1, offset=3), None, None, reply(m1, "payments.declined", REFUSED))])

    m1, _ = command(step="send_receipt", phase="compensation", ctype="payments.void_authorization",
                    payload={})
    m2, _ = command(step="send_receipt", ctype="payments.send_receipt", payload={"order_id": "ord-20417"},
                    offset=1)
    v["command-after-compensation-no-refusal"] = (
        "The same for a command type registered without a refusal type (its step declares no failure type): "
        "no reply at all; the message is skipped.",
        [step(m1, None, None, reply(m1, "payments.authorization_voided", {})),
         step(m2, None, None, {"skip": True})])

    m, c = command(tracestate="vendor=abc,other=1")
    v["trace-context"] = (
        "The reply continues the command's trace (same trace id and flags, a new span id) and copies "
        "tracestate.",
        [step(m, c, success(AUTH), reply(m, "payments.authorized", AUTH, tracestate="vendor=abc,other=1"))])

    m, c = command()
    shuffled = [[n.upper() if n.startswith("ce_saga") else n.replace("ce_", "Ce_"), val]
                for n, val in m["headers"]]
    first = dict(m, headers=shuffled + [["ce_sagastep", "not_this_one"]])
    v["header-names"] = (
        "Header names are compared case-insensitively, and when a name repeats the first value is read.",
        [step(first, c, success(AUTH), reply(m, "payments.authorized", AUTH))])

    m, c = command()
    v["structured-mode"] = (
        "A command in structured mode (content-type application/cloudevents+json): the attributes are JSON "
        "members, the data is in `data`, sagaattempt may be a number. The reply is in binary mode.",
        [step(_structured(m), c, success(AUTH), reply(m, "payments.authorized", AUTH))])

    m, _ = command(ctype="payments.refund")
    v["unknown-type"] = (
        "A command type no handler is registered for goes to the dead-letter topic with its reason; nothing "
        "is answered.",
        [step(m, None, None, dead_letter(m, "unknown command type `payments.refund`"))])

    m, _ = command(phase="compensation", ctype="payments.refund_reversal", payload={})
    v["unknown-compensation-type"] = (
        "The same for a compensation type.",
        [step(m, None, None, dead_letter(m, "unknown compensation type `payments.refund_reversal`"))])

    v["bad-envelopes"] = ("Messages that are not commands sagaflow could have sent go to the dead-letter "
                          "topic with the reason; the handler never runs.", _bad_envelopes())
    return v


def _with_extra(m, c):
    m = dict(m, headers=m["headers"] + [["x-idempotency-key", "authorize-" + SAGA]])
    return m, c


def _structured(m):
    h = {k: v for k, v in m["headers"]}
    event = {"specversion": "1.0", "id": h["ce_id"], "source": h["ce_source"], "type": h["ce_type"],
             "time": h["ce_time"], "datacontenttype": "application/json", "sagaid": h["ce_sagaid"],
             "sagadefinition": h["ce_sagadefinition"], "sagastep": h["ce_sagastep"],
             "sagaattempt": int(h["ce_sagaattempt"]), "sagaphase": h["ce_sagaphase"],
             "sagareplyto": h["ce_sagareplyto"], "sagatoken": h["ce_sagatoken"],
             "traceparent": h["traceparent"], "data": json.loads(m["value"])}
    return dict(m, headers=[["content-type", "application/cloudevents+json; charset=utf-8"]],
                value=json.dumps(event, separators=(",", ":")))


def _bad_envelopes():
    cases = [
        (dict(drop=("ce_specversion",)), "missing CloudEvents attribute `specversion`"),
        (dict(replace={"ce_specversion": "0.3"}), "unsupported specversion `0.3` (expected 1.0)"),
        (dict(drop=("ce_id",)), "missing CloudEvents attribute `id`"),
        (dict(drop=("ce_type",)), "missing CloudEvents attribute `type`"),
        (dict(drop=("ce_sagaid",)), "missing CloudEvents attribute `sagaid`"),
        (dict(replace={"ce_sagaid": "order-17"}), "attribute `sagaid` is invalid"),
        (dict(drop=("ce_sagastep",)), "missing CloudEvents attribute `sagastep`"),
        (dict(drop=("ce_sagaattempt",)), "missing CloudEvents attribute `sagaattempt`"),
        (dict(replace={"ce_sagaattempt": "one"}), "attribute `sagaattempt` is invalid"),
        (dict(replace={"ce_sagaattempt": "0"}), "attribute `sagaattempt` is invalid"),
        (dict(drop=("ce_sagaphase",)), "missing CloudEvents attribute `sagaphase`"),
        (dict(replace={"ce_sagaphase": "undo"}), "attribute `sagaphase` is invalid"),
        (dict(drop=("ce_sagareplyto",)), "missing CloudEvents attribute `sagareplyto`"),
        (dict(drop=("ce_sagatoken",)), "missing CloudEvents attribute `sagatoken`"),
        (dict(body="{\"amount\": 74.97"), "body is not valid JSON"),
        (dict(extra=[["x-note", {"base64": base64.b64encode(b"caf\xe9").decode()}]]),
         "header `x-note` is not valid UTF-8"),
    ]
    steps = []
    for offset, (kwargs, reason) in enumerate(cases):
        m, _ = command(offset=offset, **kwargs)
        steps.append(step(m, None, None, dead_letter(m, reason)))
    # Structured mode: the body must be a JSON object, core attributes strings.
    m, _ = command(offset=len(steps))
    s = _structured(m)
    s = dict(s, value="[1, 2]")
    steps.append(step(s, None, None, dead_letter(s, "body is not valid JSON")))
    s = _structured(command(offset=len(steps))[0])
    event = json.loads(s["value"])
    event["id"] = 42
    s = dict(s, value=json.dumps(event, separators=(",", ":")))
    steps.append(step(s, None, None, dead_letter(s, "attribute `id` is invalid: must be a string")))
    return steps


def main():
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, (description, steps) in vectors().items():
        doc = {"description": description, "participant": PARTICIPANT, "steps": steps}
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
