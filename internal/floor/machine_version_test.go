package floor

import (
	"context"
	"testing"
	"time"
)

// TestMachineChangeTime checks the machines trigger: a change's updated_at
// is when the row was written, so versions and times move forward
// together even when the transaction that writes the newer version began
// before the one that wrote the older.
func TestMachineChangeTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newReportsFixture(t)
	m := f.machine(t, "rower")

	early, err := f.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = early.Rollback(ctx) }()
	var earlyStart time.Time
	if err := early.QueryRow(ctx, `SELECT now()`).Scan(&earlyStart); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)

	// Another transaction, begun later, writes a version first.
	var v1 int64
	var t1 time.Time
	if err := f.db.Pool.QueryRow(ctx, `UPDATE machines SET fault = true WHERE id = $1 RETURNING version, updated_at`, m).Scan(&v1, &t1); err != nil {
		t.Fatal(err)
	}
	if !t1.After(earlyStart) {
		t.Fatalf("first change stamped %v, not after the early transaction's start %v", t1, earlyStart)
	}

	// The early transaction writes the next version: its time is the
	// write's, after the first change, not its own start.
	var v2 int64
	var t2 time.Time
	if err := early.QueryRow(ctx, `UPDATE machines SET fault = false WHERE id = $1 RETURNING version, updated_at`, m).Scan(&v2, &t2); err != nil {
		t.Fatal(err)
	}
	if err := early.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v2 != v1+1 || !t2.After(t1) {
		t.Fatalf("version %d at %v after version %d at %v: want the next version at a later time", v2, t2, v1, t1)
	}

	// A write that changes nothing visible keeps both.
	var v3 int64
	var t3 time.Time
	if err := f.db.Pool.QueryRow(ctx, `UPDATE machines SET fault = false WHERE id = $1 RETURNING version, updated_at`, m).Scan(&v3, &t3); err != nil {
		t.Fatal(err)
	}
	if v3 != v2 || !t3.Equal(t2) {
		t.Fatalf("an update changing nothing moved version %d→%d, time %v→%v", v2, v3, t2, t3)
	}
}
