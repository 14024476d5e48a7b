"""Plays every participant of the example sagas (protocol/README.md, "The example services").

Environment: BOOTSTRAP_SERVERS, GROUP_ID, TOPICS, DATABASE_URL, FAIL_STEPS, SOURCE,
DEAD_LETTER_TOPIC. SIGTERM (or Ctrl-C) stops it gracefully.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import NamedTuple

from sagaflow_participant import (
    Command,
    Failure,
    MemoryStore,
    Participant,
    PostgresStore,
    Result,
    Store,
    Success,
)

# fmt: off
TOPICS = [
    "inventory.commands", "payments.commands", "shipping.commands", "billing.commands",
    "fulfilment.commands", "notifications.commands", "travel.flights.commands",
    "travel.hotels.commands", "travel.cars.commands", "travel.notifications.commands",
]
# fmt: on


class Service(NamedTuple):
    command: str
    success: str
    failure: str | None
    field: str | None
    compensation: str | None = None
    undone: str | None = None
    retryable: bool = False


# The table of protocol/README.md, "The example services"; the failure type is also the refusal.
# fmt: off
SERVICES = [
    Service("inventory.reserve_stock", "inventory.stock_reserved", "inventory.out_of_stock",
            "reservation_id", "inventory.release_stock", "inventory.stock_released"),
    Service("payments.authorize", "payments.authorized", "payments.declined", "authorization_id",
            "payments.void_authorization", "payments.authorization_voided"),
    Service("payments.capture", "payments.captured", "payments.capture_rejected", "payment_id"),
    # The definition declares carrier_unavailable retryable.
    Service("shipping.create_shipment", "shipping.shipment_created",
            "shipping.carrier_unavailable", "tracking_number", retryable=True),
    Service("billing.create_account", "billing.account_created", "billing.account_rejected",
            "billing_account_id", "billing.close_account", "billing.account_closed"),
    Service("billing.start_subscription", "billing.subscription_started",
            "billing.payment_method_missing", "subscription_id"),
    Service("fulfilment.send_gift", "fulfilment.gift_dispatched", None, None),
    Service("notifications.send_email", "notifications.email_sent", None, None),
    Service("travel.flight.book", "travel.flight.booked", "travel.flight.sold_out", "booking_ref",
            "travel.flight.cancel", "travel.flight.cancelled"),
    Service("travel.hotel.book", "travel.hotel.booked", "travel.hotel.no_vacancy",
            "reservation_id", "travel.hotel.cancel", "travel.hotel.cancelled"),
    Service("travel.car.book", "travel.car.booked", "travel.car.unavailable", "rental_id",
            "travel.car.cancel", "travel.car.cancelled"),
    Service("travel.trip.confirm", "travel.trip.confirmed", None, None),
]
# fmt: on

log = logging.getLogger("example_services")


def command_handler(service: Service, fail_steps: set[str]) -> Callable[[Command], Result]:
    def handle(command: Command) -> Result:
        if command.step in fail_steps and service.failure is not None:
            log.info("%s %s: failing on purpose", command.saga_id, command.step)
            return Failure(
                service.failure,
                {"error": f"{command.step} failed on purpose"},
                retryable=service.retryable,
            )
        if service.field is None:
            return Success({})
        return Success({service.field: f"{service.field}-{command.saga_id[:8]}"})

    return handle


def undo(command: Command) -> Success:
    return Success({"undone": True})


def build(source: str, store: Store, dead_letter_topic: str, fail_steps: set[str]) -> Participant:
    participant = Participant(source, store=store, dead_letter_topic=dead_letter_topic)
    for s in SERVICES:
        participant.register(
            "command",
            s.command,
            command_handler(s, fail_steps),
            success=s.success,
            refusal=s.failure,
        )
        if s.compensation and s.undone:
            participant.register("compensation", s.compensation, undo, success=s.undone)
    return participant


def split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    env = os.environ.get
    database_url = env("DATABASE_URL")
    store: Store = PostgresStore(database_url) if database_url else MemoryStore()
    participant = build(
        source=env("SOURCE", "/example-python"),
        store=store,
        dead_letter_topic=env("DEAD_LETTER_TOPIC", "participants.dead-letter"),
        fail_steps=set(split(env("FAIL_STEPS", ""))),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: participant.stop())
    topics = split(env("TOPICS", "")) or TOPICS
    log.info("consuming %s (%s store)", ",".join(topics), "postgres" if database_url else "memory")
    participant.run(
        bootstrap_servers=env("BOOTSTRAP_SERVERS", "localhost:9092"),
        group_id=env("GROUP_ID", "sagaflow-example-python"),
        topics=topics,
    )
    if isinstance(store, PostgresStore):
        store.close()
    log.info("stopped")


if __name__ == "__main__":
    main()
