package testkit_test

import (
	"context"
	"testing"

	"github.com/nxg-fitness/nxg/internal/testkit"
)

func TestNewDatabase(t *testing.T) {
	t.Parallel()

	t.Run("IsMigratedAndPrivate", func(t *testing.T) {
		t.Parallel()
		a, b := testkit.NewDatabase(t), testkit.NewDatabase(t)
		ctx := context.Background()
		if _, err := a.Pool.Exec(ctx, `INSERT INTO branches (name, address, timezone, capacity) VALUES ('A', 'x', 'UTC', 10)`); err != nil {
			t.Fatalf("insert into clone: %v", err)
		}
		var n int
		if err := b.Pool.QueryRow(ctx, `SELECT count(*) FROM branches`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("second database sees %d branches of the first; want 0", n)
		}
		var riverTable bool
		if err := a.Pool.QueryRow(ctx, `SELECT to_regclass('river_job') IS NOT NULL`).Scan(&riverTable); err != nil {
			t.Fatal(err)
		}
		if !riverTable {
			t.Fatal("river_job table missing: River migrations were not applied to the template")
		}
	})
}

func TestNewRedis(t *testing.T) {
	t.Parallel()
	r1, r2 := testkit.NewRedis(t), testkit.NewRedis(t)
	if r1.Prefix == r2.Prefix {
		t.Fatalf("two tests share the key prefix %q", r1.Prefix)
	}
	ctx := context.Background()
	if err := r1.Client.Set(ctx, r1.Prefix+"k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := r1.Client.Get(ctx, r1.Prefix+"k").Val(); got != "v" {
		t.Fatalf("get = %q, want v", got)
	}
}
