-- Outbox rows the broker refuses for good (too large, a topic it will not accept),
-- moved aside with the reason so the rows behind them are published. An operator
-- moves a row back into `outbox` once the cause is fixed (docs/reliability.md).
CREATE TABLE outbox_parked (
    id          BIGINT      PRIMARY KEY,
    saga_id     UUID        NOT NULL,
    topic       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    headers     JSONB       NOT NULL,
    payload     BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    parked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason      TEXT        NOT NULL
);
