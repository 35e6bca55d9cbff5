-- The machine consoles' side of the gym floor: what a console shows
-- (Attach), the batched writes of its reports (internal/floor.Reporter) and
-- the offline sweep (jobs.MachineOfflineSweepWorker).

-- ConsoleState returns a console's machine with its open link, if any, and
-- the linked member's display name: the whole of what the console shows.
-- name: ConsoleState :one
SELECT sqlc.embed(m),
       l.id AS link_id,
       l.linked_at AS link_linked_at,
       u.display_name AS member_display_name
FROM machines m
LEFT JOIN machine_links l ON l.id = m.current_link_id AND l.ended_at IS NULL
LEFT JOIN users u ON u.id = l.user_id
WHERE m.id = @id;

-- ConsoleMachines loads the machines a batch of reports names, for their
-- type (the plausibility of sets), branch and version before the batch.
-- name: ConsoleMachines :many
SELECT * FROM machines WHERE id = ANY(@ids::uuid[]);

-- ConsoleSetsFind returns the sets already stored under the (machine,
-- client_set_id) keys given: retried reports answered as duplicates.
-- name: ConsoleSetsFind :many
SELECT s.*
FROM machine_sets s
JOIN (SELECT unnest(@machine_ids::uuid[]) AS machine_id, unnest(@client_set_ids::text[]) AS client_set_id) AS k
  ON s.machine_id = k.machine_id AND s.client_set_id = k.client_set_id;

-- ConsoleLinksLock returns the open links of the machines given and holds
-- them until the transaction ends, in machine order so that concurrent
-- batches lock in the same order.
-- name: ConsoleLinksLock :many
SELECT * FROM machine_links
WHERE machine_id = ANY(@machine_ids::uuid[]) AND ended_at IS NULL
ORDER BY machine_id
FOR UPDATE;

-- ConsoleSetsInsert stores a batch of sets. A key stored already (by a
-- concurrent batch, or twice in this one) is skipped: the caller reads the
-- stored set back and answers it as a duplicate.
-- name: ConsoleSetsInsert :many
INSERT INTO machine_sets (user_id, gym_session_id, machine_id, link_id, client_set_id,
                          reps, weight_kg, duration_seconds, distance_m, calories)
SELECT unnest(@user_ids::uuid[]), unnest(@gym_session_ids::uuid[]), unnest(@machine_ids::uuid[]),
       unnest(@link_ids::uuid[]), unnest(@client_set_ids::text[]), unnest(@reps::integer[]),
       unnest(@weights_kg::float8[]), unnest(@durations_seconds::integer[]), unnest(@distances_m::float8[]),
       unnest(@calories::integer[])
ON CONFLICT (machine_id, client_set_id) DO NOTHING
RETURNING *;

-- ConsoleLinksTouch moves the activity of links whose machine reported a
-- set, which keeps the idle job from ending them.
-- name: ConsoleLinksTouch :exec
UPDATE machine_links SET last_activity_at = now()
WHERE id = ANY(@ids::uuid[]) AND ended_at IS NULL;

-- ConsoleMachinesReport records a batch of reports on the machines: every
-- report proves the console alive (last_seen_at, online), and a status
-- report sets the fault flag. The machines are locked in id order first so
-- concurrent batches and the sweeper cannot deadlock on them; the trigger
-- moves the version only when something visible changed (a machine coming
-- back online, a fault starting or clearing).
-- name: ConsoleMachinesReport :many
WITH locked AS (
    SELECT id FROM machines
    WHERE id = ANY(@ids::uuid[])
    ORDER BY id
    FOR NO KEY UPDATE
)
UPDATE machines m
SET last_seen_at = now(),
    online = true,
    fault = CASE WHEN r.has_status THEN r.fault ELSE m.fault END
FROM (SELECT unnest(@ids::uuid[]) AS id, unnest(@has_status::boolean[]) AS has_status,
             unnest(@faults::boolean[]) AS fault) AS r
JOIN locked ON locked.id = r.id
WHERE m.id = r.id
RETURNING m.*;

-- ConsoleMachinesSweepOffline marks offline the machines whose console has
-- been silent for longer than offline_after_seconds. Machines without a
-- console (last_seen_at NULL) are never swept; machines a report batch is
-- writing right now are skipped (they are alive), and locking in id order
-- keeps the sweep from deadlocking with those batches. It scans the table:
-- there is deliberately no index on last_seen_at (see the migration).
-- name: ConsoleMachinesSweepOffline :many
WITH due AS (
    SELECT id FROM machines
    WHERE online AND last_seen_at IS NOT NULL
      AND last_seen_at < now() - make_interval(secs => @offline_after_seconds::float8)
    ORDER BY id
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE machines m SET online = false
FROM due
WHERE m.id = due.id
RETURNING m.id, m.branch_id, m.version;
