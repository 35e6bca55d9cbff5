-- MachineUpsert creates a machine or updates the one with the same NFC tag,
-- which is what identifies a physical machine.
-- name: MachineUpsert :one
INSERT INTO machines (branch_id, name, machine_type, nfc_tag)
VALUES (@branch_id, @name, @machine_type, @nfc_tag)
ON CONFLICT (nfc_tag) DO UPDATE
SET branch_id = EXCLUDED.branch_id,
    name = EXCLUDED.name,
    machine_type = EXCLUDED.machine_type,
    updated_at = CASE
        WHEN (machines.branch_id, machines.name, machines.machine_type)
             IS DISTINCT FROM (EXCLUDED.branch_id, EXCLUDED.name, EXCLUDED.machine_type)
        THEN now() ELSE machines.updated_at END
RETURNING *;

-- name: MachineCountByBranch :many
SELECT branch_id, count(*) AS machines
FROM machines
GROUP BY branch_id
ORDER BY branch_id;
