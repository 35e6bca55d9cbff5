-- +goose Up

-- The exercise catalogue. ids are stable slugs the apps, plans and sets
-- refer to; equipment and muscle groups use the API's enum names in lower
-- case. machine_types are the machines.machine_type values of the floor
-- machines that perform the exercise: a set a linked machine reports lands
-- on the first exercise (by id) its machine type performs.
CREATE TABLE exercises (
    id            text    PRIMARY KEY CHECK (id ~ '^[a-z0-9-]{1,64}$'),
    name          text    NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 100),
    muscle_groups text[]  NOT NULL CHECK (cardinality(muscle_groups) >= 1 AND muscle_groups <@ ARRAY[
        'chest', 'back', 'shoulders', 'biceps', 'triceps', 'core', 'quadriceps',
        'hamstrings', 'glutes', 'calves', 'cardio', 'full_body']),
    equipment     text    NOT NULL CHECK (equipment IN (
        'bodyweight', 'dumbbell', 'barbell', 'kettlebell', 'resistance_band', 'cable',
        'treadmill', 'bike', 'rower', 'elliptical', 'stair_climber', 'chest_press',
        'leg_press', 'shoulder_press', 'lat_pulldown', 'smith', 'rack')),
    machine_types text[]  NOT NULL DEFAULT '{}' CHECK (machine_types <@ ARRAY[
        'treadmill', 'bike', 'rower', 'elliptical', 'stair_climber', 'chest_press',
        'leg_press', 'shoulder_press', 'lat_pulldown', 'cable', 'smith', 'rack']),
    cardio        boolean NOT NULL DEFAULT false
);
CREATE INDEX exercises_name_idx ON exercises (name, id);
CREATE INDEX exercises_machine_types_idx ON exercises USING gin (machine_types);

