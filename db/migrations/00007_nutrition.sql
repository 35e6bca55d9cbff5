-- +goose Up

-- Nutrition (FR5): meal photos, what the outside meal detector saw in them,
-- meals, daily macro targets and meal plans from the outside meal planner.
--
-- What a member ate is health data (GDPR art. 9), so the foods of meals and
-- analyses are sealed with the member's data key like the profile's fields
-- (internal/fieldcrypt): items_enc is the AES-GCM sealed JSON array of the
-- items, bound to the user and the column. Nothing queries inside the items
-- (totals are summed after opening them), so sealing costs one AES-GCM open
-- per row read. Left in the clear, because they are needed to find rows or
-- say little on their own: times, meal types, statuses, photo sizes, and
-- the targets and meal plan requests (a meal plan is generated menu text,
-- and its cached copy in MongoDB is plain as well, so sealing the
-- PostgreSQL copy alone would protect nothing).

-- A photo a member was given a presigned PUT URL for. The object lives under
-- users/{user_id}/, so erasing the member deletes it with one prefix.
CREATE TABLE meal_photo_uploads (
    id           uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    object_key   text        NOT NULL UNIQUE CHECK (char_length(object_key) BETWEEN 1 AND 1024),
    content_type text        NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/heic')),
    size_bytes   bigint      NOT NULL CHECK (size_bytes BETWEEN 1 AND 10485760),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX meal_photo_uploads_user_idx ON meal_photo_uploads (user_id, created_at DESC);

-- One analysis per upload: asking again returns the same one.
CREATE TABLE meal_analyses (
    id             uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    upload_id      uuid        NOT NULL UNIQUE REFERENCES meal_photo_uploads (id) ON DELETE CASCADE,
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    -- A sentence the app can show: why it failed, or why it is still pending.
    failure_reason text        NOT NULL DEFAULT '' CHECK (char_length(failure_reason) <= 500),
    items_enc      bytea,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meal_analyses_user_idx ON meal_analyses (user_id, requested_at DESC);

CREATE TABLE meals (
    id             uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- '' when the client sent none; otherwise one meal per id and member.
    client_meal_id text        NOT NULL DEFAULT '' CHECK (char_length(client_meal_id) <= 64),
    eaten_at       timestamptz NOT NULL,
    meal_type      text        NOT NULL CHECK (meal_type IN ('breakfast', 'lunch', 'dinner', 'snack')),
    items_enc      bytea       NOT NULL,
    analysis_id    uuid        REFERENCES meal_analyses (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX meals_client_key ON meals (user_id, client_meal_id) WHERE client_meal_id <> '';
CREATE INDEX meals_user_time_idx ON meals (user_id, eaten_at DESC, id DESC);

CREATE TABLE macro_targets (
    user_id      uuid             PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    kcal         double precision NOT NULL CHECK (kcal BETWEEN 0 AND 10000),
    protein_g    double precision NOT NULL CHECK (protein_g BETWEEN 0 AND 1000),
    carbs_g      double precision NOT NULL CHECK (carbs_g BETWEEN 0 AND 1000),
    fat_g        double precision NOT NULL CHECK (fat_g BETWEEN 0 AND 1000),
    from_profile boolean          NOT NULL DEFAULT false,
    updated_at   timestamptz      NOT NULL DEFAULT now()
);

-- A meal plan request and, once ready, its plan (the planner's validated
-- answer as JSON). The targets are copied in when it is made, so the job
-- and the cache key do not depend on targets changing later.
CREATE TABLE meal_plan_requests (
    id                uuid             PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id           uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_request_id text             NOT NULL DEFAULT '' CHECK (char_length(client_request_id) <= 64),
    days              integer          NOT NULL CHECK (days BETWEEN 1 AND 14),
    kcal_target       double precision NOT NULL CHECK (kcal_target BETWEEN 1000 AND 6000),
    protein_g         double precision NOT NULL DEFAULT 0,
    carbs_g           double precision NOT NULL DEFAULT 0,
    fat_g             double precision NOT NULL DEFAULT 0,
    diet              text             NOT NULL CHECK (diet IN ('omnivore', 'vegetarian', 'vegan', 'pescatarian', 'keto')),
    exclusions        text[]           NOT NULL DEFAULT '{}',
    cache_key         text             NOT NULL,
    status            text             NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    failure_reason    text             NOT NULL DEFAULT '' CHECK (char_length(failure_reason) <= 500),
    stale             boolean          NOT NULL DEFAULT false,
    from_cache        boolean          NOT NULL DEFAULT false,
    plan              jsonb,
    requested_at      timestamptz      NOT NULL DEFAULT now(),
    ready_at          timestamptz,
    updated_at        timestamptz      NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX meal_plan_requests_client_key ON meal_plan_requests (user_id, client_request_id) WHERE client_request_id <> '';
CREATE INDEX meal_plan_requests_user_idx ON meal_plan_requests (user_id, requested_at DESC);

-- +goose Down
DROP TABLE meal_plan_requests;
DROP TABLE macro_targets;
DROP TABLE meals;
DROP TABLE meal_analyses;
DROP TABLE meal_photo_uploads;
