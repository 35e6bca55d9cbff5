-- +goose Up

-- How long a check-in session may last before the timeout job ends it, and
-- how long a machine link may go without activity before it ends by itself.
ALTER TABLE branches
    ADD COLUMN max_session_minutes integer NOT NULL DEFAULT 240
        CHECK (max_session_minutes BETWEEN 1 AND 1440),
    ADD COLUMN idle_unlink_minutes integer NOT NULL DEFAULT 10
        CHECK (idle_unlink_minutes BETWEEN 1 AND 240);

-- Devices on the floor: machine consoles, NFC readers at the entrance and
-- kiosks showing the check-in code. A device signs in with its id and a
-- 256-bit random secret, of which only the SHA-256 is kept: the secret has
-- full entropy, so a slow password hash would add nothing but latency.
CREATE TABLE devices (
    id            uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    branch_id     uuid        NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('machine', 'nfc_reader', 'kiosk')),
    machine_id    uuid        REFERENCES machines (id) ON DELETE CASCADE,
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    secret_hash   bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    revoked_at    timestamptz,
    revoked_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT devices_machine_kind CHECK ((kind = 'machine') = (machine_id IS NOT NULL))
);
CREATE INDEX devices_branch_idx ON devices (branch_id, created_at DESC, id DESC);
-- One live console per machine: a replacement is registered after the old
-- one is revoked.
CREATE UNIQUE INDEX devices_machine_live_key ON devices (machine_id) WHERE revoked_at IS NULL;
CREATE INDEX devices_created_by_idx ON devices (created_by) WHERE created_by IS NOT NULL;
CREATE INDEX devices_revoked_by_idx ON devices (revoked_by) WHERE revoked_by IS NOT NULL;

