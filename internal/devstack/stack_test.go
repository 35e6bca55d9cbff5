package devstack_test

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/push"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// TestStart starts everything, as cmd/nxg-dev does on a bare machine, and
// reaches each stand-in only through the variables Env returns.
func TestStart(t *testing.T) {
	ctx := context.Background()
	logger := testLogger(t)
	dataDir := t.TempDir()
	st, err := devstack.Start(ctx, devstack.Options{
		DataDir:     dataDir,
		DatabaseURL: testDatabaseURL(t),
		Logger:      logger,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = st.Close()
		}
	})
	if st.Redis == nil || st.Mongo == nil || st.S3 == nil || st.FCM == nil || st.Sentry == nil ||
		st.WorkoutPlanner == nil || st.MealDetector == nil || st.MealPlanner == nil {
		t.Fatalf("Start left a stand-in unstarted: %+v", st)
	}

	env := st.Env()
	wantKeys := []string{
		"FIREBASE_PROJECT_ID", "MONGO_URL", "NXG_FCM_ENDPOINT",
		"NXG_MEALDETECTOR_API_KEY", "NXG_MEALDETECTOR_URL", "NXG_MEALPLANNER_API_KEY", "NXG_MEALPLANNER_URL",
		"NXG_WORKOUTPLANNER_API_KEY", "NXG_WORKOUTPLANNER_URL",
		"REDIS_URL", "S3_ACCESS_KEY_ID", "S3_BUCKET",
		"S3_ENDPOINT", "S3_REGION", "S3_SECRET_ACCESS_KEY", "S3_USE_PATH_STYLE", "SENTRY_DSN",
	}
	if got := slices.Sorted(maps.Keys(env)); !slices.Equal(got, wantKeys) {
		t.Fatalf("Env() keys = %v, want %v", got, wantKeys)
	}
	if env["S3_BUCKET"] != "nxg-dev" || env["S3_USE_PATH_STYLE"] != "true" {
		t.Fatalf("S3_BUCKET = %q, S3_USE_PATH_STYLE = %q; want nxg-dev, true", env["S3_BUCKET"], env["S3_USE_PATH_STYLE"])
	}
	if _, err := os.Stat(filepath.Join(dataDir, "s3", "s3.bolt")); err != nil {
		t.Fatalf("S3 data is not under the data directory: %v", err)
	}

	// Redis.
	ropts, err := redis.ParseURL(env["REDIS_URL"])
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if pong, err := rdb.Ping(ctx).Result(); err != nil || pong != "PONG" {
		t.Fatalf("PING REDIS_URL = %q, %v", pong, err)
	}

	// MongoDB.
	mc := mongoClient(t, env["MONGO_URL"])
	if _, err := mc.Database("nxg").Collection("meal_plans").InsertOne(ctx, bson.D{{Key: "_id", Value: "m1"}}); err != nil {
		t.Fatalf("insert through MONGO_URL: %v", err)
	}

	// S3, configured as the production config would from the variables.
	sc, err := storage.New(ctx, storage.Config{
		Endpoint: env["S3_ENDPOINT"], Bucket: env["S3_BUCKET"], Region: env["S3_REGION"],
		AccessKeyID: env["S3_ACCESS_KEY_ID"], SecretAccessKey: env["S3_SECRET_ACCESS_KEY"],
		UsePathStyle: env["S3_USE_PATH_STYLE"] == "true",
	})
	if err != nil {
		t.Fatalf("storage.New from Env: %v", err)
	}
	if err := sc.Ping(ctx); err != nil {
		t.Fatalf("S3 bucket from Env: %v", err)
	}

	// FCM.
	pc, err := push.New(ctx, push.Config{ProjectID: env["FIREBASE_PROJECT_ID"], Endpoint: env["NXG_FCM_ENDPOINT"]})
	if err != nil {
		t.Fatalf("push.New from Env: %v", err)
	}
	if _, err := pc.Send(ctx, push.Message{Token: "d1", Title: "hi"}); err != nil {
		t.Fatalf("Send through NXG_FCM_ENDPOINT: %v", err)
	}
	if n := len(st.FCM.Messages()); n != 1 {
		t.Fatalf("FCM stand-in recorded %d messages, want 1", n)
	}

	// Sentry.
	sentryClient, err := sentry.NewClient(sentry.ClientOptions{Dsn: env["SENTRY_DSN"]})
	if err != nil {
		t.Fatalf("sentry.NewClient(SENTRY_DSN): %v", err)
	}
	hub := sentry.NewHub(sentryClient, sentry.NewScope())
	hub.CaptureMessage("dev start")
	if !hub.Flush(5*time.Second) || len(st.Sentry.Events()) != 1 {
		t.Fatalf("Sentry stand-in has %d events after a capture, want 1", len(st.Sentry.Events()))
	}

	// Close stops every server and can be called again.
	sentryEvents := strings.TrimSuffix(env["SENTRY_DSN"], "/1")
	if err := mc.Disconnect(ctx); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, u := range map[string]string{
		"S3": env["S3_ENDPOINT"], "FCM": env["NXG_FCM_ENDPOINT"], "Sentry": sentryEvents,
		"workout planner": env["NXG_WORKOUTPLANNER_URL"], "meal detector": env["NXG_MEALDETECTOR_URL"],
		"meal planner": env["NXG_MEALPLANNER_URL"],
	} {
		if resp, err := http.Get(u); err == nil {
			_ = resp.Body.Close()
			t.Errorf("%s still answers at %s after Close", name, u)
		}
	}
}