INSERT INTO exercises (id, name, muscle_groups, equipment, machine_types, cardio) VALUES
-- Cardio machines.
('treadmill-run', 'Treadmill run', '{cardio,quadriceps,calves}', 'treadmill', '{treadmill}', true),
('treadmill-walk-incline', 'Incline treadmill walk', '{cardio,glutes,calves}', 'treadmill', '{treadmill}', true),
('bike-steady-ride', 'Stationary bike ride', '{cardio,quadriceps}', 'bike', '{bike}', true),
('bike-intervals', 'Bike intervals', '{cardio,quadriceps,glutes}', 'bike', '{bike}', true),
('rowing-machine', 'Rowing machine', '{cardio,back,full_body}', 'rower', '{rower}', true),
('rowing-intervals', 'Rowing intervals', '{cardio,back,full_body}', 'rower', '{rower}', true),
('elliptical-trainer', 'Elliptical trainer', '{cardio,full_body}', 'elliptical', '{elliptical}', true),
('stair-climber', 'Stair climber', '{cardio,glutes,quadriceps}', 'stair_climber', '{stair_climber}', true),
-- Selectorised machines.
('machine-chest-press', 'Machine chest press', '{chest,triceps,shoulders}', 'chest_press', '{chest_press}', false),
('machine-incline-chest-press', 'Machine incline chest press', '{chest,shoulders,triceps}', 'chest_press', '{chest_press}', false),
('leg-press', 'Leg press', '{quadriceps,glutes,hamstrings}', 'leg_press', '{leg_press}', false),
('leg-press-calf-raise', 'Leg press calf raise', '{calves}', 'leg_press', '{leg_press}', false),
('machine-shoulder-press', 'Machine shoulder press', '{shoulders,triceps}', 'shoulder_press', '{shoulder_press}', false),
('lat-pulldown', 'Lat pulldown', '{back,biceps}', 'lat_pulldown', '{lat_pulldown,cable}', false),
('close-grip-lat-pulldown', 'Close-grip lat pulldown', '{back,biceps}', 'lat_pulldown', '{lat_pulldown,cable}', false),
-- Cable station.
('cable-crunch', 'Cable crunch', '{core}', 'cable', '{cable}', false),
('cable-fly', 'Cable fly', '{chest,shoulders}', 'cable', '{cable}', false),
('cable-face-pull', 'Cable face pull', '{shoulders,back}', 'cable', '{cable}', false),
('cable-lateral-raise', 'Cable lateral raise', '{shoulders}', 'cable', '{cable}', false),
('cable-biceps-curl', 'Cable biceps curl', '{biceps}', 'cable', '{cable}', false),
('cable-triceps-pushdown', 'Cable triceps pushdown', '{triceps}', 'cable', '{cable}', false),
('seated-cable-row', 'Seated cable row', '{back,biceps}', 'cable', '{cable}', false),
('cable-woodchop', 'Cable woodchop', '{core,shoulders}', 'cable', '{cable}', false),
('cable-pull-through', 'Cable pull-through', '{glutes,hamstrings}', 'cable', '{cable}', false),
-- Barbell, in a rack or on a Smith machine where it needs one.
('barbell-back-squat', 'Barbell back squat', '{quadriceps,glutes,core}', 'rack', '{rack}', false),
('barbell-front-squat', 'Barbell front squat', '{quadriceps,core}', 'rack', '{rack}', false),
('barbell-bench-press', 'Barbell bench press', '{chest,triceps,shoulders}', 'barbell', '{rack}', false),
('barbell-overhead-press', 'Barbell overhead press', '{shoulders,triceps}', 'barbell', '{rack}', false),
('barbell-deadlift', 'Barbell deadlift', '{hamstrings,glutes,back}', 'barbell', '{}', false),
('romanian-deadlift', 'Romanian deadlift', '{hamstrings,glutes}', 'barbell', '{}', false),
('barbell-bent-over-row', 'Barbell bent-over row', '{back,biceps}', 'barbell', '{}', false),
('barbell-hip-thrust', 'Barbell hip thrust', '{glutes,hamstrings}', 'barbell', '{}', false),
('barbell-curl', 'Barbell curl', '{biceps}', 'barbell', '{}', false),
('rack-pull', 'Rack pull', '{back,glutes,hamstrings}', 'rack', '{rack}', false),
('smith-machine-bench-press', 'Smith machine bench press', '{chest,triceps}', 'smith', '{smith}', false),
('smith-machine-squat', 'Smith machine squat', '{quadriceps,glutes}', 'smith', '{smith}', false),
('smith-machine-shoulder-press', 'Smith machine shoulder press', '{shoulders,triceps}', 'smith', '{smith}', false),
-- Dumbbells.
('dumbbell-bench-press', 'Dumbbell bench press', '{chest,triceps}', 'dumbbell', '{}', false),
('dumbbell-incline-press', 'Dumbbell incline press', '{chest,shoulders}', 'dumbbell', '{}', false),
('dumbbell-shoulder-press', 'Dumbbell shoulder press', '{shoulders,triceps}', 'dumbbell', '{}', false),
('dumbbell-lateral-raise', 'Dumbbell lateral raise', '{shoulders}', 'dumbbell', '{}', false),
('dumbbell-row', 'One-arm dumbbell row', '{back,biceps}', 'dumbbell', '{}', false),
('dumbbell-biceps-curl', 'Dumbbell biceps curl', '{biceps}', 'dumbbell', '{}', false),
('dumbbell-hammer-curl', 'Dumbbell hammer curl', '{biceps}', 'dumbbell', '{}', false),
('dumbbell-overhead-triceps-extension', 'Dumbbell overhead triceps extension', '{triceps}', 'dumbbell', '{}', false),
('goblet-squat', 'Goblet squat', '{quadriceps,glutes}', 'dumbbell', '{}', false),
('dumbbell-walking-lunge', 'Dumbbell walking lunge', '{quadriceps,glutes}', 'dumbbell', '{}', false),
('dumbbell-romanian-deadlift', 'Dumbbell Romanian deadlift', '{hamstrings,glutes}', 'dumbbell', '{}', false),
-- Kettlebells.
('kettlebell-swing', 'Kettlebell swing', '{glutes,hamstrings,full_body}', 'kettlebell', '{}', false),
('kettlebell-goblet-squat', 'Kettlebell goblet squat', '{quadriceps,glutes}', 'kettlebell', '{}', false),
('kettlebell-turkish-get-up', 'Kettlebell Turkish get-up', '{full_body,shoulders,core}', 'kettlebell', '{}', false),
('kettlebell-clean-and-press', 'Kettlebell clean and press', '{full_body,shoulders}', 'kettlebell', '{}', false),
-- Resistance bands.
('band-pull-apart', 'Band pull-apart', '{shoulders,back}', 'resistance_band', '{}', false),
('band-glute-bridge', 'Banded glute bridge', '{glutes}', 'resistance_band', '{}', false),
-- Bodyweight.
('push-up', 'Push-up', '{chest,triceps,shoulders}', 'bodyweight', '{}', false),
('pull-up', 'Pull-up', '{back,biceps}', 'bodyweight', '{}', false),
('chin-up', 'Chin-up', '{biceps,back}', 'bodyweight', '{}', false),
('bodyweight-squat', 'Bodyweight squat', '{quadriceps,glutes}', 'bodyweight', '{}', false),
('reverse-lunge', 'Reverse lunge', '{quadriceps,glutes}', 'bodyweight', '{}', false),
('glute-bridge', 'Glute bridge', '{glutes,hamstrings}', 'bodyweight', '{}', false),
('plank', 'Plank', '{core}', 'bodyweight', '{}', false),
('side-plank', 'Side plank', '{core}', 'bodyweight', '{}', false),
('hanging-leg-raise', 'Hanging leg raise', '{core}', 'bodyweight', '{}', false),
('bench-dip', 'Bench dip', '{triceps,chest}', 'bodyweight', '{}', false),
('burpee', 'Burpee', '{full_body,cardio}', 'bodyweight', '{}', true),
('mountain-climber', 'Mountain climber', '{core,cardio}', 'bodyweight', '{}', true),
('jumping-jack', 'Jumping jack', '{cardio,full_body}', 'bodyweight', '{}', true),
('standing-calf-raise', 'Standing calf raise', '{calves}', 'bodyweight', '{}', false);