-- A member's visit to a branch, from check-in until they leave, time out,
-- check in elsewhere (superseded) or staff end it. A member has at most one
-- open session. expires_at is when the timeout job ends it.
CREATE TABLE gym_sessions (
    id         uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    branch_id  uuid        NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
    method     text        NOT NULL CHECK (method IN ('qr', 'nfc')),
    device_id  uuid        REFERENCES devices (id) ON DELETE SET NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz,
    end_reason text        CHECK (end_reason IN ('member', 'timeout', 'superseded', 'staff')),
    ended_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT gym_sessions_ended CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CONSTRAINT gym_sessions_expiry CHECK (expires_at > started_at)
);
CREATE UNIQUE INDEX gym_sessions_open_user_key ON gym_sessions (user_id) WHERE ended_at IS NULL;
CREATE INDEX gym_sessions_user_idx ON gym_sessions (user_id, started_at DESC, id DESC);
CREATE INDEX gym_sessions_branch_open_idx ON gym_sessions (branch_id) WHERE ended_at IS NULL;
CREATE INDEX gym_sessions_device_idx ON gym_sessions (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX gym_sessions_ended_by_idx ON gym_sessions (ended_by) WHERE ended_by IS NOT NULL;

-- A member holding a machine during a session. A machine has at most one
-- open link and a member holds at most one machine. last_activity_at moves
-- with every set the machine reports; the idle job ends links whose
-- activity is older than the branch's idle_unlink_minutes.
CREATE TABLE machine_links (
    id               uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    machine_id       uuid        NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    gym_session_id   uuid        NOT NULL REFERENCES gym_sessions (id) ON DELETE CASCADE,
    linked_at        timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    end_reason       text        CHECK (end_reason IN (
        'member', 'replaced', 'idle', 'session_ended', 'maintenance', 'staff')),
    CONSTRAINT machine_links_ended CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE UNIQUE INDEX machine_links_open_machine_key ON machine_links (machine_id) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX machine_links_open_user_key ON machine_links (user_id) WHERE ended_at IS NULL;
CREATE INDEX machine_links_user_idx ON machine_links (user_id, linked_at DESC);
CREATE INDEX machine_links_session_idx ON machine_links (gym_session_id);

-- A machine's status is derived, never written: staff maintenance or a
-- fault the console reports wins, then a console that stopped sending
-- heartbeats (offline), then an open link (in use). version and updated_at
-- move only when something a watcher sees changes (trigger below), so
-- heartbeats that change nothing send no event. last_seen_at stays NULL
-- for machines without a console, which are therefore never swept offline.
ALTER TABLE machines DROP COLUMN status;
ALTER TABLE machines
    ADD COLUMN maintenance     boolean     NOT NULL DEFAULT false,
    ADD COLUMN fault           boolean     NOT NULL DEFAULT false,
    ADD COLUMN online          boolean     NOT NULL DEFAULT true,
    ADD COLUMN last_seen_at    timestamptz,
    ADD COLUMN current_link_id uuid        REFERENCES machine_links (id) ON DELETE SET NULL,
    ADD COLUMN version         bigint      NOT NULL DEFAULT 1;
ALTER TABLE machines
    ADD COLUMN status text GENERATED ALWAYS AS (
        CASE
            WHEN maintenance OR fault THEN 'maintenance'
            WHEN NOT online THEN 'offline'
            WHEN current_link_id IS NOT NULL THEN 'in_use'
            ELSE 'available'
        END) STORED;
CREATE INDEX machines_branch_idx ON machines (branch_id, name, id);
CREATE INDEX machines_current_link_idx ON machines (current_link_id) WHERE current_link_id IS NOT NULL;
-- No index on last_seen_at or online: every heartbeat writes them, and an
-- index on either (even as a partial index's predicate) would make each
-- heartbeat a non-HOT update with an insert into every index. The offline
-- sweeper scans the table instead, a few thousand rows every few seconds.
-- The fill factor leaves room on each page for those HOT updates.
ALTER TABLE machines SET (fillfactor = 70);

-- +goose StatementBegin
CREATE FUNCTION nxg_machines_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.branch_id, NEW.name, NEW.machine_type, NEW.nfc_tag, NEW.maintenance, NEW.fault, NEW.online, NEW.current_link_id)
       IS DISTINCT FROM
       (OLD.branch_id, OLD.name, OLD.machine_type, OLD.nfc_tag, OLD.maintenance, OLD.fault, OLD.online, OLD.current_link_id) THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER machines_version BEFORE UPDATE ON machines
    FOR EACH ROW EXECUTE FUNCTION nxg_machines_version();

-- A set a machine reported while a member was linked to it, stored against
-- the member's gym session. client_set_id is the console's idempotency key:
-- a retried report of the same set is stored once.
CREATE TABLE machine_sets (
    id               uuid             PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id          uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    gym_session_id   uuid             NOT NULL REFERENCES gym_sessions (id) ON DELETE CASCADE,
    machine_id       uuid             NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    link_id          uuid             NOT NULL REFERENCES machine_links (id) ON DELETE CASCADE,
    client_set_id    text             NOT NULL CHECK (char_length(client_set_id) BETWEEN 1 AND 64),
    reps             integer          NOT NULL DEFAULT 0 CHECK (reps BETWEEN 0 AND 1000),
    weight_kg        double precision NOT NULL DEFAULT 0 CHECK (weight_kg BETWEEN 0 AND 1000),
    duration_seconds integer          NOT NULL DEFAULT 0 CHECK (duration_seconds BETWEEN 0 AND 86400),
    distance_m       double precision NOT NULL DEFAULT 0 CHECK (distance_m BETWEEN 0 AND 200000),
    calories         integer          NOT NULL DEFAULT 0 CHECK (calories BETWEEN 0 AND 10000),
    recorded_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT machine_sets_client_key UNIQUE (machine_id, client_set_id)
);
CREATE INDEX machine_sets_session_idx ON machine_sets (gym_session_id, recorded_at);
CREATE INDEX machine_sets_user_idx ON machine_sets (user_id, recorded_at DESC);
CREATE INDEX machine_sets_link_idx ON machine_sets (link_id);

-- +goose Down
DROP TABLE machine_sets;
DROP TRIGGER machines_version ON machines;
DROP FUNCTION nxg_machines_version();
ALTER TABLE machines RESET (fillfactor);
ALTER TABLE machines DROP COLUMN status;
ALTER TABLE machines
    DROP COLUMN version,
    DROP COLUMN current_link_id,
    DROP COLUMN last_seen_at,
    DROP COLUMN online,
    DROP COLUMN fault,
    DROP COLUMN maintenance;
ALTER TABLE machines
    ADD COLUMN status text NOT NULL DEFAULT 'available'
        CHECK (status IN ('available', 'in_use', 'maintenance', 'offline'));
DROP TABLE machine_links;
DROP TABLE gym_sessions;
DROP TABLE devices;
ALTER TABLE branches DROP COLUMN idle_unlink_minutes, DROP COLUMN max_session_minutes;
