// Package jobs holds NXG's background work as River job kinds: one file per
// kind with its args and worker. This file wires them: the queues, the
// worker registry and the periodic schedules.
//
// River runs jobs at least once, so every worker is idempotent: running one
// twice leaves the same state as running it once.
package jobs

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/erasure"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// Queue names. Each kind of work has its own queue, so slow calls to outside
// AI services never delay a push notification or a session timeout.
const (
	QueueDefault     = river.QueueDefault
	QueueAI          = "ai"
	QueuePush        = "push"
	QueueMaintenance = "maintenance"
)

// Queues is how many jobs of each queue one process works at once.
func Queues() map[string]river.QueueConfig {
	return map[string]river.QueueConfig{
		QueueDefault:     {MaxWorkers: 20},
		QueueAI:          {MaxWorkers: 10},
		QueuePush:        {MaxWorkers: 20},
		QueueMaintenance: {MaxWorkers: 2},
	}
}

// Deps is what the workers need. A worker whose dependencies are missing
// fails when it runs (and its job is retried), so a partial Deps still
// registers every worker.
type Deps struct {
	// Mongo is the database caching outside services' answers.
	Mongo *mongo.Database
	// Pool is the PostgreSQL pool (the system of record).
	Pool *pgxpool.Pool
	// Redis and RedisPrefix are the Redis client and the instance's key
	// prefix, for erasing keys that name a user.
	Redis       redis.UniversalClient
	RedisPrefix string
	// Storage is the S3 bucket of users' files and export archives.
	Storage *storage.Client
	// Sessions are the auth sessions in Redis.
	Sessions *session.Store
	// MasterKeys unwrap users' data keys, to decrypt their data for export.
	MasterKeys *fieldcrypt.MasterKeys
	// Audit writes and pseudonymises the audit trail.
	Audit *audit.Log
	// Floor tunes the gym floor's jobs: session timeouts, idle unlinks and
	// the offline sweep.
	Floor floor.Settings
	// AI calls the outside AI services.
	AI AI
	// Erasure replaces the registry the account erasure runs; nil means
	// erasure.Default over the stores above. Tests set it.
	Erasure *erasure.Registry
}

// AI is the outside AI services' clients, for the jobs of the ai queue.
// A job whose client is nil fails (and is retried), like any missing
// dependency.
type AI struct {
	WorkoutPlanner *workoutplanner.Client
	MealDetector   *mealdetector.Client
	MealPlanner    *mealplanner.Client
}

// Workers registers every worker.
func Workers(deps Deps) (*river.Workers, error) {
	eraser := deps.Erasure
	if eraser == nil {
		eraser = erasure.Default(erasure.Deps{
			Pool:             deps.Pool,
			Storage:          deps.Storage,
			Sessions:         deps.Sessions,
			Redis:            deps.Redis,
			RedisPrefix:      deps.RedisPrefix,
			Mongo:            deps.Mongo,
			MongoCollections: CacheCollections,
			Audit:            deps.Audit,
		})
	}
	// A nil pool must stay a nil interface, or the worker's check passes
	// and the query panics.
	var accounts dbsqlc.DBTX
	if deps.Pool != nil {
		accounts = deps.Pool
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &CacheCleanupWorker{Mongo: deps.Mongo}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &DataExportWorker{
		Pool: deps.Pool, Storage: deps.Storage, Sessions: deps.Sessions,
		MasterKeys: deps.MasterKeys, Audit: deps.Audit,
	}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &ExportRetentionWorker{Pool: deps.Pool, Storage: deps.Storage}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &AccountErasureWorker{DB: accounts, Erasure: eraser}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &MasterKeyRewrapWorker{Pool: deps.Pool, MasterKeys: deps.MasterKeys}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &MachineOfflineSweepWorker{Pool: deps.Pool, OfflineAfter: deps.Floor.MachineOfflineAfter}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &SessionTimeoutWorker{Pool: deps.Pool}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &IdleUnlinkWorker{Pool: deps.Pool, Settings: deps.Floor}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &WorkoutPlanWorker{
		Pool: deps.Pool, Mongo: deps.Mongo, Planner: deps.AI.WorkoutPlanner, MasterKeys: deps.MasterKeys,
	}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &MealAnalysisWorker{
		Pool: deps.Pool, Storage: deps.Storage, Detector: deps.AI.MealDetector, MasterKeys: deps.MasterKeys,
	}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &MealPlanWorker{Pool: deps.Pool, Mongo: deps.Mongo, Planner: deps.AI.MealPlanner}); err != nil {
		return nil, err
	}
	return workers, nil
}

// PeriodicJobs lists the jobs River's leader inserts on a schedule. Only one
// process (the elected leader) inserts them, however many run. fl is the
// gym floor's settings, which the offline sweep's schedule follows.
func PeriodicJobs(fl floor.Settings) []*river.PeriodicJob {
	return []*river.PeriodicJob{
		river.NewPeriodicJob(
			river.PeriodicInterval(15*time.Minute),
			func() (river.JobArgs, *river.InsertOpts) { return CacheCleanupArgs{}, nil },
			&river.PeriodicJobOpts{ID: CacheCleanupArgs{}.Kind(), RunOnStart: true},
		),
		// Archives expire after ExportTTL; an hour late is fine. Not run on
		// start: a deploy need not sweep.
		river.NewPeriodicJob(
			river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return ExportRetentionArgs{}, nil },
			&river.PeriodicJobOpts{ID: ExportRetentionArgs{}.Kind()},
		),
		// Run on start: a deploy that rotates the master key gets every data
		// key re-wrapped under the new one without anyone remembering to
		// ask; without a rotation it only reads.
		river.NewPeriodicJob(
			river.PeriodicInterval(24*time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return MasterKeyRewrapArgs{}, nil },
			&river.PeriodicJobOpts{ID: MasterKeyRewrapArgs{}.Kind(), RunOnStart: true},
		),
		// Run on start: after a deploy or an outage, consoles that went
		// silent meanwhile show offline at once. The interval follows how
		// long a console may be silent (see MachineOfflineSweepInterval).
		river.NewPeriodicJob(
			river.PeriodicInterval(MachineOfflineSweepInterval(fl.MachineOfflineAfter)),
			func() (river.JobArgs, *river.InsertOpts) { return MachineOfflineSweepArgs{}, nil },
			&river.PeriodicJobOpts{ID: MachineOfflineSweepArgs{}.Kind(), RunOnStart: true},
		),
	}
}
