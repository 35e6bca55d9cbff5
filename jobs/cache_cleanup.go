package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// CacheCollections are the MongoDB collections holding cached answers of
// outside services. Every document in them carries an expiresAt date.
// Features add their collection here when they start caching.
var CacheCollections = []string{
	"workout_plans",
	"meal_plans",
}

// CacheExpiresAtField is the field cache documents expire by.
const CacheExpiresAtField = "expiresAt"

// CacheCleanupArgs asks for expired cache documents to be deleted. MongoDB
// would do this with a TTL index, but FerretDB (our MongoDB API in
// development and some deployments) has none, so a periodic job does it.
type CacheCleanupArgs struct{}

// Kind is the stable job kind name stored with every job.
func (CacheCleanupArgs) Kind() string { return "cache_cleanup" }

// InsertOpts puts the cleanup on the maintenance queue, at most once per
// ten minutes however many processes or operators ask for it.
func (CacheCleanupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueMaintenance,
		MaxAttempts: 5,
		UniqueOpts:  river.UniqueOpts{ByPeriod: 10 * time.Minute},
	}
}

// CacheCleanupWorker deletes expired documents from every cache collection.
// Deleting what has already expired is naturally idempotent.
type CacheCleanupWorker struct {
	river.WorkerDefaults[CacheCleanupArgs]
	Mongo *mongo.Database
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Timeout bounds one run so a hung MongoDB cannot hold a maintenance slot.
func (w *CacheCleanupWorker) Timeout(*river.Job[CacheCleanupArgs]) time.Duration {
	return 5 * time.Minute
}

// Work deletes expired documents, collection by collection.
func (w *CacheCleanupWorker) Work(ctx context.Context, job *river.Job[CacheCleanupArgs]) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	cutoff := now()
	var total int64
	for _, name := range CacheCollections {
		res, err := w.Mongo.Collection(name).DeleteMany(ctx, bson.D{{Key: CacheExpiresAtField, Value: bson.D{{Key: "$lt", Value: cutoff}}}})
		if err != nil {
			return fmt.Errorf("delete expired documents from %s: %w", name, err)
		}
		total += res.DeletedCount
	}
	river.RecordOutput(ctx, map[string]int64{"deleted": total}) //nolint:errcheck // output is informational
	return nil
}
