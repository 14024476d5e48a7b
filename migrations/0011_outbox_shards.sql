-- The relay publishes the outbox shard by shard, each shard under its own advisory
-- lock, so several replicas publish at once (src/messaging/relay.rs). A saga's rows all
-- fall in one shard (the last byte of its id, modulo 16), which keeps their order.
-- Generated, so every writer (transitions, redrives, re-queued parked rows) agrees on
-- it and rows written before this migration get theirs. The count (16) is part of
-- the relay's code: changing it takes a new migration and a release that stops the
-- relay until every replica runs it.
ALTER TABLE outbox
    ADD COLUMN shard SMALLINT NOT NULL
    GENERATED ALWAYS AS ((get_byte(uuid_send(saga_id), 15) % 16)::smallint) STORED;

CREATE INDEX outbox_shard_id ON outbox (shard, id);
