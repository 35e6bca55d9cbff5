package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

func TestMasterKeyRewrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ring := func(t *testing.T, specs ...string) *fieldcrypt.MasterKeys {
		t.Helper()
		spec := ""
		for i, s := range specs {
			if i > 0 {
				spec += ","
			}
			spec += s
		}
		m, err := fieldcrypt.ParseMasterKeys(spec)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	oldSpec, err := fieldcrypt.GenerateMasterKeySpec("old")
	if err != nil {
		t.Fatal(err)
	}
	newSpec, err := fieldcrypt.GenerateMasterKeySpec("new")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("RotationCompletes", func(t *testing.T) {
		t.Parallel()
		db := testkit.NewDatabase(t)
		oldRing := ring(t, oldSpec)
		// More users than one batch, so the walk across batches is tested.
		const users = 1203
		secrets := map[uuid.UUID][]byte{}
		for i := range users {
			id := uuid.Must(uuid.NewV7())
			dek, wrapped, err := oldRing.NewDataKey(id.String())
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := dek.Seal("phone_enc", []byte(fmt.Sprintf("+4477009%05d", i)))
			if err != nil {
				t.Fatal(err)
			}
			secrets[id] = sealed
			if _, err := db.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key)
				VALUES ($1, $2, 'x', 'U', 'member', $3)`, id, fmt.Sprintf("u%d@example.com", i), wrapped); err != nil {
				t.Fatal(err)
			}
		}

		rotated := ring(t, newSpec, oldSpec)
		w := &jobs.MasterKeyRewrapWorker{Pool: db.Pool, MasterKeys: rotated}
		if err := w.Work(ctx, &river.Job[jobs.MasterKeyRewrapArgs]{}); err != nil {
			t.Fatal(err)
		}

		// The old master key can now be dropped: the new one alone opens
		// every data key, and the data sealed before rotation still opens.
		newOnly := ring(t, newSpec)
		rows, err := db.Pool.Query(ctx, `SELECT id, data_key FROM users`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var id uuid.UUID
			var wrapped []byte
			if err := rows.Scan(&id, &wrapped); err != nil {
				t.Fatal(err)
			}
			dek, err := newOnly.Unwrap(id.String(), wrapped)
			if err != nil {
				t.Fatalf("user %s: not re-wrapped: %v", id, err)
			}
			if _, err := dek.Open("phone_enc", secrets[id]); err != nil {
				t.Fatalf("user %s: data sealed before rotation no longer opens: %v", id, err)
			}
			n++
		}
		if n != users {
			t.Fatalf("checked %d users, want %d", n, users)
		}

		// A second run finds nothing to do and changes nothing.
		var before []byte
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(encode(data_key, 'hex'), ',' ORDER BY id)::bytea FROM users`).Scan(&before); err != nil {
			t.Fatal(err)
		}
		if err := w.Work(ctx, &river.Job[jobs.MasterKeyRewrapArgs]{}); err != nil {
			t.Fatal(err)
		}
		var after []byte
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(encode(data_key, 'hex'), ',' ORDER BY id)::bytea FROM users`).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if string(before) != string(after) {
			t.Fatal("a second run re-wrapped keys again")
		}
	})

	t.Run("UnreadableKeysFailTheJobButNotTheOthers", func(t *testing.T) {
		t.Parallel()
		db := testkit.NewDatabase(t)
		lost := ring(t, oldSpec)
		current := ring(t, newSpec)
		for i, r := range []*fieldcrypt.MasterKeys{lost, current} {
			id := uuid.Must(uuid.NewV7())
			_, wrapped, err := r.NewDataKey(id.String())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key)
				VALUES ($1, $2, 'x', 'U', 'member', $3)`, id, fmt.Sprintf("v%d@example.com", i), wrapped); err != nil {
				t.Fatal(err)
			}
		}
		w := &jobs.MasterKeyRewrapWorker{Pool: db.Pool, MasterKeys: current}
		err := w.Work(ctx, &river.Job[jobs.MasterKeyRewrapArgs]{})
		if err == nil {
			t.Fatal("a data key no master key opens passed unnoticed")
		}
		if want := "1 data keys could not be unwrapped"; !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	})

	t.Run("NotConfigured", func(t *testing.T) {
		t.Parallel()
		if err := (&jobs.MasterKeyRewrapWorker{}).Work(ctx, &river.Job[jobs.MasterKeyRewrapArgs]{}); err == nil {
			t.Fatal("an unconfigured worker succeeded")
		}
	})
}
