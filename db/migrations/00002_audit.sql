-- +goose Up

-- The audit trail (FR12, NFR6): one row per security-relevant action,
-- written in the same transaction as the action. Rows are chained: each
-- carries the HMAC of its content and the previous row's hash, so editing,
-- deleting or reordering rows is detected by `nxg audit verify`.
--
-- Personal columns (actor_id, target_id, ip, user_agent) are erasable: when a
-- person is erased they become NULL, and the row keeps only keyed
-- pseudonyms (the *_ref columns). The chain covers the pseudonyms, not the
-- personal values, so erasure does not break it.
CREATE TABLE audit_events (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL,
    actor_id     uuid,
    actor_ref    text        NOT NULL,
    action       text        NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    target_type  text        NOT NULL CHECK (char_length(target_type) <= 64),
    target_id    text        CHECK (char_length(target_id) <= 128),
    target_ref   text        NOT NULL,
    result       text        NOT NULL CHECK (result IN ('success', 'failure', 'denied')),
    ip           text        CHECK (char_length(ip) <= 64),
    ip_ref       text        NOT NULL,
    user_agent   text        CHECK (char_length(user_agent) <= 512),
    ua_ref       text        NOT NULL,
    request_id   text        NOT NULL CHECK (char_length(request_id) <= 64),
    -- Canonical JSON written by the application, hashed byte for byte;
    -- jsonb would re-format it.
    details      text        NOT NULL CHECK (char_length(details) <= 8192),
    prev_hash    bytea       NOT NULL,
    hash         bytea       NOT NULL,
    CONSTRAINT audit_events_hash_key UNIQUE (hash)
);

CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, seq DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_events_target_idx ON audit_events (target_id, seq DESC) WHERE target_id IS NOT NULL;
CREATE INDEX audit_events_action_idx ON audit_events (action, seq DESC);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);

-- Append-only, enforced by the database for every client: no DELETE or
-- TRUNCATE, and UPDATE only to erase personal columns.
-- +goose StatementBegin
CREATE FUNCTION audit_events_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE'
     AND (NEW.actor_id IS NULL OR NEW.actor_id IS NOT DISTINCT FROM OLD.actor_id)
     AND (NEW.target_id IS NULL OR NEW.target_id IS NOT DISTINCT FROM OLD.target_id)
     AND (NEW.ip IS NULL OR NEW.ip IS NOT DISTINCT FROM OLD.ip)
     AND (NEW.user_agent IS NULL OR NEW.user_agent IS NOT DISTINCT FROM OLD.user_agent)
     AND (NEW.seq, NEW.occurred_at, NEW.actor_ref, NEW.action, NEW.target_type, NEW.target_ref,
          NEW.result, NEW.ip_ref, NEW.ua_ref, NEW.request_id, NEW.details, NEW.prev_hash, NEW.hash)
         IS NOT DISTINCT FROM
         (OLD.seq, OLD.occurred_at, OLD.actor_ref, OLD.action, OLD.target_type, OLD.target_ref,
          OLD.result, OLD.ip_ref, OLD.ua_ref, OLD.request_id, OLD.details, OLD.prev_hash, OLD.hash)
  THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_guard();

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_guard();
