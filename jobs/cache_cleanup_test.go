package jobs_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// testLogger sends logs to the test log and drops lines logged after the
// test ended (a late River or FerretDB goroutine would make testing panic).
func testLogger(t *testing.T) *slog.Logger { return testkit.Logger(t, slog.LevelWarn) }

// startMongo starts FerretDB over databaseURL and returns a connected
// client and FerretDB's URI; both stop when the test ends.
func startMongo(t *testing.T, databaseURL string) (*mongo.Client, string) {
	t.Helper()
	m, err := devstack.StartMongo(context.Background(), databaseURL, testLogger(t))
	if err != nil {
		t.Fatalf("StartMongo: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close FerretDB: %v", err)
		}
	})
	c, err := mongo.Connect(options.Client().ApplyURI(m.URI()).SetTimeout(15 * time.Second))
	if err != nil {
		t.Fatalf("mongo.Connect: %v", err)
	}
	// Registered after FerretDB's cleanup, so it runs first: FerretDB waits
	// for connected clients before it stops.
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c, m.URI()
}

// cacheDoc is a cached answer; ExpiresAt is omitted when nil.
type cacheDoc struct {
	ID        string     `bson:"_id"`
	ExpiresAt *time.Time `bson:"expiresAt,omitempty"`
}

// seedCaches puts, into every cache collection, documents expired and not
// relative to now, and returns the ids that must survive a cleanup at now.
func seedCaches(t *testing.T, mdb *mongo.Database, now time.Time) []string {
	t.Helper()
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	docs := []any{
		cacheDoc{ID: "expired-1d", ExpiresAt: at(-24 * time.Hour)},
		cacheDoc{ID: "expired-1s", ExpiresAt: at(-time.Second)},
		cacheDoc{ID: "expires-now", ExpiresAt: at(0)},
		cacheDoc{ID: "fresh-1s", ExpiresAt: at(time.Second)},
		cacheDoc{ID: "fresh-1d", ExpiresAt: at(24 * time.Hour)},
		cacheDoc{ID: "no-expiry"},
	}
	for _, name := range jobs.CacheCollections {
		if _, err := mdb.Collection(name).InsertMany(context.Background(), docs); err != nil {
			t.Fatalf("insert into %s: %v", name, err)
		}
	}
	return []string{"expires-now", "fresh-1d", "fresh-1s", "no-expiry"}
}

