package jobs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/erasure"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// gdprBundle is the world the GDPR jobs work in: a private PostgreSQL
// database, Redis under a private prefix, an S3 stand-in, and (for erasure)
// FerretDB over the same database.
type gdprBundle struct {
	tdb      *testkit.Database
	rds      *testkit.Redis
	store    *storage.Client
	bucket   *s3.Client // lists the whole bucket, which storage.Client does not
	s3Bucket string
	sessions *session.Store
	keys     *fieldcrypt.MasterKeys
	log      *audit.Log
	mongo    *mongo.Database // nil unless asked for
}

func setupGDPR(t *testing.T, withMongo bool) *gdprBundle {
	t.Helper()
	ctx := context.Background()
	b := &gdprBundle{tdb: testkit.NewDatabase(t), rds: testkit.NewRedis(t)}

	fake, err := devstack.StartS3(ctx, t.TempDir(), "nxg-test", testLogger(t))
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	b.s3Bucket = fake.Bucket
	b.store, err = storage.New(ctx, storage.Config{
		Endpoint: fake.Endpoint(), Bucket: fake.Bucket, Region: fake.Region,
		AccessKeyID: fake.AccessKeyID, SecretAccessKey: fake.SecretAccessKey, UsePathStyle: true,
	})
	if err != nil {
		t.Fatalf("storage.New: %v", err)
	}
	b.bucket = s3.New(s3.Options{
		BaseEndpoint: aws.String(fake.Endpoint()),
		Region:       fake.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(fake.AccessKeyID, fake.SecretAccessKey, ""),
	})

	b.sessions = session.NewStore(b.rds.Client, b.rds.Prefix, session.Options{})
	spec, err := fieldcrypt.GenerateMasterKeySpec("test1")
	if err != nil {
		t.Fatal(err)
	}
	if b.keys, err = fieldcrypt.ParseMasterKeys(spec); err != nil {
		t.Fatal(err)
	}
	auditKey := make([]byte, audit.KeySize)
	_, _ = rand.Read(auditKey)
	if b.log, err = audit.New(auditKey); err != nil {
		t.Fatal(err)
	}
	if withMongo {
		mc, _ := startMongo(t, b.tdb.URL)
		b.mongo = mc.Database("nxg_cache")
	}
	return b
}

// erasureRegistry is the production registry over the bundle's stores
// (without MongoDB collections when the bundle has no FerretDB).
func (b *gdprBundle) erasureRegistry() *erasure.Registry {
	var collections []string
	if b.mongo != nil {
		collections = jobs.CacheCollections
	}
	return erasure.Default(erasure.Deps{
		Pool: b.tdb.Pool, Storage: b.store, Sessions: b.sessions,
		Redis: b.rds.Client, RedisPrefix: b.rds.Prefix,
		Mongo: b.mongo, MongoCollections: collections,
		Audit: b.log,
	})
}

// seededUser is a user with data in every store.
type seededUser struct {
	ID            uuid.UUID
	Email         string
	PasswordHash  string
	WrappedKey    []byte
	BranchName    string
	RefreshTokens []string
	SessionIDs    []string
	// PendingExport is a pending data_exports row; ReadyExport a ready one
	// whose archive is in S3.
	PendingExport, ReadyExport uuid.UUID
	ObjectKeys                 []string
}

// Values seeded for every user, encrypted the way the profile handlers
// store them (decimal text of the float for numbers).
const (
	seedDOB    = "1990-04-17"
	seedSex    = "female"
	seedHeight = 172.5
	seedPhone  = "+447700900123"
)

var seedWeights = []float64{81.4, 79.95}