// TestStartConfigured checks that configured dependencies are not started;
// with everything configured, Start needs neither a database nor a data
// directory, which proves it starts nothing.
func TestStartConfigured(t *testing.T) {
	ctx := context.Background()

	t.Run("All", func(t *testing.T) {
		st, err := devstack.Start(ctx, devstack.Options{
			Logger: testLogger(t),
			Configured: map[string]string{
				"REDIS_URL": "redis://cache:6379/0", "MONGO_URL": "mongodb://mongo/", "S3_ENDPOINT": "https://s3.example",
				"FIREBASE_CREDENTIALS_FILE": "/etc/nxg/fcm.json", "SENTRY_DSN": "https://k@sentry.example/1",
				"NXG_WORKOUTPLANNER_URL": "https://planner.example", "NXG_MEALDETECTOR_URL": "https://detector.example",
				"NXG_MEALPLANNER_URL": "https://meals.example",
			},
		})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		if st.Redis != nil || st.Mongo != nil || st.S3 != nil || st.FCM != nil || st.Sentry != nil ||
			st.WorkoutPlanner != nil || st.MealDetector != nil || st.MealPlanner != nil {
			t.Fatalf("Start started a configured dependency: %+v", st)
		}
		if env := st.Env(); len(env) != 0 {
			t.Fatalf("Env() = %v, want empty: the user's own variables stay in charge", env)
		}
		if err := st.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})

	t.Run("Some", func(t *testing.T) {
		st, err := devstack.Start(ctx, devstack.Options{
			DataDir: t.TempDir(),
			Logger:  testLogger(t),
			Configured: map[string]string{
				"MONGO_URL": "mongodb://mongo/", "NXG_FCM_ENDPOINT": "http://fcm.local/v1", "SENTRY_DSN": "https://k@sentry.example/1",
				// Empty means unset, as with an exported but blank variable.
				"REDIS_URL": "",
				// Unrelated variables change nothing.
				"HOME": "/root",
			},
		})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if st.Redis == nil || st.S3 == nil {
			t.Fatalf("Start skipped an unconfigured dependency: %+v", st)
		}
		if st.Mongo != nil || st.FCM != nil || st.Sentry != nil {
			t.Fatalf("Start started a configured dependency: %+v", st)
		}
		env := st.Env()
		for _, k := range []string{"MONGO_URL", "NXG_FCM_ENDPOINT", "FIREBASE_PROJECT_ID", "SENTRY_DSN"} {
			if _, ok := env[k]; ok {
				t.Errorf("Env() sets %s although the user configured it", k)
			}
		}
		if env["REDIS_URL"] != st.Redis.URL() || env["S3_ENDPOINT"] != st.S3.Endpoint() {
			t.Fatalf("Env() = %v, want REDIS_URL and S3_ENDPOINT of the started stand-ins", env)
		}
	})

	t.Run("MissingDataDir", func(t *testing.T) {
		_, err := devstack.Start(ctx, devstack.Options{
			Logger:     testLogger(t),
			Configured: map[string]string{"MONGO_URL": "mongodb://mongo/"},
		})
		if err == nil || !strings.Contains(err.Error(), "DataDir") {
			t.Fatalf("Start without a data directory = %v, want an error naming DataDir", err)
		}
	})

	t.Run("MissingDatabaseURL", func(t *testing.T) {
		_, err := devstack.Start(ctx, devstack.Options{DataDir: t.TempDir(), Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), "DatabaseURL") {
			t.Fatalf("Start without a database URL = %v, want an error naming DatabaseURL", err)
		}
	})
}
