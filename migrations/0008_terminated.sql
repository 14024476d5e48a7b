-- `terminated` (an operator ended the saga) is a finished state like `completed` and
-- `compensated`: the partial indexes over unfinished and finished sagas learn it, so
-- the queries that name all three (store/queries.rs) keep using them.
DROP INDEX sagas_unfinished;
CREATE INDEX sagas_unfinished ON sagas (definition, version, status)
    WHERE status NOT IN ('completed', 'compensated', 'terminated');
DROP INDEX sagas_finished_updated;
CREATE INDEX sagas_finished_updated ON sagas (updated_at)
    WHERE status IN ('completed', 'compensated', 'terminated');