func (b *gdprBundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.tdb.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (b *gdprBundle) record(t *testing.T, e audit.Event) {
	t.Helper()
	err := db.WithTx(context.Background(), b.tdb.Pool, func(tx pgx.Tx) error { return b.log.Record(context.Background(), tx, e) })
	if err != nil {
		t.Fatalf("audit %s: %v", e.Action, err)
	}
}

// seedUser creates a user the way the product would have: account with a
// wrapped data key, encrypted profile and body metrics, privacy settings, a
// staff branch, exports (one ready with its archive in S3), files in S3,
// two sessions and a rate-limit key in Redis.
func (b *gdprBundle) seedUser(t *testing.T, name string) seededUser {
	t.Helper()
	ctx := context.Background()
	u := seededUser{ID: uuid.Must(uuid.NewV7()), Email: name + "@example.com", BranchName: "Branch of " + name}
	u.PasswordHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$" + strings.Repeat(name, 3)
	dk, wrapped, err := b.keys.NewDataKey(u.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	u.WrappedKey = wrapped
	seal := func(column, v string) []byte {
		c, err := dk.SealString(column, v)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

	b.exec(t, `INSERT INTO users (id, email, password_hash, display_name, role, data_key) VALUES ($1, $2, $3, $4, 'staff', $5)`,
		u.ID, u.Email, u.PasswordHash, "Name "+name, wrapped)
	var branch uuid.UUID
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, '1 High St', 'Europe/London', 100) RETURNING id`,
		u.BranchName).Scan(&branch); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO staff_branches (user_id, branch_id) VALUES ($1, $2)`, u.ID, branch)
	b.exec(t, `INSERT INTO memberships (user_id, branch_id, valid_from, valid_until, created_by) VALUES ($1, $2, '2024-01-01T00:00:00Z', '2025-01-01T00:00:00Z', $1), ($1, NULL, '2024-06-01T00:00:00Z', NULL, NULL)`, u.ID, branch)
	// The gym floor: a visit ended by this (staff) user, a machine link and
	// a set in it, and a kiosk this user registered and revoked.
	var machine, visit, link uuid.UUID
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, 'Rower 1', 'rower', $2) RETURNING id`,
		branch, "tag-"+name).Scan(&machine); err != nil {
		t.Fatal(err)
	}
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO gym_sessions (user_id, branch_id, method, started_at, expires_at, ended_at, end_reason, ended_by)
		VALUES ($1, $2, 'qr', now() - interval '2 hours', now() + interval '2 hours', now() - interval '1 hour', 'staff', $1) RETURNING id`,
		u.ID, branch).Scan(&visit); err != nil {
		t.Fatal(err)
	}
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO machine_links (machine_id, user_id, gym_session_id, linked_at, ended_at, end_reason)
		VALUES ($1, $2, $3, now() - interval '90 minutes', now() - interval '1 hour', 'session_ended') RETURNING id`,
		machine, u.ID, visit).Scan(&link); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO machine_sets (user_id, gym_session_id, machine_id, link_id, client_set_id, reps, duration_seconds, distance_m, calories)
		VALUES ($1, $2, $3, $4, 'set-1', 0, 600, 2400, 150)`, u.ID, visit, machine, link)
	b.exec(t, `INSERT INTO devices (branch_id, kind, name, secret_hash, created_by, revoked_at, revoked_by)
		VALUES ($1, 'kiosk', 'Entrance kiosk', $2, $3, now(), $3)`, branch, bytes.Repeat([]byte{7}, 32), u.ID)
	b.exec(t, `INSERT INTO profiles (user_id, date_of_birth_enc, sex_enc, height_cm_enc, phone_enc, fitness_goal, activity_level, unit_system, timezone, home_branch_id)
		VALUES ($1, $2, $3, $4, $5, 'build_muscle', 'active', 'metric', 'Europe/London', $6)`,
		u.ID, seal("date_of_birth_enc", seedDOB), seal("sex_enc", seedSex), seal("height_cm_enc", num(seedHeight)), seal("phone_enc", seedPhone), branch)
	for i, w := range seedWeights {
		b.exec(t, `INSERT INTO body_metrics (user_id, measured_at, weight_kg_enc, body_fat_percent_enc, resting_heart_rate_bpm_enc) VALUES ($1, $2, $3, $4, $5)`,
			u.ID, time.Date(2026, 1, 1+i, 8, 0, 0, 0, time.UTC), seal("weight_kg_enc", num(w)), seal("body_fat_percent_enc", num(18.5)), seal("resting_heart_rate_bpm_enc", "58"))
	}
	b.exec(t, `INSERT INTO privacy_settings (user_id, appear_on_leaderboards, share_analytics, marketing_notifications) VALUES ($1, true, false, true)`, u.ID)

	u.ReadyExport, u.PendingExport = uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	readyKey := jobs.ExportObjectKey(u.ID, u.ReadyExport)
	b.exec(t, `INSERT INTO data_exports (id, user_id, status, object_key, created_at, completed_at, expires_at)
		VALUES ($1, $2, 'ready', $3, now() - interval '1 day', now() - interval '1 day', now() + interval '6 days')`, u.ReadyExport, u.ID, readyKey)
	b.exec(t, `INSERT INTO data_exports (id, user_id) VALUES ($1, $2)`, u.PendingExport, u.ID)

	u.ObjectKeys = []string{"users/" + u.ID.String() + "/avatar.glb", "users/" + u.ID.String() + "/meals/2026/01/lunch.jpg", readyKey}
	for _, key := range u.ObjectKeys {
		body := []byte("file of " + u.ID.String())
		if err := b.store.Put(ctx, key, "application/octet-stream", bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}

	for _, dev := range []string{"Pixel 8", "iPad"} {
		s, tok, err := b.sessions.Create(ctx, u.ID.String(), "staff", dev, "203.0.113.7", "NXG/1.0 ("+dev+")")
		if err != nil {
			t.Fatal(err)
		}
		u.SessionIDs, u.RefreshTokens = append(u.SessionIDs, s.ID), append(u.RefreshTokens, tok)
	}
	// The per-user request limit, keyed as the rate-limit interceptor does;
	// a slow rate keeps the key alive for the whole test.
	if err := ratelimit.NewLimiter(b.rds.Client, b.rds.Prefix).Allow(ctx, "user:"+u.ID.String(), ratelimit.Limit{Rate: 1, Period: time.Hour}); err != nil {
		t.Fatal(err)
	}

	b.record(t, audit.Event{ActorID: u.ID, Action: "auth.login", TargetType: "user", TargetID: u.ID.String(),
		Result: audit.ResultSuccess, IP: "203.0.113.7", UserAgent: "NXG/1.0", RequestID: "req-login-" + name})
	b.record(t, audit.Event{Action: "auth.session_timeout", TargetType: "user", TargetID: u.ID.String(), Result: audit.ResultSuccess})
	return u
}

