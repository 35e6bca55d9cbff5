// Package devstack starts local stand-ins for every outside dependency of NXG
// that a developer has not configured: Redis (the local server or an
// in-process miniredis), the MongoDB API (FerretDB over the nxg PostgreSQL
// database), S3 (gofakes3 on a local folder), the FCM HTTP v1 API, a
// Sentry-compatible event capture and simulators of the outside AI services
// (workout planner, meal detector, meal planner).
//
// cmd/nxg-dev and tests use it; production packages must never import it, so
// that the production binary does not link FerretDB, gofakes3 or miniredis.
//
// Every stand-in listens on a free loopback port (127.0.0.1:0) and keeps its
// files under the data directory it is given, so two dev servers can run side
// by side against one PostgreSQL database as long as each has its own
// data directory.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"
)

// Names of the environment variables that Env fills and that Options.Configured
// is checked for. The production config parses exactly these names.
const (
	EnvRedisURL          = "REDIS_URL"
	EnvMongoURL          = "MONGO_URL"
	EnvS3Endpoint        = "S3_ENDPOINT"
	EnvS3Bucket          = "S3_BUCKET"
	EnvS3Region          = "S3_REGION"
	EnvS3AccessKeyID     = "S3_ACCESS_KEY_ID"
	EnvS3SecretAccessKey = "S3_SECRET_ACCESS_KEY"
	EnvS3UsePathStyle    = "S3_USE_PATH_STYLE"
	EnvFirebaseProjectID = "FIREBASE_PROJECT_ID"
	EnvFCMEndpoint       = "NXG_FCM_ENDPOINT"
	EnvFirebaseCredsFile = "FIREBASE_CREDENTIALS_FILE"
	EnvSentryDSN         = "SENTRY_DSN"

	EnvWorkoutPlannerURL    = "NXG_WORKOUTPLANNER_URL"
	EnvWorkoutPlannerAPIKey = "NXG_WORKOUTPLANNER_API_KEY"
	EnvMealDetectorURL      = "NXG_MEALDETECTOR_URL"
	EnvMealDetectorAPIKey   = "NXG_MEALDETECTOR_API_KEY"
	EnvMealPlannerURL       = "NXG_MEALPLANNER_URL"
	EnvMealPlannerAPIKey    = "NXG_MEALPLANNER_API_KEY"
)

// DevBucket is the bucket the S3 stand-in creates for the dev server.
const DevBucket = "nxg-dev"

// Options tells Start where to keep data and which dependencies the developer
// has configured already.
type Options struct {
	// DataDir holds the stand-ins' files (for example ./.nxg-dev); subfolders
	// are created as needed.
	DataDir string
	// DatabaseURL is the postgres URL of the nxg database; FerretDB stores the
	// MongoDB data in it.
	DatabaseURL string
	// Logger receives the stand-ins' logs; nil means slog.Default().
	Logger *slog.Logger
	// Configured holds the environment variables the user has set (for
	// example os.Environ as a map). A dependency whose variable has a
	// non-empty value here is not started: REDIS_URL, MONGO_URL, S3_ENDPOINT,
	// NXG_FCM_ENDPOINT or FIREBASE_CREDENTIALS_FILE, SENTRY_DSN,
	// NXG_WORKOUTPLANNER_URL, NXG_MEALDETECTOR_URL, NXG_MEALPLANNER_URL. The
	// simulators' knobs are read from it too (NXG_SIM_<NAME>_LATENCY,
	// _ERROR_RATE, _OUTAGE, _ABSURD; see SimKnobs).
	Configured map[string]string
}

// Stack is the set of stand-ins Start started; a field is nil when that
// dependency was configured by the user and so not started.
type Stack struct {
	Redis  *Redis
	Mongo  *Mongo
	S3     *S3
	FCM    *FCM
	Sentry *Sentry

	WorkoutPlanner *WorkoutPlanner
	MealDetector   *MealDetector
	MealPlanner    *MealPlanner
}

