-- The writes every part of the gym floor shares (internal/floor): ending a
-- session and ending a machine link, which the services, the timeout and
-- idle jobs all do, always through internal/floor so the machine, its
-- watchers and the member's stream stay in step.

-- FloorSessionEnd ends an open session; it finds nothing if it had ended.
-- name: FloorSessionEnd :one
UPDATE gym_sessions
SET ended_at = now(), end_reason = @end_reason, ended_by = sqlc.narg('ended_by')::uuid
WHERE id = @id AND ended_at IS NULL
RETURNING *;

-- FloorLinkOpenForSession finds the open link of a session, if any, and
-- holds it until the transaction ends.
-- name: FloorLinkOpenForSession :many
SELECT * FROM machine_links
WHERE gym_session_id = @gym_session_id AND ended_at IS NULL
FOR UPDATE;

-- FloorLinkEnd ends an open link; it finds nothing if it had ended.
-- name: FloorLinkEnd :one
UPDATE machine_links
SET ended_at = now(), end_reason = @end_reason
WHERE id = @id AND ended_at IS NULL
RETURNING *;

-- FloorMachineReleaseLink frees a machine held by the link; the trigger
-- moves its version and updated_at.
-- name: FloorMachineReleaseLink :one
UPDATE machines SET current_link_id = NULL
WHERE id = @machine_id AND current_link_id = @link_id
RETURNING id, branch_id, version;
