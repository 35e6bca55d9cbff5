-- AuditLock serialises writers of the chain until their transaction ends,
-- so each row links to the one committed before it.
-- name: AuditLock :exec
SELECT pg_advisory_xact_lock(7809894523560558433);

-- name: AuditHead :one
SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1;

-- name: AuditInsert :one
INSERT INTO audit_events (
    occurred_at, actor_id, actor_ref, action, target_type, target_id, target_ref,
    result, ip, ip_ref, user_agent, ua_ref, request_id, details, prev_hash, hash
) VALUES (
    @occurred_at, @actor_id, @actor_ref, @action, @target_type, @target_id, @target_ref,
    @result, @ip, @ip_ref, @user_agent, @ua_ref, @request_id, @details, @prev_hash, @hash
)
RETURNING seq;

-- AuditChainPage reads the chain in order for verification, a page at a time.
-- name: AuditChainPage :many
SELECT * FROM audit_events WHERE seq > @after_seq ORDER BY seq LIMIT @row_limit;

-- AuditEraseSubject removes a person's identity from the trail, keeping
-- the pseudonyms the chain covers.
-- name: AuditEraseSubject :execrows
UPDATE audit_events
SET actor_id = CASE WHEN actor_id = @user_id::uuid THEN NULL ELSE actor_id END,
    target_id = CASE WHEN target_id = (@user_id::uuid)::text THEN NULL ELSE target_id END,
    ip = CASE WHEN actor_id = @user_id::uuid THEN NULL ELSE ip END,
    user_agent = CASE WHEN actor_id = @user_id::uuid THEN NULL ELSE user_agent END
WHERE actor_id = @user_id::uuid OR target_id = (@user_id::uuid)::text;

-- AuditList filters the trail for the admin API, newest first.
-- name: AuditList :many
SELECT * FROM audit_events
WHERE (sqlc.narg('actor_id')::uuid IS NULL OR actor_id = sqlc.narg('actor_id')::uuid)
  AND (sqlc.narg('target_id')::text IS NULL OR target_id = sqlc.narg('target_id')::text)
  AND (sqlc.narg('action')::text IS NULL OR action = sqlc.narg('action')::text)
  AND (sqlc.narg('since')::timestamptz IS NULL OR occurred_at >= sqlc.narg('since')::timestamptz)
  AND (sqlc.narg('until')::timestamptz IS NULL OR occurred_at < sqlc.narg('until')::timestamptz)
  AND (sqlc.narg('before_seq')::bigint IS NULL OR seq < sqlc.narg('before_seq')::bigint)
ORDER BY seq DESC
LIMIT @row_limit;
