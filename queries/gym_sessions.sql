-- Members' visits to branches (GymSessionService), the timeout job that
-- ends them, and the parts of the gym floor a member's data export holds.

-- GymSessionInsert opens a session. The partial unique index
-- gym_sessions_open_user_key refuses a second open session of the user.
-- name: GymSessionInsert :one
INSERT INTO gym_sessions (user_id, branch_id, method, device_id, started_at, expires_at)
VALUES (@user_id, @branch_id, @method, sqlc.narg('device_id')::uuid, @started_at, @expires_at)
RETURNING *;

-- GymSessionGet returns one session.
-- name: GymSessionGet :one
SELECT * FROM gym_sessions WHERE id = @id;

-- GymSessionGetForUpdate returns one session and holds it until the
-- transaction ends, so it cannot end twice at once.
-- name: GymSessionGetForUpdate :one
SELECT * FROM gym_sessions WHERE id = @id FOR UPDATE;

-- GymSessionOpenForUser returns the user's open session, if any, and holds
-- it until the transaction ends.
-- name: GymSessionOpenForUser :one
SELECT * FROM gym_sessions
WHERE user_id = @user_id AND ended_at IS NULL
FOR UPDATE;

-- GymSessionOpen returns the user's open session, if any, without locking
-- it: what a member's snapshot shows.
-- name: GymSessionOpen :one
SELECT * FROM gym_sessions WHERE user_id = @user_id AND ended_at IS NULL;

-- GymSessionList pages through a user's sessions, newest first, after the
-- (started_at, id) keyset cursor when there is one.
-- name: GymSessionList :many
SELECT * FROM gym_sessions
WHERE user_id = @user_id
  AND (sqlc.narg('after_started_at')::timestamptz IS NULL
       OR (started_at, id) < (sqlc.narg('after_started_at')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY started_at DESC, id DESC
LIMIT @row_limit;

-- GymSessionBranchHours returns a branch's opening intervals for the
-- check-in's opening-hours test.
-- name: GymSessionBranchHours :many
SELECT * FROM branch_opening_hours WHERE branch_id = @branch_id ORDER BY weekday, opens_at;

-- GymSessionOpenLink returns the user's open machine link with its
-- machine's branch and name, if any: what a member's snapshot shows.
-- name: GymSessionOpenLink :one
SELECT sqlc.embed(l), m.branch_id, m.name AS machine_name
FROM machine_links l
JOIN machines m ON m.id = l.machine_id
WHERE l.user_id = @user_id AND l.ended_at IS NULL;

-- GymSessionLinkGet returns one machine link with its machine's branch and
-- name, for the member's event stream.
-- name: GymSessionLinkGet :one
SELECT sqlc.embed(l), m.branch_id, m.name AS machine_name
FROM machine_links l
JOIN machines m ON m.id = l.machine_id
WHERE l.id = @id;

-- GymSessionSetGet returns one reported set, for the member's event stream.
-- name: GymSessionSetGet :one
SELECT * FROM machine_sets WHERE id = @id;

-- GymSessionsAll lists a user's sessions for their data export, oldest first.
-- name: GymSessionsAll :many
SELECT * FROM gym_sessions WHERE user_id = @user_id ORDER BY started_at, id;

-- GymSessionLinksAll lists a user's machine links with the machines' names
-- for their data export, oldest first.
-- name: GymSessionLinksAll :many
SELECT sqlc.embed(l), m.branch_id, m.name AS machine_name
FROM machine_links l
JOIN machines m ON m.id = l.machine_id
WHERE l.user_id = @user_id
ORDER BY l.linked_at, l.id;

-- GymSessionSetsAll lists the sets machines reported for a user, for their
-- data export, oldest first.
-- name: GymSessionSetsAll :many
SELECT * FROM machine_sets WHERE user_id = @user_id ORDER BY recorded_at, id;
