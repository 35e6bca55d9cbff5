// Package jobs holds NXG's background work as River job kinds: one file per
// kind with its args and worker. This file wires them: the queues, the
// worker registry and the periodic schedules.
//
// River runs jobs at least once, so every worker is idempotent: running one
// twice leaves the same state as running it once.
package jobs

import (
	"time"

	"github.com/riverqueue/river"
	"go.mongodb.org/mongo-driver/v2/mongo"
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

// Deps is what the workers need.
type Deps struct {
	// Mongo is the database caching outside services' answers.
	Mongo *mongo.Database
}

// Workers registers every worker.
func Workers(deps Deps) (*river.Workers, error) {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &CacheCleanupWorker{Mongo: deps.Mongo}); err != nil {
		return nil, err
	}
	return workers, nil
}

// PeriodicJobs lists the jobs River's leader inserts on a schedule. Only one
// process (the elected leader) inserts them, however many run.
func PeriodicJobs() []*river.PeriodicJob {
	return []*river.PeriodicJob{
		river.NewPeriodicJob(
			river.PeriodicInterval(15*time.Minute),
			func() (river.JobArgs, *river.InsertOpts) { return CacheCleanupArgs{}, nil },
			&river.PeriodicJobOpts{ID: CacheCleanupArgs{}.Kind(), RunOnStart: true},
		),
	}
}
