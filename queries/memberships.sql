-- MembershipCreate grants a membership (server/membership.go). A membership
-- is active at a moment when it was not ended, has started and has not run
-- out; a NULL branch_id makes it network-wide.
-- name: MembershipCreate :one
INSERT INTO memberships (user_id, branch_id, valid_from, valid_until, created_by)
VALUES (@user_id, sqlc.narg('branch_id')::uuid, @valid_from, sqlc.narg('valid_until')::timestamptz, sqlc.narg('created_by')::uuid)
RETURNING *;

-- MembershipGetForUpdate reads a membership and holds it until the
-- transaction ends, so two ends of the same membership take turns.
-- name: MembershipGetForUpdate :one
SELECT * FROM memberships WHERE id = @id FOR UPDATE;

-- MembershipList pages through memberships newest first, by (created_at,
-- id). Every filter is optional: staff_user_id keeps the memberships of the
-- branches that staff account works at (network-wide ones are not theirs);
-- active_at keeps those active at that moment. The first page passes NULL
-- cursors; later pages pass the last row of the previous page.
-- name: MembershipList :many
SELECT * FROM memberships m
WHERE (sqlc.narg('user_id')::uuid IS NULL OR m.user_id = sqlc.narg('user_id')::uuid)
  AND (sqlc.narg('branch_id')::uuid IS NULL OR m.branch_id = sqlc.narg('branch_id')::uuid)
  AND (sqlc.narg('staff_user_id')::uuid IS NULL OR m.branch_id IN (
        SELECT sb.branch_id FROM staff_branches sb WHERE sb.user_id = sqlc.narg('staff_user_id')::uuid))
  AND (sqlc.narg('active_at')::timestamptz IS NULL OR (
        m.ended_at IS NULL
        AND m.valid_from <= sqlc.narg('active_at')::timestamptz
        AND (m.valid_until IS NULL OR m.valid_until > sqlc.narg('active_at')::timestamptz)))
  AND (sqlc.narg('after_created_at')::timestamptz IS NULL
       OR (m.created_at, m.id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY m.created_at DESC, m.id DESC
LIMIT @row_limit;

-- MembershipEnd ends a membership now; it finds nothing if it was ended already.
-- name: MembershipEnd :one
UPDATE memberships SET ended_at = now()
WHERE id = @id AND ended_at IS NULL
RETURNING *;

-- MembershipActiveForBranch reports whether the user may use the branch at
-- the moment at: an active membership of that branch, or a network-wide one.
-- name: MembershipActiveForBranch :one
SELECT EXISTS (
    SELECT 1 FROM memberships
    WHERE user_id = @user_id::uuid
      AND ended_at IS NULL
      AND valid_from <= @at::timestamptz
      AND (valid_until IS NULL OR valid_until > @at::timestamptz)
      AND (branch_id IS NULL OR branch_id = @branch_id::uuid)
) AS active;

-- MembershipsAll lists a user's memberships for their data export, oldest first
-- (by when they were granted, then by when they start: two granted together
-- are listed in the order they take effect).
-- name: MembershipsAll :many
SELECT * FROM memberships WHERE user_id = @user_id ORDER BY created_at, valid_from, id;

-- StaffBranchHas reports whether a staff account works at the branch.
-- name: StaffBranchHas :one
SELECT EXISTS (
    SELECT 1 FROM staff_branches WHERE user_id = @user_id AND branch_id = @branch_id
) AS has;
