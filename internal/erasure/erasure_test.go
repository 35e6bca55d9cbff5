package erasure_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/internal/erasure"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// recorder is an eraser that records its calls and fails while fail > 0.
type recorder struct {
	name  string
	log   *[]string
	fail  int
	users []uuid.UUID
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Erase(_ context.Context, id uuid.UUID) error {
	*r.log = append(*r.log, r.name)
	if r.fail > 0 {
		r.fail--
		return errors.New(r.name + " is down")
	}
	r.users = append(r.users, id)
	return nil
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	fn()
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	user := uuid.Must(uuid.NewV7())

	t.Run("RunsInOrderAndResumes", func(t *testing.T) {
		t.Parallel()
		var calls []string
		a, b, c := &recorder{name: "a", log: &calls}, &recorder{name: "b", log: &calls, fail: 1}, &recorder{name: "c", log: &calls}
		r := erasure.NewRegistry(a, b)
		r.Register(c)
		if got := r.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("Names = %q", got)
		}
		err := r.Erase(ctx, user)
		if err == nil || !strings.Contains(err.Error(), "erasure: b: b is down") {
			t.Fatalf("Erase = %v, want b's error named", err)
		}
		if !slices.Equal(calls, []string{"a", "b"}) {
			t.Fatalf("calls = %q, want a then b, and c not run after b failed", calls)
		}
		// The retry runs everything again; idempotent erasers make that safe.
		if err := r.Erase(ctx, user); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if !slices.Equal(calls, []string{"a", "b", "a", "b", "c"}) {
			t.Fatalf("calls = %q", calls)
		}
		if !slices.Equal(c.users, []uuid.UUID{user}) {
			t.Errorf("c erased %v, want %v", c.users, user)
		}
		// Erasers returns a copy.
		list := r.Erasers()
		list[0] = nil
		if r.Erasers()[0] == nil {
			t.Error("Erasers exposes the registry's slice")
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		var calls []string
		r := erasure.NewRegistry(&recorder{name: "a", log: &calls})
		if err := r.Erase(ctx, uuid.Nil); err == nil || len(calls) != 0 {
			t.Errorf("Erase(uuid.Nil) = %v after %q calls, want refused before any eraser", err, calls)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.Erase(cancelled, user); !errors.Is(err, context.Canceled) || len(calls) != 0 {
			t.Errorf("Erase with a cancelled context = %v, want context.Canceled before any eraser", err)
		}
		mustPanic(t, "Register(nil)", func() { r.Register(nil) })
		mustPanic(t, "Register of a duplicate name", func() { r.Register(&recorder{name: "a", log: &calls}) })
		mustPanic(t, "Register of an empty name", func() { r.Register(&recorder{log: &calls}) })
	})

	t.Run("Func", func(t *testing.T) {
		t.Parallel()
		var got uuid.UUID
		e := erasure.Func("custom", func(_ context.Context, id uuid.UUID) error { got = id; return nil })
		if e.Name() != "custom" {
			t.Errorf("Name = %q", e.Name())
		}
		if err := erasure.NewRegistry(e).Erase(ctx, user); err != nil || got != user {
			t.Errorf("Erase = %v, got %v", err, got)
		}
		if err := erasure.Func("nil", nil).Erase(ctx, user); err == nil {
			t.Error("a Func without a function succeeded")
		}
	})
}

// fakeFiles records DeletePrefix calls.
type fakeFiles struct{ prefixes []string }

func (f *fakeFiles) DeletePrefix(_ context.Context, prefix string) (int, error) {
	f.prefixes = append(f.prefixes, prefix)
	return 0, nil
}

func TestS3Prefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	user := uuid.Must(uuid.NewV7())
	files := &fakeFiles{}
	if err := (erasure.S3Prefix{Storage: files}).Erase(ctx, user); err != nil {
		t.Fatal(err)
	}
	if err := (erasure.S3Prefix{Storage: files, Prefix: "avatars/{user_id}/"}).Erase(ctx, user); err != nil {
		t.Fatal(err)
	}
	if want := []string{"users/" + user.String() + "/", "avatars/" + user.String() + "/"}; !slices.Equal(files.prefixes, want) {
		t.Errorf("prefixes = %q, want %q", files.prefixes, want)
	}
	// A prefix that would reach other users' objects is refused.
	for _, bad := range []string{"users/", "users/{user_id}", "exports"} {
		if err := (erasure.S3Prefix{Storage: files, Prefix: bad}).Erase(ctx, user); err == nil {
			t.Errorf("prefix template %q accepted", bad)
		}
	}
	if len(files.prefixes) != 2 {
		t.Errorf("refused templates still deleted: %q", files.prefixes)
	}
}

// TestUnconfigured: a missing store fails its eraser, never panics or skips.
func TestUnconfigured(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	user := uuid.Must(uuid.NewV7())
	r := erasure.Default(erasure.Deps{MongoCollections: []string{"workout_plans"}})
	for _, e := range r.Erasers() {
		if err := e.Erase(ctx, user); err == nil {
			t.Errorf("%s with no store succeeded", e.Name())
		}
	}
	if err := r.Erase(ctx, user); err == nil || !strings.Contains(err.Error(), "redis.sessions") {
		t.Errorf("Default(Deps{}).Erase = %v, want the first eraser's error", err)
	}
	// No MongoDB collections: nothing to erase there.
	if err := (erasure.MongoCollections{}).Erase(ctx, user); err != nil {
		t.Errorf("MongoCollections without collections = %v", err)
	}
}

func TestDefaultOrder(t *testing.T) {
	t.Parallel()
	names := erasure.Default(erasure.Deps{}).Names()
	want := []string{"redis.sessions", "redis.keys", "river", "mongo", "s3", "postgres", "audit"}
	if !slices.Equal(names, want) {
		t.Fatalf("Default order = %q, want %q (PostgreSQL, with the data key, then the closing audit row last)", names, want)
	}
}

func TestRedisKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rds := testkit.NewRedis(t)
	// Glob characters in the instance prefix must match only themselves.
	prefix := rds.Prefix + "we[ir]d*:"
	user, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	set := func(key string) {
		if err := rds.Client.Set(ctx, key, "v", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []uuid.UUID{user, other} {
		set(prefix + "rl:user:" + id.String())
		set(prefix + "feed:" + id.String() + ":1")
		set(prefix + "feed:" + id.String() + ":2")
	}
	// Same key names under a prefix that the escaped pattern must not match.
	set(rds.Prefix + "weid*:feed:" + user.String() + ":1")

	e := erasure.RedisKeys{Client: rds.Client, Prefix: prefix, Keys: []string{"rl:user:{user_id}", "feed:{user_id}:*"}}
	for range 2 { // idempotent
		if err := e.Erase(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rds.Client.Keys(ctx, rds.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{
		rds.Prefix + "we[ir]d*:feed:" + other.String() + ":1",
		rds.Prefix + "we[ir]d*:feed:" + other.String() + ":2",
		rds.Prefix + "we[ir]d*:rl:user:" + other.String(),
		rds.Prefix + "weid*:feed:" + user.String() + ":1",
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("keys after erasure = %q, want %q", keys, want)
	}
	if err := (erasure.RedisKeys{Client: rds.Client, Keys: []string{"global:counter"}}).Erase(ctx, user); err == nil {
		t.Error("a key template without {user_id} was accepted")
	}
}

func TestPostgresTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tdb := testkit.NewDatabase(t)
	newUser := func() uuid.UUID {
		id := uuid.Must(uuid.NewV7())
		if _, err := tdb.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key) VALUES ($1, $2, 'x', 'n', 'member', '\x01')`,
			id, id.String()+"@example.com"); err != nil {
			t.Fatal(err)
		}
		if _, err := tdb.Pool.Exec(ctx, `INSERT INTO privacy_settings (user_id) VALUES ($1)`, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	count := func(table string, id uuid.UUID) int {
		var n int
		col := "user_id"
		if table == "users" {
			col = "id"
		}
		if err := tdb.Pool.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE "+col+" = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("AllOrNothing", func(t *testing.T) {
		t.Parallel()
		id := newUser()
		broken := erasure.PostgresTables{DB: tdb.Pool, Tables: []erasure.Table{{"privacy_settings", "user_id"}, {"no_such_table", "user_id"}}}
		if err := broken.Erase(ctx, id); err == nil || !strings.Contains(err.Error(), "no_such_table") {
			t.Fatalf("Erase with a missing table = %v, want its error", err)
		}
		if count("privacy_settings", id) != 1 || count("users", id) != 1 {
			t.Error("a failed PostgreSQL step deleted rows; it must roll back")
		}
	})

	t.Run("DeletesUserLast", func(t *testing.T) {
		t.Parallel()
		id, other := newUser(), newUser()
		e := erasure.PostgresTables{DB: tdb.Pool, Tables: []erasure.Table{{"public.privacy_settings", "user_id"}}}
		for range 2 { // idempotent
			if err := e.Erase(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if count("privacy_settings", id) != 0 || count("users", id) != 0 {
			t.Error("rows remain")
		}
		if count("privacy_settings", other) != 1 || count("users", other) != 1 {
			t.Error("another user's rows were deleted")
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		id := newUser()
		for _, tables := range [][]erasure.Table{{{"users", "id"}}, {{"profiles", ""}}} {
			if err := (erasure.PostgresTables{DB: tdb.Pool, Tables: tables}).Erase(ctx, id); err == nil {
				t.Errorf("tables %+v accepted", tables)
			}
		}
		if count("users", id) != 1 {
			t.Error("a refused list deleted the user")
		}
	})
}

// TestDefaultCoversUserColumns is the guard that makes a new feature
// register its tables: every column named user_id, and every foreign key to
// users that does not SET NULL, must be in erasure.UserTables, and every
// registered table and column must exist.
func TestDefaultCoversUserColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tdb := testkit.NewDatabase(t)
	registered := map[erasure.Table]bool{}
	for _, tbl := range erasure.UserTables {
		registered[tbl] = true
		var exists bool
		if err := tdb.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2)`,
			tbl.Name, tbl.Column).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if !exists {
			t.Errorf("UserTables lists %s.%s, which does not exist", tbl.Name, tbl.Column)
		}
	}

	rows, err := tdb.Pool.Query(ctx, `
		SELECT c.table_name, c.column_name
		FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.column_name = 'user_id'`)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[erasure.Table])
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) == 0 {
		t.Fatal("found no user_id columns; the query is broken")
	}
	for _, c := range cols {
		if !registered[c] {
			t.Errorf("%s.%s holds user ids but is not in erasure.UserTables: add it (internal/erasure/default.go)", c.Name, c.Column)
		}
	}

	rows, err = tdb.Pool.Query(ctx, `
		SELECT c.conrelid::regclass::text, a.attname::text, c.confdeltype::text
		FROM pg_constraint c
		JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
		WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass`)
	if err != nil {
		t.Fatal(err)
	}
	type fk struct {
		Table, Column, OnDelete string
	}
	fks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[fk])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range fks {
		// SET NULL / SET DEFAULT keep the row without the link, deliberately.
		if k.OnDelete == "n" || k.OnDelete == "d" {
			continue
		}
		if !registered[erasure.Table{Name: k.Table, Column: k.Column}] {
			t.Errorf("%s.%s references users (on delete %q) but is not in erasure.UserTables", k.Table, k.Column, k.OnDelete)
		}
	}
}
