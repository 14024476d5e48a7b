-- Indexes for every documented list filter (docs/api.md), for the scans of unfinished
-- sagas at start-up and for retention. Each list query orders by (created_at, id)
-- descending, so each filter's index ends with those columns: the list reads its page
-- straight off the index, however many sagas match. Checked with EXPLAIN on 1,000,000
-- sagas (docs/reliability.md, tests/store_plans.rs).
--
-- Every transition changes `status` and `updated_at`, so each index costs a write per
-- transition: time filters use the (created_at, id) order and no index of their own.
--
-- Plain CREATE INDEX, in the migration's transaction: on a large existing table it
-- blocks writes while it builds (docs/reliability.md says how to pre-build them).
CREATE INDEX sagas_status_created ON sagas (status, created_at, id);
CREATE INDEX sagas_key_created ON sagas (business_key, created_at, id) WHERE business_key IS NOT NULL;
-- Unfinished sagas are few next to finished ones: the versions still in use, the
-- in-flight gauges and an operator's "what is still running" stay cheap as history grows.
CREATE INDEX sagas_unfinished ON sagas (definition, version, status)
    WHERE status NOT IN ('completed', 'compensated');
-- Retention deletes finished sagas oldest first.
CREATE INDEX sagas_finished_updated ON sagas (updated_at)
    WHERE status IN ('completed', 'compensated');
-- (status, updated_at) is superseded by the indexes above.
DROP INDEX sagas_status_updated;
