-- Queries of the GDPR jobs: the data export (jobs/data_export.go) and the
-- account erasure (internal/erasure).

-- UserLockLive holds the account against closing until the transaction
-- ends (DeleteAccount's UPDATE waits), and finds nothing once it is closed.
-- The export worker marks an archive ready under it, so an archive is either
-- ready before the account closes (and the erasure deletes it) or never.
-- name: UserLockLive :one
SELECT id FROM users WHERE id = @id AND deleted_at IS NULL FOR SHARE;

-- StaffBranchListNamed lists the branches a staff account works at, with
-- their names, for the export.
-- name: StaffBranchListNamed :many
SELECT sb.branch_id, b.name
FROM staff_branches sb
JOIN branches b ON b.id = sb.branch_id
WHERE sb.user_id = @user_id
ORDER BY b.name, sb.branch_id;

-- AuditListBySubject lists the audit rows about a person, oldest first: as
-- actor or as target, found by id or, for rows whose identity was already
-- erased, by pseudonym. The pseudonym conditions cannot use an index; the
-- export runs rarely, in the background.
-- name: AuditListBySubject :many
SELECT * FROM audit_events
WHERE actor_id = @user_id::uuid
   OR target_id = (@user_id::uuid)::text
   OR actor_ref = @ref::text
   OR target_ref = @ref::text
ORDER BY seq;

-- AuditErasureRecorded reports whether the closing row of a person's
-- erasure was written already, so a re-run does not write a second one.
-- name: AuditErasureRecorded :one
SELECT EXISTS (
    SELECT 1 FROM audit_events
    WHERE action = 'gdpr.account_erased' AND (details::jsonb ->> 'subject') = @subject::text
) AS recorded;
