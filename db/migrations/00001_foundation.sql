-- +goose Up

-- nxg_uuidv7 returns a version 7 UUID (RFC 9562): a millisecond timestamp
-- followed by random bits, so ids sort by creation time and keep B-tree
-- inserts local. PostgreSQL 18 has uuidv7() built in; we support 15+.
-- +goose StatementBegin
CREATE FUNCTION nxg_uuidv7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(
      set_bit(
        overlay(uuid_send(gen_random_uuid())
                placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
        52, 1),
      53, 1),
    'hex')::uuid;
$$;
-- +goose StatementEnd

-- A branch is one NXG gym. Its opening hours are in its own IANA time zone.
CREATE TABLE branches (
    id         uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    address    text        NOT NULL CHECK (char_length(address) BETWEEN 1 AND 300),
    timezone   text        NOT NULL CHECK (char_length(timezone) BETWEEN 1 AND 64),
    capacity   integer     NOT NULL CHECK (capacity > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT branches_name_key UNIQUE (name)
);

-- ListBranches pages by (name, id); the unique name index serves the common
-- case and this one keeps the keyset comparison on the full key.
CREATE INDEX branches_name_id_idx ON branches (name, id);

-- One opening interval on one weekday (1 = Monday .. 7 = Sunday, ISO 8601) in
-- the branch's local time. closes_at may be 24:00, the end of the day.
CREATE TABLE branch_opening_hours (
    branch_id uuid     NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
    weekday   smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    opens_at  time     NOT NULL,
    closes_at time     NOT NULL,
    PRIMARY KEY (branch_id, weekday, opens_at),
    CHECK (opens_at < closes_at)
);

-- A machine on a branch's floor. Live state (links, heartbeats) comes with
-- the gym-floor feature; the catalogue itself is part of the foundation so the
-- demo gym has something to show.
CREATE TABLE machines (
    id           uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    branch_id    uuid        NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    machine_type text        NOT NULL CHECK (machine_type IN (
        'treadmill', 'bike', 'rower', 'elliptical', 'stair_climber',
        'chest_press', 'leg_press', 'shoulder_press', 'lat_pulldown', 'cable', 'smith', 'rack')),
    status       text        NOT NULL DEFAULT 'available'
                             CHECK (status IN ('available', 'in_use', 'maintenance', 'offline')),
    nfc_tag      text        NOT NULL CHECK (char_length(nfc_tag) BETWEEN 1 AND 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT machines_nfc_tag_key UNIQUE (nfc_tag),
    CONSTRAINT machines_branch_name_key UNIQUE (branch_id, name)
);

-- +goose Down
DROP TABLE machines;
DROP TABLE branch_opening_hours;
DROP TABLE branches;
DROP FUNCTION nxg_uuidv7();