// ids lists the _id of every document in a collection, sorted.
func ids(t *testing.T, coll *mongo.Collection) []string {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.D{})
	if err != nil {
		t.Fatalf("find in %s: %v", coll.Name(), err)
	}
	var docs []cacheDoc
	if err := cur.All(context.Background(), &docs); err != nil {
		t.Fatalf("read %s: %v", coll.Name(), err)
	}
	out := make([]string, 0, len(docs))
	for _, d := range docs {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

func TestCacheCollections(t *testing.T) {
	t.Parallel()
	for _, want := range []string{"workout_plans", "meal_plans"} {
		if !slices.Contains(jobs.CacheCollections, want) {
			t.Errorf("CacheCollections = %q, want it to include %s", jobs.CacheCollections, want)
		}
	}
	if jobs.CacheExpiresAtField != "expiresAt" {
		t.Errorf("CacheExpiresAtField = %q, want expiresAt", jobs.CacheExpiresAtField)
	}
}

// TestCacheCleanup runs against one FerretDB (MongoDB API over the test's
// PostgreSQL database); each subtest uses its own MongoDB database.
func TestCacheCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tdb := testkit.NewDatabase(t)
	mc, mongoURI := startMongo(t, tdb.URL)

	t.Run("WorkerDeletesOnlyExpired", func(t *testing.T) {
		t.Parallel()
		mdb := mc.Database("cleanup_worker")
		now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		survivors := seedCaches(t, mdb, now)
		// A collection that is no cache keeps its documents, expired or not.
		if _, err := mdb.Collection("members").InsertOne(ctx, cacheDoc{ID: "member-1", ExpiresAt: new(now.Add(-time.Hour))}); err != nil {
			t.Fatal(err)
		}

		worker := rivertest.NewWorker(t, riverpgxv5.New(nil), &river.Config{Logger: testLogger(t)},
			&jobs.CacheCleanupWorker{Mongo: mdb, Now: func() time.Time { return now }})
		work := func(wantDeleted int64) {
			t.Helper()
			tx, err := tdb.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			res, err := worker.Work(ctx, t, tx, jobs.CacheCleanupArgs{}, nil)
			if err != nil {
				t.Fatalf("Work: %v", err)
			}
			if res.EventKind != river.EventKindJobCompleted {
				t.Fatalf("job ended %s, want %s", res.EventKind, river.EventKindJobCompleted)
			}
			if res.Job.Kind != "cache_cleanup" || res.Job.Queue != jobs.QueueMaintenance {
				t.Errorf("job kind %q queue %q, want cache_cleanup on %s", res.Job.Kind, res.Job.Queue, jobs.QueueMaintenance)
			}
			var out struct{ Deleted int64 }
			if err := json.Unmarshal(res.Job.Output(), &out); err != nil {
				t.Fatalf("job output %q: %v", res.Job.Output(), err)
			}
			if out.Deleted != wantDeleted {
				t.Errorf("job output deleted = %d, want %d", out.Deleted, wantDeleted)
			}
		}

		work(int64(2 * len(jobs.CacheCollections)))
		for _, name := range jobs.CacheCollections {
			if got := ids(t, mdb.Collection(name)); !slices.Equal(got, survivors) {
				t.Errorf("%s after cleanup = %q, want %q", name, got, survivors)
			}
		}
		if got := ids(t, mdb.Collection("members")); !slices.Equal(got, []string{"member-1"}) {
			t.Errorf("members after cleanup = %q, want it untouched", got)
		}

		// At least once: a second run finds nothing more to delete.
		work(0)
		for _, name := range jobs.CacheCollections {
			if got := ids(t, mdb.Collection(name)); !slices.Equal(got, survivors) {
				t.Errorf("%s after the second cleanup = %q, want %q", name, got, survivors)
			}
		}
	})

	t.Run("WorkerDirect", func(t *testing.T) {
		t.Parallel()
		mdb := mc.Database("cleanup_direct")
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		survivors := seedCaches(t, mdb, now)
		w := &jobs.CacheCleanupWorker{Mongo: mdb, Now: func() time.Time { return now }}
		if got := w.Timeout(&river.Job[jobs.CacheCleanupArgs]{}); got <= 0 || got > 10*time.Minute {
			t.Errorf("Timeout = %v, want a bound of a few minutes", got)
		}
		for range 2 {
			if err := w.Work(ctx, &river.Job[jobs.CacheCleanupArgs]{}); err != nil {
				t.Fatalf("Work: %v", err)
			}
			for _, name := range jobs.CacheCollections {
				if got := ids(t, mdb.Collection(name)); !slices.Equal(got, survivors) {
					t.Errorf("%s after cleanup = %q, want %q", name, got, survivors)
				}
			}
		}
	})

	t.Run("MongoFailureFailsTheJob", func(t *testing.T) {
		t.Parallel()
		c, err := mongo.Connect(options.Client().ApplyURI(mongoURI).SetTimeout(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		mdb := c.Database("cleanup_failure")
		if err := c.Disconnect(ctx); err != nil {
			t.Fatal(err)
		}
		w := &jobs.CacheCleanupWorker{Mongo: mdb}
		err = w.Work(ctx, &river.Job[jobs.CacheCleanupArgs]{})
		if err == nil || !strings.Contains(err.Error(), "delete expired documents from "+jobs.CacheCollections[0]) {
			t.Fatalf("Work with a disconnected client = %v, want an error naming %s", err, jobs.CacheCollections[0])
		}
	})

	t.Run("ClientRunsCleanupOnStart", func(t *testing.T) {
		t.Parallel()
		// Its own PostgreSQL database for River, so no other subtest's jobs
		// are seen; the cleanup uses the real clock here.
		riverDB := testkit.NewDatabase(t)
		mdb := mc.Database("cleanup_periodic")
		// Seeded relative to an hour ago: against the real clock only the
		// document expiring in a day and the one without expiry survive.
		seedCaches(t, mdb, time.Now().Add(-time.Hour))
		survivors := []string{"fresh-1d", "no-expiry"}

		workers, err := jobs.Workers(jobs.Deps{Mongo: mdb})
		if err != nil {
			t.Fatalf("Workers: %v", err)
		}
		client, err := river.NewClient(riverpgxv5.New(riverDB.Pool), &river.Config{
			Logger:       testLogger(t),
			Queues:       jobs.Queues(),
			Workers:      workers,
			PeriodicJobs: jobs.PeriodicJobs(floor.Settings{}),
		})
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		events, cancelSub := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
		defer cancelSub()
		runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := client.Start(runCtx); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := client.Stop(stopCtx); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})

		// Other periodic jobs also run on start (and fail here, having no
		// dependencies); only the cache cleanup's outcome matters.
	wait:
		for {
			select {
			case ev := <-events:
				if ev.Job.Kind != "cache_cleanup" {
					continue
				}
				if ev.Kind != river.EventKindJobCompleted || ev.Job.Queue != jobs.QueueMaintenance {
					t.Fatalf("cache_cleanup %s on %s (errors %v), want completed on maintenance",
						ev.Kind, ev.Job.Queue, ev.Job.Errors)
				}
				break wait
			case <-runCtx.Done():
				t.Fatal("the periodic cache cleanup did not run on start within 20s")
			}
		}
		for _, name := range jobs.CacheCollections {
			if got := ids(t, mdb.Collection(name)); !slices.Equal(got, survivors) {
				t.Errorf("%s after the periodic cleanup = %q, want %q", name, got, survivors)
			}
		}

		// Every queue has a producer registered in river_queue.
		res, err := client.QueueList(ctx, river.NewQueueListParams().First(100))
		if err != nil {
			t.Fatalf("QueueList: %v", err)
		}
		var names []string
		for _, q := range res.Queues {
			names = append(names, q.Name)
		}
		slices.Sort(names)
		if want := []string{"ai", "default", "maintenance", "push"}; !slices.Equal(names, want) {
			t.Errorf("queues registered by the started client = %q, want %q", names, want)
		}
	})
}