// Start starts every dependency that opts.Configured does not name, in the
// order Redis, MongoDB, S3, FCM, Sentry, workout planner, meal detector,
// meal planner. When one fails, the ones already
// started are closed before the error is returned, so a failed start leaks
// no listener.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	configured := func(names ...string) bool {
		for _, n := range names {
			if opts.Configured[n] != "" {
				return true
			}
		}
		return false
	}

	s := &Stack{}
	fail := func(err error) (*Stack, error) {
		if cerr := s.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close stand-ins started so far: %w", cerr))
		}
		return nil, err
	}

	var err error
	if !configured(EnvRedisURL) {
		if s.Redis, err = StartRedis(ctx, logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvMongoURL) {
		if opts.DatabaseURL == "" {
			return fail(errors.New("devstack: Options.DatabaseURL is required to start FerretDB (or set MONGO_URL)"))
		}
		if s.Mongo, err = StartMongo(ctx, opts.DatabaseURL, logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvS3Endpoint) {
		if opts.DataDir == "" {
			return fail(errors.New("devstack: Options.DataDir is required to start the S3 stand-in (or set S3_ENDPOINT)"))
		}
		if s.S3, err = StartS3(ctx, filepath.Join(opts.DataDir, "s3"), DevBucket, logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvFCMEndpoint, EnvFirebaseCredsFile) {
		if s.FCM, err = StartFCM(logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvSentryDSN) {
		if s.Sentry, err = StartSentry(logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvWorkoutPlannerURL) {
		if s.WorkoutPlanner, err = startSim(opts.Configured, "WORKOUTPLANNER", StartWorkoutPlanner, logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvMealDetectorURL) {
		if s.MealDetector, err = startSim(opts.Configured, "MEALDETECTOR", StartMealDetector, logger); err != nil {
			return fail(err)
		}
	}
	if !configured(EnvMealPlannerURL) {
		if s.MealPlanner, err = startSim(opts.Configured, "MEALPLANNER", StartMealPlanner, logger); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// startSim starts one simulator with the knobs the environment sets for it
// (NXG_SIM_<name>_*), checked before it starts so a typo fails fast.
func startSim[T interface{ SetKnobs(SimKnobs) }](env map[string]string, name string,
	start func(*slog.Logger) (T, error), logger *slog.Logger) (T, error) {
	var zero T
	knobs, err := simKnobsFromEnv(name, env)
	if err != nil {
		return zero, err
	}
	sim, err := start(logger)
	if err != nil {
		return zero, err
	}
	sim.SetKnobs(knobs)
	return sim, nil
}

// Env returns the environment variables that point the server at the
// stand-ins that were started; variables of dependencies that were not
// started are absent, so the caller can overlay this map on the user's
// environment.
func (s *Stack) Env() map[string]string {
	env := map[string]string{}
	if s == nil {
		return env
	}
	if s.Redis != nil {
		env[EnvRedisURL] = s.Redis.URL()
	}
	if s.Mongo != nil {
		env[EnvMongoURL] = s.Mongo.URI()
	}
	if s.S3 != nil {
		env[EnvS3Endpoint] = s.S3.Endpoint()
		env[EnvS3Bucket] = s.S3.Bucket
		env[EnvS3Region] = s.S3.Region
		env[EnvS3AccessKeyID] = s.S3.AccessKeyID
		env[EnvS3SecretAccessKey] = s.S3.SecretAccessKey
		env[EnvS3UsePathStyle] = "true"
	}
	if s.FCM != nil {
		env[EnvFirebaseProjectID] = s.FCM.ProjectID()
		env[EnvFCMEndpoint] = s.FCM.Endpoint()
	}
	if s.Sentry != nil {
		env[EnvSentryDSN] = s.Sentry.DSN()
	}
	if s.WorkoutPlanner != nil {
		env[EnvWorkoutPlannerURL] = s.WorkoutPlanner.URL()
		env[EnvWorkoutPlannerAPIKey] = s.WorkoutPlanner.APIKey()
	}
	if s.MealDetector != nil {
		env[EnvMealDetectorURL] = s.MealDetector.URL()
		env[EnvMealDetectorAPIKey] = s.MealDetector.APIKey()
	}
	if s.MealPlanner != nil {
		env[EnvMealPlannerURL] = s.MealPlanner.URL()
		env[EnvMealPlannerAPIKey] = s.MealPlanner.APIKey()
	}
	return env
}

// Close stops the stand-ins in the reverse order of their start and returns
// every error met, so one stuck stand-in does not keep the others running.
// It is safe to call on a partly started or already closed Stack.
func (s *Stack) Close() error {
	if s == nil {
		return nil
	}
	var errs []error
	if s.MealPlanner != nil {
		errs = append(errs, s.MealPlanner.Close())
		s.MealPlanner = nil
	}
	if s.MealDetector != nil {
		errs = append(errs, s.MealDetector.Close())
		s.MealDetector = nil
	}
	if s.WorkoutPlanner != nil {
		errs = append(errs, s.WorkoutPlanner.Close())
		s.WorkoutPlanner = nil
	}
	if s.Sentry != nil {
		errs = append(errs, s.Sentry.Close())
		s.Sentry = nil
	}
	if s.FCM != nil {
		errs = append(errs, s.FCM.Close())
		s.FCM = nil
	}
	if s.S3 != nil {
		errs = append(errs, s.S3.Close())
		s.S3 = nil
	}
	if s.Mongo != nil {
		errs = append(errs, s.Mongo.Close())
		s.Mongo = nil
	}
	if s.Redis != nil {
		errs = append(errs, s.Redis.Close())
		s.Redis = nil
	}
	return errors.Join(errs...)
}

// httpServer is an http.Server on a free loopback port, shared by the HTTP
// stand-ins (S3, FCM, Sentry, the simulators) so each gets the same graceful shutdown.
type httpServer struct {
	srv  *http.Server
	url  string
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// shutdownTimeout bounds how long Close waits for in-flight requests before
// it cuts connections; stand-ins only serve short requests.
const shutdownTimeout = 5 * time.Second

func serveHTTP(name string, h http.Handler, logger *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("devstack: %s: listen on loopback: %w", name, err)
	}
	s := &httpServer{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		url:  "http://" + ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("stand-in stopped serving", "stand_in", name, "error", err)
		}
	}()
	return s, nil
}

// close shuts the server down gracefully; later calls return the first
// result, so every stand-in's Close may be called more than once.
func (s *httpServer) close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			// Requests still running after the grace period are cut, so
			// Close never hangs a developer's Ctrl-C.
			s.closeErr = errors.Join(err, s.srv.Close())
		}
		<-s.done
	})
	return s.closeErr
}
