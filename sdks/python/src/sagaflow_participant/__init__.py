"""A participant library for sagaflow: one handler per command type, the protocol done for you."""

from .envelope import DecodeError
from .kafka import consumer_config, producer_config
from .model import Command, Failure, Handler, Message, Outcome, Record, Result, Success
from .participant import Participant
from .postgres import PostgresStore
from .store import MemoryStore, Store, StoreSession

__all__ = [
    "Command",
    "DecodeError",
    "Failure",
    "Handler",
    "MemoryStore",
    "Message",
    "Outcome",
    "Participant",
    "PostgresStore",
    "Record",
    "Result",
    "Store",
    "StoreSession",
    "Success",
    "consumer_config",
    "producer_config",
]
