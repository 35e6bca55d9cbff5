package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// nutritionFixture is a database with one member (and their data key), an
// in-process S3 and the meal detector simulator behind the resilient client.
type nutritionFixture struct {
	db     *testkit.Database
	keys   *fieldcrypt.MasterKeys
	user   uuid.UUID
	store  *storage.Client
	sim    *devstack.MealDetector
	logs   *testkit.SyncBuffer
	worker *jobs.MealAnalysisWorker
}

func newNutritionFixture(t *testing.T) *nutritionFixture {
	t.Helper()
	ctx := context.Background()
	f := &nutritionFixture{db: testkit.NewDatabase(t), logs: &testkit.SyncBuffer{}}
	keys, err := fieldcrypt.ParseMasterKeys(testkit.AuthEnv(t)["NXG_MASTER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	f.keys = keys
	f.user = uuid.Must(uuid.NewV7())
	_, wrapped, err := keys.NewDataKey(f.user.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key) VALUES ($1, $2, 'x', 'Eater', 'member', $3)`,
		f.user, f.user.String()+"@meals.test", wrapped); err != nil {
		t.Fatal(err)
	}
	s3, err := devstack.StartS3(ctx, t.TempDir(), "nxg-test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	if f.store, err = storage.New(ctx, storage.Config{
		Endpoint: s3.Endpoint(), Bucket: s3.Bucket, Region: s3.Region,
		AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, UsePathStyle: true,
	}); err != nil {
		t.Fatal(err)
	}
	if f.sim, err = devstack.StartMealDetector(testLogger(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.sim.Close() })
	base, err := integrations.New(integrations.Config{
		Name: mealdetector.Name, BaseURL: f.sim.URL(), APIKey: f.sim.APIKey(), MaxAttempts: 2,
		BackoffInitial: time.Millisecond, BackoffMax: 2 * time.Millisecond, FailureThreshold: 100,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.worker = &jobs.MealAnalysisWorker{
		Pool: f.db.Pool, Storage: f.store, Detector: mealdetector.New(base), MasterKeys: keys,
		Logger: slog.New(slog.NewJSONHandler(f.logs, nil)),
	}
	return f
}

// analysis creates an upload row of the declared type and size, stores
// photo (when not nil) under its key as contentType, and creates its
// pending analysis.
func (f *nutritionFixture) analysis(t *testing.T, declaredType string, declaredSize int64, storedType string, photo []byte) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	uploadID := uuid.Must(uuid.NewV7())
	key := "users/" + f.user.String() + "/meal-photos/" + uploadID.String()
	if _, err := f.db.Pool.Exec(ctx, `INSERT INTO meal_photo_uploads (id, user_id, object_key, content_type, size_bytes, expires_at) VALUES ($1, $2, $3, $4, $5, now() + interval '10 minutes')`,
		uploadID, f.user, key, declaredType, declaredSize); err != nil {
		t.Fatal(err)
	}
	if photo != nil {
		if err := f.store.Put(ctx, key, storedType, bytes.NewReader(photo), int64(len(photo))); err != nil {
			t.Fatal(err)
		}
	}
	var id uuid.UUID
	if err := f.db.Pool.QueryRow(ctx, `INSERT INTO meal_analyses (user_id, upload_id) VALUES ($1, $2) RETURNING id`, f.user, uploadID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *nutritionFixture) work(t *testing.T, id uuid.UUID, attempt int) error {
	t.Helper()
	return f.worker.Work(context.Background(), &river.Job[jobs.MealAnalysisArgs]{
		JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: jobs.MealAnalysisMaxAttempts},
		Args:   jobs.MealAnalysisArgs{AnalysisID: id, UserID: f.user},
	})
}

type analysisRow struct {
	status, reason string
	items          []jobs.FoodItem
}

func (f *nutritionFixture) read(t *testing.T, id uuid.UUID) analysisRow {
	t.Helper()
	var (
		r      analysisRow
		sealed []byte
	)
	if err := f.db.Pool.QueryRow(context.Background(), `SELECT status, failure_reason, items_enc FROM meal_analyses WHERE id = $1`, id).Scan(&r.status, &r.reason, &sealed); err != nil {
		t.Fatal(err)
	}
	var wrapped []byte
	if err := f.db.Pool.QueryRow(context.Background(), `SELECT data_key FROM users WHERE id = $1`, f.user).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	key, err := f.keys.Unwrap(f.user.String(), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if r.items, err = jobs.OpenFoodItems(key, jobs.EncColAnalysisItems, sealed); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMealAnalysisWorker(t *testing.T) {
	f := newNutritionFixture(t)
	photo, err := devstack.FakeMealPhoto(mealdetector.ContentTypeJPEG, "lunch")
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(photo))

	t.Run("outage keeps it pending with a reason, then ready with the same key", func(t *testing.T) {
		id := f.analysis(t, mealdetector.ContentTypeJPEG, size, mealdetector.ContentTypeJPEG, photo)
		f.sim.SetKnobs(devstack.SimKnobs{Outage: true})
		if err := f.work(t, id, 1); err == nil {
			t.Fatal("Work during an outage succeeded; want an error so River retries")
		}
		if r := f.read(t, id); r.status != "pending" || !strings.Contains(r.reason, "not answering") {
			t.Fatalf("during outage: %+v, want pending with a reason", r)
		}
		f.sim.SetKnobs(devstack.SimKnobs{})
		if err := f.work(t, id, 2); err != nil {
			t.Fatalf("Work after the outage: %v", err)
		}
		r := f.read(t, id)
		if r.status != "ready" || r.reason != "" || len(r.items) == 0 {
			t.Fatalf("after outage: %+v, want ready with items", r)
		}
		for _, it := range r.items {
			if it.Name == "" || it.Grams <= 0 || it.Confidence <= 0 || it.Confidence > 1 {
				t.Fatalf("stored item %+v", it)
			}
		}
		want := jobs.MealAnalysisIdempotencyKey(id)
		reqs := f.sim.Requests()
		if len(reqs) < 2 {
			t.Fatalf("simulator saw %d requests, want the failed ones and the successful one", len(reqs))
		}
		for _, r := range reqs {
			if r.IdempotencyKey != want {
				t.Fatalf("request with key %q, want %q on every attempt", r.IdempotencyKey, want)
			}
		}
		// A later run of a finished analysis is a no-op.
		before := len(f.sim.Requests())
		if err := f.work(t, id, 3); err != nil || len(f.sim.Requests()) != before {
			t.Fatalf("rerun: %v, %d new requests", err, len(f.sim.Requests())-before)
		}
	})

	t.Run("wrong size or type fails with a reason", func(t *testing.T) {
		bySize := f.analysis(t, mealdetector.ContentTypeJPEG, size+1, mealdetector.ContentTypeJPEG, photo)
		byType := f.analysis(t, mealdetector.ContentTypePNG, size, mealdetector.ContentTypeJPEG, photo)
		missing := f.analysis(t, mealdetector.ContentTypeJPEG, size, "", nil)
		before := len(f.sim.Requests())
		for id, want := range map[uuid.UUID]string{bySize: "bytes", byType: "image/jpeg", missing: "never uploaded"} {
			if err := f.work(t, id, 1); err != nil {
				t.Fatalf("Work: %v", err)
			}
			if r := f.read(t, id); r.status != "failed" || !strings.Contains(r.reason, want) {
				t.Fatalf("analysis %s: %+v, want failed mentioning %q", id, r, want)
			}
		}
		if n := len(f.sim.Requests()) - before; n != 0 {
			t.Fatalf("%d detector calls for photos that fail the checks", n)
		}
	})

	t.Run("absurd detection rejected and logged", func(t *testing.T) {
		id := f.analysis(t, mealdetector.ContentTypeJPEG, size, mealdetector.ContentTypeJPEG, photo)
		f.sim.SetKnobs(devstack.SimKnobs{Absurd: true})
		t.Cleanup(func() { f.sim.SetKnobs(devstack.SimKnobs{}) })
		if err := f.work(t, id, 1); err != nil {
			t.Fatalf("Work: %v", err)
		}
		r := f.read(t, id)
		if r.status != "failed" || !strings.Contains(r.reason, "cannot be right") || len(r.items) != 0 {
			t.Fatalf("absurd: %+v, want failed without items", r)
		}
		if !strings.Contains(f.logs.String(), "meal detector answer rejected") || !strings.Contains(f.logs.String(), id.String()) {
			t.Fatalf("log lacks the rejection: %s", f.logs.String())
		}
	})

	t.Run("last attempt of an outage fails", func(t *testing.T) {
		id := f.analysis(t, mealdetector.ContentTypeJPEG, size, mealdetector.ContentTypeJPEG, photo)
		f.sim.SetKnobs(devstack.SimKnobs{Outage: true})
		t.Cleanup(func() { f.sim.SetKnobs(devstack.SimKnobs{}) })
		if err := f.work(t, id, jobs.MealAnalysisMaxAttempts); err != nil {
			t.Fatalf("last attempt: %v, want nil (the analysis failed for good)", err)
		}
		if r := f.read(t, id); r.status != "failed" || !strings.Contains(r.reason, "could not be reached") {
			t.Fatalf("after the last attempt: %+v", r)
		}
	})

	t.Run("open breaker snoozes without calling", func(t *testing.T) {
		base, err := integrations.New(integrations.Config{
			Name: mealdetector.Name, BaseURL: f.sim.URL(), APIKey: f.sim.APIKey(), MaxAttempts: 1,
			FailureThreshold: 1, OpenTimeout: time.Minute,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := *f.worker
		w.Detector = mealdetector.New(base)
		f.sim.SetKnobs(devstack.SimKnobs{Outage: true})
		t.Cleanup(func() { f.sim.SetKnobs(devstack.SimKnobs{}) })
		id := f.analysis(t, mealdetector.ContentTypeJPEG, size, mealdetector.ContentTypeJPEG, photo)
		job := &river.Job[jobs.MealAnalysisArgs]{
			JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: jobs.MealAnalysisMaxAttempts},
			Args:   jobs.MealAnalysisArgs{AnalysisID: id, UserID: f.user},
		}
		before := len(f.sim.Requests())
		for i := range 2 {
			var snooze *river.JobSnoozeError
			if err := w.Work(context.Background(), job); !errors.As(err, &snooze) {
				t.Fatalf("attempt %d with the breaker opening/open = %v, want a snooze", i+1, err)
			}
		}
		if n := len(f.sim.Requests()) - before; n != 1 {
			t.Fatalf("%d detector calls, want 1: the open breaker refuses the second without calling", n)
		}
		if r := f.read(t, id); r.status != "pending" || r.reason == "" {
			t.Fatalf("while the breaker is open: %+v", r)
		}
	})

	t.Run("Retry-After snoozes", func(t *testing.T) {
		id := f.analysis(t, mealdetector.ContentTypeJPEG, size, mealdetector.ContentTypeJPEG, photo)
		// Longer than the client waits within a call (MaxRetryAfter 10s).
		f.sim.SetKnobs(devstack.SimKnobs{RateLimitBurst: 5, RetryAfterSeconds: 60})
		t.Cleanup(func() { f.sim.SetKnobs(devstack.SimKnobs{}) })
		err := f.work(t, id, 1)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			t.Fatalf("Work under a long Retry-After = %v, want a snooze", err)
		}
		if r := f.read(t, id); r.status != "pending" || r.reason == "" {
			t.Fatalf("while snoozed: %+v", r)
		}
	})
}