func TestQueues(t *testing.T) {
	t.Parallel()
	q := jobs.Queues()
	if got, want := slices.Sorted(maps.Keys(q)), []string{"ai", "default", "maintenance", "push"}; !slices.Equal(got, want) {
		t.Fatalf("Queues() = %q, want %q", got, want)
	}
	for name, cfg := range q {
		if cfg.MaxWorkers < 1 {
			t.Errorf("queue %s has MaxWorkers %d, want at least 1", name, cfg.MaxWorkers)
		}
	}
	if jobs.QueueDefault != river.QueueDefault || jobs.QueueAI != "ai" || jobs.QueuePush != "push" || jobs.QueueMaintenance != "maintenance" {
		t.Errorf("queue names = %q %q %q %q", jobs.QueueDefault, jobs.QueueAI, jobs.QueuePush, jobs.QueueMaintenance)
	}
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	newClient := func(t *testing.T) (*river.Client[pgx.Tx], *testkit.Database) {
		t.Helper()
		tdb := testkit.NewDatabase(t)
		workers, err := jobs.Workers(jobs.Deps{})
		if err != nil {
			t.Fatalf("Workers: %v", err)
		}
		client, err := river.NewClient(riverpgxv5.New(tdb.Pool), &river.Config{
			Logger:       testLogger(t),
			Queues:       jobs.Queues(),
			Workers:      workers,
			PeriodicJobs: jobs.PeriodicJobs(floor.Settings{}),
		})
		if err != nil {
			t.Fatalf("NewClient with jobs.Workers, PeriodicJobs and Queues: %v", err)
		}
		return client, tdb
	}

	t.Run("Builds", func(t *testing.T) {
		t.Parallel()
		client, _ := newClient(t)
		if client.PeriodicJobs() == nil {
			t.Error("client has no periodic job bundle")
		}
		if n := len(jobs.PeriodicJobs(floor.Settings{})); n != 4 {
			t.Errorf("PeriodicJobs has %d jobs, want 4 (cache cleanup, export retention, master key rewrap, machine offline sweep)", n)
		}
	})

	t.Run("CacheCleanupInsertOpts", func(t *testing.T) {
		t.Parallel()
		opts := jobs.CacheCleanupArgs{}.InsertOpts()
		if opts.Queue != "maintenance" {
			t.Errorf("InsertOpts().Queue = %q, want maintenance", opts.Queue)
		}
		if opts.UniqueOpts.ByPeriod <= 0 {
			t.Errorf("InsertOpts().UniqueOpts.ByPeriod = %v, want a period", opts.UniqueOpts.ByPeriod)
		}
		if (jobs.CacheCleanupArgs{}).Kind() != "cache_cleanup" {
			t.Errorf("Kind() = %q, want cache_cleanup", jobs.CacheCleanupArgs{}.Kind())
		}
	})

	t.Run("InsertedOncePerPeriod", func(t *testing.T) {
		t.Parallel()
		client, tdb := newClient(t)
		first, err := client.Insert(ctx, jobs.CacheCleanupArgs{}, nil)
		if err != nil {
			t.Fatalf("first Insert: %v", err)
		}
		if first.UniqueSkippedAsDuplicate {
			t.Fatal("first Insert was skipped as a duplicate")
		}
		if first.Job.Queue != jobs.QueueMaintenance || first.Job.MaxAttempts != 5 {
			t.Errorf("job queue %q max attempts %d, want maintenance and 5", first.Job.Queue, first.Job.MaxAttempts)
		}
		second, err := client.Insert(ctx, jobs.CacheCleanupArgs{}, nil)
		if err != nil {
			t.Fatalf("second Insert: %v", err)
		}
		if !second.UniqueSkippedAsDuplicate {
			t.Error("second Insert within the period was not skipped as a duplicate")
		}
		if second.Job.ID != first.Job.ID {
			t.Errorf("second Insert returned job %d, want the existing %d", second.Job.ID, first.Job.ID)
		}
		// Also from inside a transaction, the way handlers insert jobs.
		tx, err := tdb.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		third, err := client.InsertTx(ctx, tx, jobs.CacheCleanupArgs{}, nil)
		if err != nil {
			t.Fatalf("InsertTx: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if !third.UniqueSkippedAsDuplicate {
			t.Error("InsertTx within the period was not skipped as a duplicate")
		}
		var n int
		if err := tdb.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'cache_cleanup'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d cache_cleanup jobs in river_job, want 1", n)
		}
	})
}
