package floor

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

func TestLandMachineSets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReportsFixture(t)
	press := f.machine(t, "chest_press")
	l := f.link(t, press)
	r := f.reporter(t, ReporterOptions{MaxBatch: 1, Window: time.Millisecond, Writers: 1})
	countSets := func(workout uuid.UUID) int {
		t.Helper()
		var n int
		if err := f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM workout_sets WHERE workout_id = $1 AND source = 'machine'`, workout).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// A set opens a workout for the member and lands in it, once however
	// often it is landed.
	first, err := r.Report(ctx, setReport(press, "a", SetValues{Reps: 10, WeightKg: 40, DurationSeconds: 30}))
	if err != nil || first.Duplicate {
		t.Fatalf("report = %+v, %v", first, err)
	}
	var workout uuid.UUID
	if err := f.db.Pool.QueryRow(ctx, `SELECT id FROM workouts WHERE user_id = $1 AND completed_at IS NULL`, l.user).Scan(&workout); err != nil {
		t.Fatalf("no open workout after a machine set: %v", err)
	}
	if err := pgx.BeginFunc(ctx, f.db.Pool, func(tx pgx.Tx) error { return LandMachineSets(ctx, tx, []uuid.UUID{first.Set.ID}) }); err != nil {
		t.Fatal(err)
	}
	if n := countSets(workout); n != 1 {
		t.Fatalf("%d machine sets in the workout, want the one, landed once", n)
	}

	// A set landing while the workout is being completed waits for that,
	// then goes to a new workout rather than into the completed one.
	second, err := r.Report(ctx, setReport(press, "b", SetValues{Reps: 8, WeightKg: 45, DurationSeconds: 30}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Pool.Exec(ctx, `DELETE FROM workout_sets WHERE client_set_id = $1`, "machine/"+second.Set.ID.String()); err != nil {
		t.Fatal(err)
	}
	completing, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer completing.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := completing.Exec(ctx, `UPDATE workouts SET completed_at = now() WHERE id = $1`, workout); err != nil {
		t.Fatal(err)
	}
	landed := make(chan error, 1)
	go func() {
		landed <- pgx.BeginFunc(ctx, f.db.Pool, func(tx pgx.Tx) error { return LandMachineSets(ctx, tx, []uuid.UUID{second.Set.ID}) })
	}()
	select {
	case err := <-landed:
		t.Fatalf("landing did not wait for the workout being completed (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := completing.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-landed; err != nil {
		t.Fatal(err)
	}
	if n := countSets(workout); n != 1 {
		t.Fatalf("%d machine sets in the completed workout, want still 1", n)
	}
	var next uuid.UUID
	if err := f.db.Pool.QueryRow(ctx, `SELECT id FROM workouts WHERE user_id = $1 AND completed_at IS NULL`, l.user).Scan(&next); err != nil || next == workout {
		t.Fatalf("open workout after completion = %v, %v; want a new one", next, err)
	}
	if n := countSets(next); n != 1 {
		t.Fatalf("%d machine sets in the new workout, want the set that was landing", n)
	}

	// The other order: completing a workout while a set is landing in it
	// waits for the landing, so the completed workout holds the set.
	third, err := r.Report(ctx, setReport(press, "c", SetValues{Reps: 6, WeightKg: 50, DurationSeconds: 30}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Pool.Exec(ctx, `DELETE FROM workout_sets WHERE client_set_id = $1`, "machine/"+third.Set.ID.String()); err != nil {
		t.Fatal(err)
	}
	landing, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer landing.Rollback(ctx) //nolint:errcheck // committed below
	if err := LandMachineSets(ctx, landing, []uuid.UUID{third.Set.ID}); err != nil {
		t.Fatal(err)
	}
	completed := make(chan error, 1)
	go func() {
		_, err := f.db.Pool.Exec(ctx, `UPDATE workouts SET completed_at = now() WHERE id = $1 AND completed_at IS NULL`, next)
		completed <- err
	}()
	select {
	case err := <-completed:
		t.Fatalf("the workout was completed while a set was landing in it (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := landing.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-completed; err != nil {
		t.Fatal(err)
	}
	if n := countSets(next); n != 2 {
		t.Fatalf("%d machine sets in the completed workout, want both", n)
	}
}