-- Workout plans: a member's request and, once the planner answered, its
-- plan (days holds the plan's days as JSON). The plan's id is the
-- request's. stale says days are a copy of the member's most recent
-- earlier plan, shown while the planner cannot be reached.
CREATE TABLE workout_plans (
    id                uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_request_id text        CHECK (char_length(client_request_id) BETWEEN 1 AND 64),
    goal              text        NOT NULL CHECK (goal IN ('lose_weight', 'build_muscle', 'increase_strength', 'improve_endurance', 'general_fitness')),
    days_per_week     integer     NOT NULL CHECK (days_per_week BETWEEN 1 AND 7),
    session_minutes   integer     NOT NULL CHECK (session_minutes BETWEEN 15 AND 180),
    equipment         text[]      NOT NULL DEFAULT '{}',
    notes             text        NOT NULL DEFAULT '' CHECK (char_length(notes) <= 500),
    status            text        NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    failure_reason    text        NOT NULL DEFAULT '',
    stale             boolean     NOT NULL DEFAULT false,
    from_cache        boolean     NOT NULL DEFAULT false,
    name              text        NOT NULL DEFAULT '',
    days              jsonb,
    cache_key         text        NOT NULL DEFAULT '',
    active            boolean     NOT NULL DEFAULT false,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    ready_at          timestamptz,
    CONSTRAINT workout_plans_client_request_key UNIQUE (user_id, client_request_id)
);
CREATE INDEX workout_plans_user_idx ON workout_plans (user_id, requested_at DESC, id DESC);
-- A member follows at most one plan.
CREATE UNIQUE INDEX workout_plans_active_key ON workout_plans (user_id) WHERE active;

-- Workouts: a member has at most one open (not completed) workout.
CREATE TABLE workouts (
    id           uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_id      uuid        REFERENCES workout_plans (id) ON DELETE SET NULL,
    day_index    integer     NOT NULL DEFAULT 0 CHECK (day_index BETWEEN 0 AND 6),
    started_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE UNIQUE INDEX workouts_open_user_key ON workouts (user_id) WHERE completed_at IS NULL;
CREATE INDEX workouts_user_started_idx ON workouts (user_id, started_at DESC, id DESC);

-- Sets done in a workout, from the app or a linked machine. client_set_id
-- is the idempotency key within the workout: the app's ids match
-- ^[A-Za-z0-9._:-]+$, a machine's are "machine/<machine_sets.id>", which
-- the app's pattern cannot produce, so the two never clash.
CREATE TABLE workout_sets (
    id               uuid             PRIMARY KEY DEFAULT nxg_uuidv7(),
    workout_id       uuid             NOT NULL REFERENCES workouts (id) ON DELETE CASCADE,
    user_id          uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    exercise_id      text             NOT NULL REFERENCES exercises (id),
    reps             integer          NOT NULL DEFAULT 0 CHECK (reps BETWEEN 0 AND 1000),
    weight_kg        double precision NOT NULL DEFAULT 0 CHECK (weight_kg BETWEEN 0 AND 1000),
    duration_seconds integer          NOT NULL DEFAULT 0 CHECK (duration_seconds BETWEEN 0 AND 86400),
    distance_m       double precision NOT NULL DEFAULT 0 CHECK (distance_m BETWEEN 0 AND 200000),
    rpe              double precision NOT NULL DEFAULT 0 CHECK (rpe BETWEEN 0 AND 10),
    calories         double precision NOT NULL DEFAULT 0 CHECK (calories BETWEEN 0 AND 10000),
    client_set_id    text             NOT NULL CHECK (char_length(client_set_id) BETWEEN 1 AND 64),
    source           text             NOT NULL CHECK (source IN ('app', 'machine')),
    machine_id       uuid             REFERENCES machines (id) ON DELETE SET NULL,
    machine_set_id   uuid             UNIQUE REFERENCES machine_sets (id) ON DELETE SET NULL,
    logged_at        timestamptz      NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT workout_sets_client_key UNIQUE (workout_id, client_set_id)
);
CREATE INDEX workout_sets_workout_idx ON workout_sets (workout_id, logged_at, id);
CREATE INDEX workout_sets_user_idx ON workout_sets (user_id, logged_at DESC);

-- +goose Down
DROP TABLE workout_sets;
DROP TABLE workouts;
DROP TABLE workout_plans;
DROP TABLE exercises;
