-- +goose Up

-- A membership lets a user use one branch (branch_id) or every branch
-- (branch_id NULL) from valid_from until valid_until (NULL: open-ended),
-- unless ended early (ended_at). created_by is who granted it, kept only
-- while that account exists.
CREATE TABLE memberships (
    id          uuid        PRIMARY KEY DEFAULT nxg_uuidv7(),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    branch_id   uuid        REFERENCES branches (id),
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz,
    ended_at    timestamptz,
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_valid_range CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX memberships_user_idx ON memberships (user_id, valid_from DESC);
-- Branch listings and the foreign key's checks on branch deletion.
CREATE INDEX memberships_branch_idx ON memberships (branch_id, created_at DESC, id DESC);
-- The keyset order of unfiltered listings.
CREATE INDEX memberships_created_idx ON memberships (created_at DESC, id DESC);
-- ON DELETE SET NULL of created_by scans by it when an account is erased.
CREATE INDEX memberships_created_by_idx ON memberships (created_by) WHERE created_by IS NOT NULL;

-- +goose Down
DROP TABLE memberships;
