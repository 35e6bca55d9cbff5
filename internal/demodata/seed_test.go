package demodata_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/internal/demodata"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// snapshot is every seeded row, rendered so two snapshots compare with ==.
type snapshot struct {
	branches, machines, hours []string
}

func takeSnapshot(t *testing.T, pool *pgxpool.Pool) snapshot {
	t.Helper()
	rows := func(sql string) []string {
		t.Helper()
		r, err := pool.Query(context.Background(), sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		out, err := pgx.CollectRows(r, func(row pgx.CollectableRow) (string, error) {
			v, err := row.Values()
			return fmt.Sprint(v), err
		})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	return snapshot{
		branches: rows(`SELECT id::text, name, address, timezone, capacity, created_at, updated_at FROM branches ORDER BY name`),
		machines: rows(`SELECT id::text, branch_id::text, name, machine_type, status, nfc_tag, created_at, updated_at FROM machines ORDER BY nfc_tag`),
		hours:    rows(`SELECT branch_id::text, weekday, opens_at::text, closes_at::text FROM branch_opening_hours ORDER BY branch_id, weekday, opens_at`),
	}
}

func TestSeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testkit.NewDatabase(t).Pool

	if err := demodata.Seed(ctx, pool); err != nil {
		t.Fatalf("first Seed: %v", err)
	}
	first := takeSnapshot(t, pool)
	// updated_at only moves when a row changes; give a change a clock
	// tick to show up.
	time.Sleep(5 * time.Millisecond)
	if err := demodata.Seed(ctx, pool); err != nil {
		t.Fatalf("second Seed: %v", err)
	}
	second := takeSnapshot(t, pool)

	t.Run("SecondRunChangesNothing", func(t *testing.T) {
		for _, c := range []struct {
			what          string
			first, second []string
		}{
			{"branches", first.branches, second.branches},
			{"machines", first.machines, second.machines},
			{"opening hours", first.hours, second.hours},
		} {
			if !slices.Equal(c.first, c.second) {
				t.Errorf("%s changed on the second Seed:\nfirst:  %q\nsecond: %q", c.what, c.first, c.second)
			}
		}
	})

	t.Run("Branches", func(t *testing.T) {
		if len(demodata.Branches) < 2 {
			t.Fatalf("demo network has %d branches, want at least 2", len(demodata.Branches))
		}
		if len(second.branches) != len(demodata.Branches) {
			t.Fatalf("%d branches in the database, want %d", len(second.branches), len(demodata.Branches))
		}
		zones := map[string]bool{}
		for _, b := range demodata.Branches {
			var capacity int32
			var tz string
			if err := pool.QueryRow(ctx, `SELECT timezone, capacity FROM branches WHERE name = $1`, b.Name).Scan(&tz, &capacity); err != nil {
				t.Fatalf("branch %q: %v", b.Name, err)
			}
			if tz != b.Timezone || capacity != b.Capacity {
				t.Errorf("branch %q: timezone %q capacity %d, want %q %d", b.Name, tz, capacity, b.Timezone, b.Capacity)
			}
			if _, err := time.LoadLocation(tz); err != nil {
				t.Errorf("branch %q: time zone %q does not load: %v", b.Name, tz, err)
			}
			zones[tz] = true
		}
		if len(zones) < 2 {
			t.Errorf("branches span time zones %v, want at least two", slices.Collect(maps.Keys(zones)))
		}
	})

	t.Run("Machines", func(t *testing.T) {
		for _, b := range demodata.Branches {
			var n, types int
			if err := pool.QueryRow(ctx, `
				SELECT count(*), count(DISTINCT m.machine_type)
				FROM machines m JOIN branches b ON b.id = m.branch_id
				WHERE b.name = $1`, b.Name).Scan(&n, &types); err != nil {
				t.Fatalf("machines of %q: %v", b.Name, err)
			}
			if n < 6 || n != len(b.Machines) {
				t.Errorf("branch %q has %d machines, want %d (at least 6)", b.Name, n, len(b.Machines))
			}
			if types < 3 {
				t.Errorf("branch %q has %d machine types, want at least 3", b.Name, types)
			}
		}
		var available int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM machines WHERE status = 'available'`).Scan(&available); err != nil {
			t.Fatal(err)
		}
		if available != len(second.machines) {
			t.Errorf("%d of %d demo machines are available, want all", available, len(second.machines))
		}
	})

	t.Run("OpeningHours", func(t *testing.T) {
		for _, b := range demodata.Branches {
			r, err := pool.Query(ctx, `
				SELECT h.weekday, to_char(h.opens_at, 'HH24:MI'), to_char(h.closes_at, 'HH24:MI')
				FROM branch_opening_hours h JOIN branches b ON b.id = h.branch_id
				WHERE b.name = $1 ORDER BY h.weekday`, b.Name)
			if err != nil {
				t.Fatal(err)
			}
			type day struct {
				Weekday       int16
				Opens, Closes string
			}
			days, err := pgx.CollectRows(r, pgx.RowToStructByPos[day])
			if err != nil {
				t.Fatal(err)
			}
			if len(days) != 7 {
				t.Fatalf("branch %q has %d opening-hour rows, want 7", b.Name, len(days))
			}
			for i, d := range days {
				want := b.Hours[int16(i+1)]
				// PostgreSQL prints time 24:00 as 24:00.
				if d.Weekday != int16(i+1) || d.Opens != want[0] || d.Closes != want[1] {
					t.Errorf("branch %q day %d = %+v, want %s-%s", b.Name, i+1, d, want[0], want[1])
				}
			}
		}
	})

	t.Run("RestoresEditedRows", func(t *testing.T) {
		// A developer edits the demo data; seeding puts it back.
		db := testkit.NewDatabase(t).Pool
		if err := demodata.Seed(ctx, db); err != nil {
			t.Fatal(err)
		}
		b := demodata.Branches[0]
		if _, err := db.Exec(ctx, `UPDATE branches SET capacity = 1 WHERE name = $1`, b.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, `DELETE FROM branch_opening_hours WHERE weekday = 3`); err != nil {
			t.Fatal(err)
		}
		if err := demodata.Seed(ctx, db); err != nil {
			t.Fatalf("Seed after edits: %v", err)
		}
		var capacity int32
		var hours int
		if err := db.QueryRow(ctx, `SELECT capacity, (SELECT count(*) FROM branch_opening_hours) FROM branches WHERE name = $1`, b.Name).Scan(&capacity, &hours); err != nil {
			t.Fatal(err)
		}
		if capacity != b.Capacity || hours != 7*len(demodata.Branches) {
			t.Fatalf("after re-seeding: capacity %d, %d opening-hour rows; want %d, %d", capacity, hours, b.Capacity, 7*len(demodata.Branches))
		}
	})

	t.Run("TagsUniqueAcrossNetwork", func(t *testing.T) {
		seen := map[string]string{}
		for _, b := range demodata.Branches {
			for _, m := range b.Machines {
				if other, dup := seen[m.Tag]; dup {
					t.Errorf("tag %q is on %q and %q", m.Tag, other, b.Name+"/"+m.Name)
				}
				seen[m.Tag] = b.Name + "/" + m.Name
				if strings.TrimSpace(m.Tag) == "" {
					t.Errorf("machine %q of %q has no tag", m.Name, b.Name)
				}
			}
		}
	})
}
