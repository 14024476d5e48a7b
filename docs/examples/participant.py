#!/usr/bin/env python3
"""A sagaflow participant in Python (docs/protocol.md explains every part of it).

It plays the inventory, payments and shipping services of sagas/order-fulfilment.yaml:
it consumes their commands and compensations and answers each one on the reply topic
the command names. Every command succeeds, except the commands of the steps listed in
FAIL_STEPS, which get their failure reply type (or FAILURE_TYPE, if set).

    pip install confluent-kafka==2.16.1
    BOOTSTRAP_SERVERS=localhost:9092 \
    COMMAND_TOPICS=inventory.commands,payments.commands,shipping.commands \
    python participant.py
"""
import argparse, json, logging, os, signal, uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaException, Producer

# What this service answers, by command type: (success type, failure type or None,
# the field of its success reply that later steps of the saga read).
SERVICES = {
    "inventory.reserve_stock": ("inventory.stock_reserved", "inventory.out_of_stock", "reservation_id"),
    "inventory.release_stock": ("inventory.stock_released", None, None),
    "payments.authorize": ("payments.authorized", "payments.declined", "authorization_id"),
    "payments.void_authorization": ("payments.authorization_voided", None, None),
    "payments.capture": ("payments.captured", "payments.capture_rejected", "payment_id"),
    "shipping.create_shipment": ("shipping.shipment_created", "shipping.carrier_unavailable", "tracking_number"),
}
# More (or other) commands: REPLY_TYPES='{"billing.open": ["billing.opened", "billing.refused", "id"]}'
SERVICES.update({k: tuple(v) for k, v in json.loads(os.environ.get("REPLY_TYPES", "{}")).items()})

log = logging.getLogger("participant")


def args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap-servers", default=env("BOOTSTRAP_SERVERS", "localhost:9092"))
    p.add_argument("--topics", default=env("COMMAND_TOPICS", ""), help="comma-separated command topics")
    p.add_argument("--group-id", default=env("GROUP_ID", "python-participant"))
    p.add_argument("--fetch-wait-max-ms", default=env("FETCH_WAIT_MAX_MS", "100"), help="librdkafka fetch.wait.max.ms")
    p.add_argument("--fail-steps", default=env("FAIL_STEPS", ""), help="comma-separated step names")
    p.add_argument("--failure-type", default=env("FAILURE_TYPE"), help="reply type for failing steps")
    a = p.parse_args()
    a.topics = [t for t in a.topics.split(",") if t]
    a.fail_steps = {s for s in a.fail_steps.split(",") if s}
    if not a.topics:
        p.error("no command topics: pass --topics or set COMMAND_TOPICS")
    return a


def child_traceparent(parent):
    """Continues the saga's trace: same trace id and flags, a new span id for our work."""
    parts = (parent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return None
    return f"{parts[0]}-{parts[1]}-{uuid.uuid4().hex[:16]}-{parts[3]}"


def decide(cmd, a, state):
    """The business logic: returns (reply type, data, succeeded), or None for no answer."""
    service = SERVICES.get(cmd["type"])
    if service is None:
        return None  # not ours to answer: the step will time out
    success, failure, field = service
    saga, step = cmd["sagaid"], cmd["sagastep"]
    if cmd["sagaphase"] == "compensation":
        # Undo if the command was done here; if it never ran there is nothing to undo,
        # which is a success too.
        did = state.get((saga, step, "command"), (None, None, False))[2]
        return success, {"undone": did}, True
    if (saga, step, "compensation") in state:  # undone before it arrived: never do it now
        if failure is None:
            return None  # no failure type to refuse with: a success would be applied as one
        return failure, {"error": "already compensated"}, False
    if step in a.fail_steps and (a.failure_type or failure):
        return a.failure_type or failure, {"error": f"{step} declined by the python participant"}, False
    data = {"processed_at": datetime.now(timezone.utc).isoformat()}
    if field:
        data[field] = f"{field.split('_')[0]}-{saga[:8]}"
    return success, data, True


def main():
    a = args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s participant %(message)s")
    common = {"bootstrap.servers": a.bootstrap_servers}
    consumer = Consumer({**common, "group.id": a.group_id, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": int(a.fetch_wait_max_ms)})
    producer = Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 1})
    consumer.subscribe(a.topics, on_assign=lambda c, ps: log.info("assigned %s", [p.topic for p in ps]))
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    state = {}  # (saga, step, phase) -> (reply type, data, succeeded): the first outcome
    log.info("consuming %s as group %s", a.topics, a.group_id)
    while running[0]:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            log.warning("consumer error: %s", msg.error())
            continue
        headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
        cmd = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
        required = ("specversion", "id", "type", "sagaid", "sagastep", "sagaattempt", "sagaphase", "sagareplyto")
        if cmd.get("specversion") != "1.0" or not all(cmd.get(k) for k in required):
            log.warning("skipping a message that is not a sagaflow command (offset %s)", msg.offset())
            consumer.commit(message=msg, asynchronous=False)
            continue
        cmd["data"] = json.loads(msg.value() or b"null")
        key = (cmd["sagaid"], cmd["sagastep"], cmd["sagaphase"])
        outcome = state.get(key)
        if outcome is None:  # first execution; a retry or redelivery replays the first outcome
            outcome = decide(cmd, a, state)
            if outcome is None:
                log.warning("not answering %s (no handler, or a refusal with no failure type)", cmd["type"])
                consumer.commit(message=msg, asynchronous=False)
                continue
            state[key] = outcome
        reply_type, data, _ = outcome
        reply_headers = [
            ("ce_specversion", "1.0"),
            ("ce_id", str(uuid.uuid4())),  # unique per reply, even when replayed
            ("ce_source", "/examples/python-participant"),
            ("ce_type", reply_type),
            ("ce_time", datetime.now(timezone.utc).isoformat()),
            ("content-type", "application/json"),
            ("ce_sagaid", cmd["sagaid"]),
            ("ce_sagastep", cmd["sagastep"]),
            ("ce_sagaattempt", cmd["sagaattempt"]),  # the attempt being answered
            ("ce_sagaphase", cmd["sagaphase"]),
        ]
        if cmd.get("sagatoken"):
            reply_headers.append(("ce_sagatoken", cmd["sagatoken"]))  # proves we read the command
        traceparent = child_traceparent(headers.get("traceparent"))
        if traceparent:
            reply_headers.append(("traceparent", traceparent))
        producer.produce(cmd["sagareplyto"], key=cmd["sagaid"], value=json.dumps(data).encode(),
                         headers=reply_headers)
        if producer.flush(30) > 0:
            raise KafkaException("reply not acknowledged by the broker; exiting without commit")
        consumer.commit(message=msg, asynchronous=False)  # only now is the command done
        log.info("%s %s#%s %s -> %s", cmd["sagaphase"], cmd["sagastep"], cmd["sagaattempt"], cmd["sagaid"], reply_type)
    consumer.close()


if __name__ == "__main__":
    main()
