-- The machines of the gym floor as members and staff see them: listing,
-- linking, maintenance, the live feed of changes and the idle-unlink job.

-- MachineGet returns one machine.
-- name: MachineGet :one
SELECT * FROM machines WHERE id = @id;

-- MachineGetForUpdate returns one machine and holds it until the
-- transaction ends, so its status cannot change under a link or a
-- maintenance change.
-- name: MachineGetForUpdate :one
SELECT * FROM machines WHERE id = @id FOR UPDATE;

-- MachineGetByTagForUpdate is MachineGetForUpdate by the tag on the machine.
-- name: MachineGetByTagForUpdate :one
SELECT * FROM machines WHERE nfc_tag = @nfc_tag FOR UPDATE;

-- MachineListByIDs loads the machines a notification named, for the feed.
-- name: MachineListByIDs :many
SELECT * FROM machines WHERE id = ANY(@ids::uuid[]);

-- MachineListByBranch returns every machine of a branch, ordered by name
-- then id: a watcher's snapshot.
-- name: MachineListByBranch :many
SELECT * FROM machines
WHERE branch_id = @branch_id
ORDER BY name, id;

-- MachineListByBranchPage returns a page of a branch's machines after the
-- (name, id) keyset cursor, ordered by name then id.
-- name: MachineListByBranchPage :many
SELECT * FROM machines
WHERE branch_id = @branch_id
  AND (NOT @has_cursor::boolean OR (name, id) > (@after_name::text, @after_id::uuid))
ORDER BY name, id
LIMIT @page_limit;

-- MachineSetLink points a machine at its new open link; the trigger moves
-- its version.
-- name: MachineSetLink :one
UPDATE machines SET current_link_id = @link_id
WHERE id = @id
RETURNING *;

-- MachineSetMaintenance puts a machine into or out of maintenance.
-- name: MachineSetMaintenance :one
UPDATE machines SET maintenance = @maintenance
WHERE id = @id
RETURNING *;

-- MachineLinkOpenForUser returns the member's open link, if any, and holds
-- it until the transaction ends.
-- name: MachineLinkOpenForUser :one
SELECT * FROM machine_links
WHERE user_id = @user_id AND ended_at IS NULL
FOR UPDATE;

-- MachineLinkInsert opens a link.
-- name: MachineLinkInsert :one
INSERT INTO machine_links (machine_id, user_id, gym_session_id)
VALUES (@machine_id, @user_id, @gym_session_id)
RETURNING *;

-- MachineLinkGetWithIdle returns one link with what the idle job needs to judge it:
-- its branch's idle limit.
-- name: MachineLinkGetWithIdle :one
SELECT l.*, b.idle_unlink_minutes
FROM machine_links l
JOIN machines m ON m.id = l.machine_id
JOIN branches b ON b.id = m.branch_id
WHERE l.id = @id
FOR UPDATE OF l;

-- MachineLinkSessionOpen returns the member's open gym session, if any:
-- the session a new link belongs to.
-- name: MachineLinkSessionOpen :one
SELECT * FROM gym_sessions
WHERE user_id = @user_id AND ended_at IS NULL AND expires_at > now();
