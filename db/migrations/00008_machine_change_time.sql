-- +goose Up

-- A machine's updated_at is the moment its change was written, not the
-- start of the transaction that wrote it. now() is the transaction's
-- start, so a transaction that began before another but changed the
-- machine after it stamped the newer version with the older time, and
-- watchers saw updated_at go backwards from one version to the next. A
-- report batch also makes several round trips before its update: its
-- now() said the change happened tens of milliseconds before it did.
-- clock_timestamp() is read when the row is updated, which the row lock
-- orders after the previous version's commit; greatest() keeps the time
-- from ever going backwards even if the host clock steps back.

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nxg_machines_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.branch_id, NEW.name, NEW.machine_type, NEW.nfc_tag, NEW.maintenance, NEW.fault, NEW.online, NEW.current_link_id)
       IS DISTINCT FROM
       (OLD.branch_id, OLD.name, OLD.machine_type, OLD.nfc_tag, OLD.maintenance, OLD.fault, OLD.online, OLD.current_link_id) THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at);
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- +goose Down

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION nxg_machines_version() RETURNS trigger LANGUAGE plpgsql AS $$
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
