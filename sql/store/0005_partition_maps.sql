-- The partition map as of each slot's checkpoint: which root table every
-- partition belonged to when the last stored source transaction committed.
-- Written in the same store transaction as that transaction's entries, only
-- when a partition tree announcement changed it. A restart with a backlog
-- names the backlog's changes by this map, as they were when they were made,
-- not by the source's catalog as it is at the restart.
CREATE TABLE pgtrail.partition_maps (
    slot       text        PRIMARY KEY REFERENCES pgtrail.checkpoints (slot) ON DELETE CASCADE,
    members    json        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
