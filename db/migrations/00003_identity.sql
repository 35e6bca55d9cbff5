-- +goose Up

-- An account. Email is the sign-in name (lower-cased). data_key is the
-- user's AES-256 data key wrapped by a master key (internal/fieldcrypt):
-- every personal field of the user is encrypted under it, so deleting it
-- makes all their ciphertext unreadable (crypto-shredding). deleted_at marks
-- an account closed and waiting for the erasure job.
CREATE TABLE users (
    id                  uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    email               text        NOT NULL CHECK (email = lower(email) AND char_length(email) BETWEEN 3 AND 254),
    password_hash       text        NOT NULL CHECK (char_length(password_hash) <= 512),
    display_name        text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 80),
    role                text        NOT NULL CHECK (role IN ('member', 'staff', 'admin')),
    data_key            bytea       NOT NULL,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT users_email_key UNIQUE (email)
);

-- The branches a staff account works at.
CREATE TABLE staff_branches (
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    branch_id uuid NOT NULL REFERENCES branches (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, branch_id)
);
CREATE INDEX staff_branches_branch_idx ON staff_branches (branch_id);

-- The member's profile. The *_enc columns are AES-256-GCM ciphertexts
-- under the user's data key, bound to the user and column; NULL means not
-- given. The rest is not sensitive and stays queryable.
CREATE TABLE profiles (
    user_id           uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    date_of_birth_enc bytea,
    sex_enc           bytea,
    height_cm_enc     bytea,
    phone_enc         bytea,
    fitness_goal      text        NOT NULL DEFAULT '' CHECK (fitness_goal IN ('', 'lose_weight', 'build_muscle', 'increase_strength', 'improve_endurance', 'general_fitness')),
    activity_level    text        NOT NULL DEFAULT '' CHECK (activity_level IN ('', 'sedentary', 'light', 'moderate', 'active', 'very_active')),
    unit_system       text        NOT NULL DEFAULT '' CHECK (unit_system IN ('', 'metric', 'imperial')),
    timezone          text        NOT NULL DEFAULT '' CHECK (char_length(timezone) <= 64),
    home_branch_id    uuid        REFERENCES branches (id) ON DELETE SET NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Body measurements; every value is encrypted like the profile's.
CREATE TABLE body_metrics (
    id                         uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id                    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    measured_at                timestamptz NOT NULL,
    weight_kg_enc              bytea,
    body_fat_percent_enc       bytea,
    muscle_mass_kg_enc         bytea,
    resting_heart_rate_bpm_enc bytea,
    created_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX body_metrics_user_time_idx ON body_metrics (user_id, measured_at DESC, id DESC);

-- Privacy choices. Everything starts off (privacy by default, GDPR art. 25):
-- the app asks during onboarding.
CREATE TABLE privacy_settings (
    user_id                 uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    appear_on_leaderboards  boolean     NOT NULL DEFAULT false,
    share_analytics         boolean     NOT NULL DEFAULT false,
    marketing_notifications boolean     NOT NULL DEFAULT false,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- GDPR exports: built by a job into S3 under users/{user_id}/exports/.
CREATE TABLE data_exports (
    id             uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed', 'expired')),
    object_key     text,
    failure_reason text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    expires_at     timestamptz
);
CREATE INDEX data_exports_user_idx ON data_exports (user_id, created_at DESC);
-- At most one export in progress per user: asking again returns it.
CREATE UNIQUE INDEX data_exports_one_pending_idx ON data_exports (user_id) WHERE status = 'pending';

-- +goose Down
DROP TABLE data_exports;
DROP TABLE privacy_settings;
DROP TABLE body_metrics;
DROP TABLE profiles;
DROP TABLE staff_branches;
DROP TABLE users;