// seedMongo caches plans for the user: one keyed by the id's string, one
// by a BSON UUID.
func (b *gdprBundle) seedMongo(t *testing.T, u seededUser) {
	t.Helper()
	ctx := context.Background()
	expires := time.Now().Add(time.Hour)
	if _, err := b.mongo.Collection("workout_plans").InsertOne(ctx, bson.D{
		{Key: "userId", Value: u.ID.String()}, {Key: "plan", Value: "5x5 for " + u.Email}, {Key: "expiresAt", Value: expires},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.mongo.Collection("meal_plans").InsertOne(ctx, bson.D{
		{Key: "userId", Value: bson.Binary{Subtype: bson.TypeBinaryUUID, Data: u.ID[:]}}, {Key: "kcal", Value: 2400}, {Key: "expiresAt", Value: expires},
	}); err != nil {
		t.Fatal(err)
	}
}

// closeAccount is what DeleteAccount does before the job runs.
func (b *gdprBundle) closeAccount(t *testing.T, id uuid.UUID) {
	t.Helper()
	n, err := dbsqlc.New().UserMarkDeleted(context.Background(), b.tdb.Pool, id)
	if err != nil || n != 1 {
		t.Fatalf("UserMarkDeleted = %d, %v", n, err)
	}
}

// bucketKeys lists every object key in the bucket, sorted.
func (b *gdprBundle) bucketKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	pages := s3.NewListObjectsV2Paginator(b.bucket, &s3.ListObjectsV2Input{Bucket: aws.String(b.s3Bucket)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list bucket: %v", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	slices.Sort(keys)
	return keys
}

// pgFindings searches every column of every table in every schema of the
// database (public, River's tables, FerretDB's storage of the MongoDB API)
// for rows containing any needle: as text, and inside bytea also as the
// raw 16 bytes of a UUID. The River job with id skipJobID is not searched.
func (b *gdprBundle) pgFindings(t *testing.T, skipJobID int64, id uuid.UUID, needles ...string) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := b.tdb.Pool.Query(ctx, `
		SELECT c.table_schema, c.table_name, c.column_name, c.data_type
		FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE t.table_type = 'BASE TABLE'
		  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
		  AND c.table_schema NOT LIKE 'pg\_%'
		ORDER BY 1, 2, 3`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ schema, table, column, typ string }
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
		var c col
		return c, r.Scan(&c.schema, &c.table, &c.column, &c.typ)
	})
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]bool{}
	var found []string
	for _, c := range cols {
		tables[c.schema+"."+c.table] = true
		ident := pgx.Identifier{c.schema, c.table}.Sanitize()
		colIdent := pgx.Identifier{c.column}.Sanitize()
		var conds []string
		args := []any{}
		for _, n := range needles {
			args = append(args, n)
			if c.typ == "bytea" {
				conds = append(conds, fmt.Sprintf("position(convert_to($%d, 'UTF8') in %s) > 0", len(args), colIdent))
			} else {
				conds = append(conds, fmt.Sprintf("strpos(%s::text, $%d) > 0", colIdent, len(args)))
			}
		}
		if c.typ == "bytea" {
			args = append(args, id[:])
			conds = append(conds, fmt.Sprintf("position($%d::bytea in %s) > 0", len(args), colIdent))
		}
		where := "(" + strings.Join(conds, " OR ") + ")"
		if c.schema == "public" && c.table == "river_job" {
			args = append(args, skipJobID)
			where += fmt.Sprintf(" AND id <> $%d", len(args))
		}
		var n int
		if err := b.tdb.Pool.QueryRow(ctx, "SELECT count(*) FROM "+ident+" WHERE "+where, args...).Scan(&n); err != nil {
			t.Fatalf("search %s.%s: %v", ident, colIdent, err)
		}
		if n > 0 {
			found = append(found, fmt.Sprintf("%s.%s.%s (%d rows)", c.schema, c.table, c.column, n))
		}
	}
	// The search must have covered the user's tables, or it proves nothing.
	for _, want := range []string{"public.users", "public.profiles", "public.body_metrics", "public.privacy_settings",
		"public.data_exports", "public.staff_branches", "public.audit_events", "public.river_job"} {
		if !tables[want] {
			t.Fatalf("the generic search did not see table %s", want)
		}
	}
	return found
}

// redisDump returns every key under the test's prefix with its value as text.
func (b *gdprBundle) redisDump(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	c := b.rds.Client
	out := map[string]string{}
	iter := c.Scan(ctx, 0, b.rds.Prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = c.Get(ctx, key).Result()
		case "hash":
			v, err = c.HGetAll(ctx, key).Result()
		case "zset":
			v, err = c.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "set":
			v, err = c.SMembers(ctx, key).Result()
		case "list":
			v, err = c.LRange(ctx, key, 0, -1).Result()
		case "none": // expired meanwhile
			continue
		default:
			t.Fatalf("key %s has type %s, which the dump does not read", key, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[key] = fmt.Sprint(v)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// mongoDump returns every document of every collection, as extended JSON
// with its raw BSON.
func (b *gdprBundle) mongoDump(t *testing.T) map[string][]bson.Raw {
	t.Helper()
	ctx := context.Background()
	names, err := b.mongo.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]bson.Raw{}
	for _, name := range names {
		cur, err := b.mongo.Collection(name).Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		var docs []bson.Raw
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		out[name] = docs
	}
	return out
}

func auditCount(t *testing.T, b *gdprBundle, where string, args ...any) int {
	t.Helper()
	var n int
	if err := b.tdb.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func verifyAudit(t *testing.T, b *gdprBundle) audit.Report {
	t.Helper()
	rep, err := b.log.Verify(context.Background(), b.tdb.Pool)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("audit chain does not verify: %+v", rep.Problems)
	}
	return rep
}

func worker2(b *gdprBundle) *jobs.AccountErasureWorker {
	return &jobs.AccountErasureWorker{DB: b.tdb.Pool, Erasure: b.erasureRegistry()}
}

// TestAccountErasure seeds a user in every store, erases them with the job,
// and searches every store for anything left.
func TestAccountErasure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ErasesEverywhere", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, true)
		gone, kept := b.seedUser(t, "erin"), b.seedUser(t, "kate")
		b.seedMongo(t, gone)
		b.seedMongo(t, kept)
		// Each acts on the other once: erin's identity must go from both
		// rows, kate's must stay.
		b.record(t, audit.Event{ActorID: kept.ID, Action: "staff.member_viewed", TargetType: "user", TargetID: gone.ID.String(),
			Result: audit.ResultSuccess, IP: "198.51.100.9", UserAgent: "Dashboard", RequestID: "req-view-1"})
		b.record(t, audit.Event{ActorID: gone.ID, Action: "staff.member_viewed", TargetType: "user", TargetID: kept.ID.String(),
			Result: audit.ResultSuccess, IP: "203.0.113.7", UserAgent: "Dashboard", RequestID: "req-view-2"})
		// Waiting jobs about each user, as the export handler inserts them.
		inserter, err := river.NewClient(riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []seededUser{gone, kept} {
			if _, err := inserter.Insert(ctx, jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil); err != nil {
				t.Fatal(err)
			}
		}

		// Before: the search finds erin everywhere, so it can find her.
		if found := b.pgFindings(t, 0, gone.ID, gone.ID.String(), gone.Email); len(found) < 8 {
			t.Fatalf("before erasure the search finds erin only in %q; the seed or the search is broken", found)
		}
		keptKeysBefore := b.bucketKeys(t)
		keptKeysBefore = slices.DeleteFunc(keptKeysBefore, func(k string) bool { return strings.Contains(k, gone.ID.String()) })
		erinRowsAsActor := auditCount(t, b, "actor_id = $1", gone.ID)
		erinRowsAsTarget := auditCount(t, b, "target_id = $1", gone.ID.String())
		rowsBefore := verifyAudit(t, b).Rows
		redisBefore := b.redisDump(t)
		mongoBefore := b.mongoDump(t)

		b.closeAccount(t, gone.ID)
		worker := rivertest.NewWorker(t, riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)},
			&jobs.AccountErasureWorker{DB: b.tdb.Pool, Erasure: b.erasureRegistry()})
		run := func() *rivertest.WorkResult {
			t.Helper()
			tx, err := b.tdb.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			res, err := worker.Work(ctx, t, tx, jobs.AccountErasureArgs{UserID: gone.ID}, nil)
			if err != nil {
				t.Fatalf("Work: %v", err)
			}
			if res.EventKind != river.EventKindJobCompleted {
				t.Fatalf("erasure ended %s (errors %v), want completed", res.EventKind, res.Job.Errors)
			}
			if res.Job.Queue != jobs.QueueMaintenance || res.Job.Kind != "account_erasure" {
				t.Errorf("job %s on %s, want account_erasure on maintenance", res.Job.Kind, res.Job.Queue)
			}
			// Committed, as River would: the job's own row stays until
			// River's retention removes it.
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			return res
		}
		res := run()
		var out struct{ Erased []string }
		if err := json.Unmarshal(res.Job.Output(), &out); err != nil || !slices.Equal(out.Erased, b.erasureRegistry().Names()) {
			t.Errorf("job output %s, want the erasers run: %q", res.Job.Output(), b.erasureRegistry().Names())
		}

		checkGone := func(t *testing.T, jobID int64) {
			// PostgreSQL, every table and column; the only row allowed to
			// name erin is the erasure job's own.
			if found := b.pgFindings(t, jobID, gone.ID, gone.ID.String(), gone.Email); len(found) > 0 {
				t.Errorf("after erasure erin's id or email remains in %q", found)
			}
			// S3: her prefix is empty; kate's files are all there.
			if keys := b.bucketKeys(t); !slices.Equal(keys, keptKeysBefore) {
				t.Errorf("bucket after erasure = %q, want exactly kate's %q", keys, keptKeysBefore)
			}
			// Redis: no key or value names her; kate's keys are unchanged.
			after := b.redisDump(t)
			for k, v := range after {
				if strings.Contains(k, gone.ID.String()) || strings.Contains(v, gone.ID.String()) || strings.Contains(v, gone.Email) {
					t.Errorf("Redis key %s = %s names erin", k, v)
				}
			}
			for k, v := range redisBefore {
				if strings.Contains(k, kept.ID.String()) && after[k] != v {
					t.Errorf("kate's Redis key %s changed from %s to %q", k, v, after[k])
				}
			}
			if list, err := b.sessions.List(ctx, kept.ID.String()); err != nil || len(list) != 2 {
				t.Errorf("kate's sessions after erasure = %d, %v; want 2", len(list), err)
			}
			// MongoDB: no document names her, by string or by UUID; kate's stay.
			mongoAfter := b.mongoDump(t)
			for coll, docs := range mongoAfter {
				for _, d := range docs {
					if bytes.Contains(d, []byte(gone.ID.String())) || bytes.Contains(d, gone.ID[:]) || bytes.Contains(d, []byte(gone.Email)) {
						t.Errorf("%s still holds erin's document %s", coll, d)
					}
				}
				if want := len(mongoBefore[coll]) / 2; len(docs) != want {
					t.Errorf("%s has %d documents after erasure, want kate's %d", coll, len(docs), want)
				}
			}
			// The audit trail: whole, with erin's rows under her pseudonym.
			rep := verifyAudit(t, b)
			if rep.Rows != rowsBefore+1 {
				t.Errorf("audit rows = %d, want %d and one closing row", rep.Rows, rowsBefore)
			}
			ref := b.log.Pseudonym(gone.ID.String())
			if n := auditCount(t, b, "actor_ref = $1 AND actor_id IS NULL AND ip IS NULL AND user_agent IS NULL", ref); n != erinRowsAsActor {
				t.Errorf("%d pseudonymised rows with erin as actor, want %d", n, erinRowsAsActor)
			}
			if n := auditCount(t, b, "target_ref = $1 AND target_id IS NULL", ref); n != erinRowsAsTarget {
				t.Errorf("%d pseudonymised rows with erin as target, want %d", n, erinRowsAsTarget)
			}
			if n := auditCount(t, b, "actor_id = $1 AND ip = '198.51.100.9' AND target_ref = $2", kept.ID, ref); n != 1 {
				t.Errorf("kate's view of erin: %d rows keep kate's identity, want 1", n)
			}
			if n := auditCount(t, b, "actor_ref = $1 AND target_id = $2", ref, kept.ID.String()); n != 1 {
				t.Errorf("erin's view of kate: %d rows keep kate as target, want 1", n)
			}
			closing := auditCount(t, b, "action = 'gdpr.account_erased' AND actor_id IS NULL AND actor_ref = '' AND target_type = 'user' AND target_id IS NULL AND target_ref = '' AND details = $1",
				`{"subject":"`+ref+`"}`)
			if closing != 1 {
				t.Errorf("%d closing gdpr.account_erased rows for erin's pseudonym, want 1", closing)
			}
			// Kate is whole: her key still opens her profile.
			user, err := dbsqlc.New().UserGet(ctx, b.tdb.Pool, kept.ID)
			if err != nil {
				t.Fatalf("kate's account: %v", err)
			}
			dk, err := b.keys.Unwrap(kept.ID.String(), user.DataKey)
			if err != nil {
				t.Fatal(err)
			}
			p, err := dbsqlc.New().ProfileGet(ctx, b.tdb.Pool, kept.ID)
			if err != nil {
				t.Fatal(err)
			}
			if dob, err := dk.OpenString("date_of_birth_enc", p.DateOfBirthEnc); err != nil || dob != seedDOB {
				t.Errorf("kate's date of birth = %q, %v", dob, err)
			}
			var keptJobs int
			if err := b.tdb.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'data_export' AND args->>'user_id' = $1`, kept.ID.String()).Scan(&keptJobs); err != nil || keptJobs != 1 {
				t.Errorf("kate's waiting export jobs = %d, %v; want 1", keptJobs, err)
			}
		}
		checkGone(t, res.Job.ID)

		// At least once: running it again finds nothing to do and writes no
		// second closing row. (Worked directly: through rivertest the
		// completed row would be re-run inside the test's transaction, which
		// the eraser of River jobs would then wait on.)
		again := &river.Job[jobs.AccountErasureArgs]{JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: 25}, Args: jobs.AccountErasureArgs{UserID: gone.ID}}
		if err := worker2(b).Work(ctx, again); err != nil {
			t.Fatalf("second run: %v", err)
		}
		checkGone(t, res.Job.ID)
	})

	t.Run("ResumesAfterPartialFailure", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "paul")
		b.closeAccount(t, u.ID)

		// The production erasers with one that fails once just before the
		// PostgreSQL step: the first attempt erases Redis and S3, then fails.
		fails := 1
		flaky := erasure.Func("flaky", func(context.Context, uuid.UUID) error {
			if fails > 0 {
				fails--
				return errors.New("store unavailable")
			}
			return nil
		})
		var list []erasure.Eraser
		for _, e := range b.erasureRegistry().Erasers() {
			if e.Name() == "postgres" {
				list = append(list, flaky)
			}
			list = append(list, e)
		}
		w := &jobs.AccountErasureWorker{DB: b.tdb.Pool, Erasure: erasure.NewRegistry(list...)}
		job := &river.Job[jobs.AccountErasureArgs]{JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: 25}, Args: jobs.AccountErasureArgs{UserID: u.ID}}

		err := w.Work(ctx, job)
		if err == nil || !strings.Contains(err.Error(), "flaky") || !strings.Contains(err.Error(), "store unavailable") {
			t.Fatalf("first attempt = %v, want the flaky eraser's error", err)
		}
		if keys := b.bucketKeys(t); len(keys) != 0 {
			t.Errorf("after the failed attempt the bucket holds %q; S3 ran before the failure", keys)
		}
		if _, err := dbsqlc.New().UserGetForErasure(ctx, b.tdb.Pool, u.ID); err != nil {
			t.Errorf("after the failed attempt the account row is gone (%v); PostgreSQL must not have run", err)
		}
		if n := auditCount(t, b, "action = 'gdpr.account_erased'"); n != 0 {
			t.Errorf("%d closing rows after a failed attempt, want 0", n)
		}

		job.Attempt = 2
		if err := w.Work(ctx, job); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if found := b.pgFindings(t, 0, u.ID, u.ID.String(), u.Email); len(found) > 0 {
			t.Errorf("after the retry paul remains in %q", found)
		}
		if n := auditCount(t, b, "action = 'gdpr.account_erased'"); n != 1 {
			t.Errorf("%d closing rows, want 1", n)
		}
		verifyAudit(t, b)
		// The job after success (its row is gone now) still succeeds.
		job.Attempt = 3
		if err := w.Work(ctx, job); err != nil {
			t.Fatalf("run after success: %v", err)
		}
		if n := auditCount(t, b, "action = 'gdpr.account_erased'"); n != 1 {
			t.Errorf("%d closing rows after a third run, want 1", n)
		}
	})

	t.Run("RefusesOpenAccount", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "olga")
		worker := rivertest.NewWorker(t, riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)},
			&jobs.AccountErasureWorker{DB: b.tdb.Pool, Erasure: b.erasureRegistry()})
		tx, err := b.tdb.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		res, err := worker.Work(ctx, t, tx, jobs.AccountErasureArgs{UserID: u.ID}, nil)
		if err != nil {
			t.Fatalf("Work: %v", err)
		}
		if res.EventKind != river.EventKindJobCancelled {
			t.Fatalf("erasure of an open account ended %s, want cancelled", res.EventKind)
		}
		if keys := b.bucketKeys(t); len(keys) != len(u.ObjectKeys) {
			t.Errorf("bucket = %q, want olga's files untouched", keys)
		}
		if list, err := b.sessions.List(ctx, u.ID.String()); err != nil || len(list) != 2 {
			t.Errorf("olga's sessions = %d, %v; want 2 untouched", len(list), err)
		}
		if _, err := dbsqlc.New().UserGet(ctx, b.tdb.Pool, u.ID); err != nil {
			t.Errorf("olga's account: %v", err)
		}
	})

	t.Run("InsertOpts", func(t *testing.T) {
		t.Parallel()
		opts := jobs.AccountErasureArgs{}.InsertOpts()
		if opts.Queue != jobs.QueueMaintenance || opts.MaxAttempts < 10 || !opts.UniqueOpts.ByArgs {
			t.Errorf("InsertOpts = %+v, want maintenance, many attempts, unique by args", opts)
		}
	})
}
