package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// MealAnalysisArgs asks the meal detector what an uploaded photo shows.
// AnalyzeMealPhoto inserts it in the transaction that creates the analysis
// row. user_id is top level so that erasing the member deletes a waiting
// job (erasure.RiverJobs).
type MealAnalysisArgs struct {
	AnalysisID uuid.UUID `json:"analysis_id" river:"unique"`
	UserID     uuid.UUID `json:"user_id"`
}

// Kind is the stable job kind name stored with every job.
func (MealAnalysisArgs) Kind() string { return "meal_analysis" }

// InsertOpts: one job per analysis, on the queue of outside calls.
func (MealAnalysisArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueAI, MaxAttempts: MealAnalysisMaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// MealAnalysisMaxAttempts bounds the detector calls of one analysis; River's
// backoff between them grows to minutes, so a short outage is ridden out.
const MealAnalysisMaxAttempts = 5

// mealPhotoGetTTL is how long the detector's presigned GET works: long
// enough for its download, short enough that a leaked URL soon dies.
const mealPhotoGetTTL = 5 * time.Minute

// EncColMealItems and EncColAnalysisItems are the sealed columns of meals'
// and analyses' foods: fieldcrypt binds each ciphertext to its column.
const (
	EncColMealItems     = "meals.items_enc"
	EncColAnalysisItems = "meal_analyses.items_enc"
)

// FoodItem is one food of a meal or an analysis as it is sealed in
// items_enc (a JSON array).
type FoodItem struct {
	Name       string  `json:"name"`
	Grams      float64 `json:"grams"`
	Kcal       float64 `json:"kcal"`
	ProteinG   float64 `json:"protein_g"`
	CarbsG     float64 `json:"carbs_g"`
	FatG       float64 `json:"fat_g"`
	Confidence float64 `json:"confidence"`
}

// SealFoodItems encrypts items for the key's user and column.
func SealFoodItems(key *fieldcrypt.DataKey, column string, items []FoodItem) ([]byte, error) {
	if items == nil {
		items = []FoodItem{}
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("encode food items: %w", err)
	}
	sealed, err := key.Seal(column, b)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", column, err)
	}
	return sealed, nil
}

// OpenFoodItems decrypts what SealFoodItems sealed; nil opens to no items.
func OpenFoodItems(key *fieldcrypt.DataKey, column string, sealed []byte) ([]FoodItem, error) {
	if sealed == nil {
		return nil, nil
	}
	b, err := key.Open(column, sealed)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", column, err)
	}
	var items []FoodItem
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, fmt.Errorf("decode %s: %w", column, err)
	}
	return items, nil
}

// NutritionDataKey unwraps userID's data key.
func NutritionDataKey(ctx context.Context, q dbsqlc.DBTX, keys *fieldcrypt.MasterKeys, userID uuid.UUID) (*fieldcrypt.DataKey, error) {
	if keys == nil {
		return nil, errors.New("no master keys configured")
	}
	u, err := dbsqlc.New().UserGet(ctx, q, userID)
	if err != nil {
		return nil, fmt.Errorf("read user %s: %w", userID, err)
	}
	key, err := keys.Unwrap(u.ID.String(), u.DataKey)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key of user %s: %w", userID, err)
	}
	return key, nil
}

// MealAnalysisWorker checks the uploaded photo in S3, asks the detector
// about it through a presigned GET, and stores the validated foods. It is
// idempotent: an analysis that is no longer pending (or gone with its
// member) makes it a no-op, and every attempt sends the detector the same
// idempotency key, derived from the analysis id, so a retry after a lost
// answer is replayed rather than detected twice.
type MealAnalysisWorker struct {
	river.WorkerDefaults[MealAnalysisArgs]
	Pool       *pgxpool.Pool
	Storage    *storage.Client
	Detector   *mealdetector.Client
	MasterKeys *fieldcrypt.MasterKeys
	// Logger records rejected detections; nil means slog.Default().
	Logger *slog.Logger
}

// MealAnalysisIdempotencyKey is the key every attempt of one analysis sends.
func MealAnalysisIdempotencyKey(analysisID uuid.UUID) string {
	return "meal-analysis-" + analysisID.String()
}

var mealQueries = dbsqlc.New()

// Timeout covers the detector's retries within one call.
func (w *MealAnalysisWorker) Timeout(*river.Job[MealAnalysisArgs]) time.Duration {
	return 2 * time.Minute
}

// Work runs one attempt.
func (w *MealAnalysisWorker) Work(ctx context.Context, job *river.Job[MealAnalysisArgs]) error {
	if w.Pool == nil || w.Storage == nil || w.Detector == nil || w.MasterKeys == nil {
		return errors.New("meal analysis: pool, storage, detector and master keys are required")
	}
	logger := w.Logger
	if logger == nil {
		logger = slog.Default()
	}
	id := job.Args.AnalysisID
	a, err := mealQueries.MealAnalysisGetForJob(ctx, w.Pool, id)
	if db.IsNotFound(err) {
		return nil // erased with its member
	}
	if err != nil {
		return fmt.Errorf("meal analysis %s: read: %w", id, err)
	}
	if a.Status != "pending" {
		return nil
	}
	fail := func(reason string) error {
		if err := mealQueries.MealAnalysisSetFailed(ctx, w.Pool, dbsqlc.MealAnalysisSetFailedParams{ID: id, FailureReason: reason}); err != nil {
			return fmt.Errorf("meal analysis %s: mark failed: %w", id, err)
		}
		return nil
	}

	info, err := w.Storage.Head(ctx, a.ObjectKey)
	if errors.Is(err, storage.ErrNotFound) {
		return fail("The photo was never uploaded: upload it to the URL you were given, then ask again.")
	}
	if err != nil {
		return fmt.Errorf("meal analysis %s: head photo: %w", id, err) // our S3: retry
	}
	if info.Size != a.SizeBytes {
		return fail(fmt.Sprintf("The uploaded photo has %d bytes, not the %d declared.", info.Size, a.SizeBytes))
	}
	if info.ContentType != a.ContentType {
		return fail(fmt.Sprintf("The uploaded photo is %q, not the %q declared.", info.ContentType, a.ContentType))
	}
	url, err := w.Storage.PresignGet(ctx, a.ObjectKey, mealPhotoGetTTL)
	if err != nil {
		return fmt.Errorf("meal analysis %s: presign photo: %w", id, err)
	}

	d, err := w.Detector.Detect(ctx, MealAnalysisIdempotencyKey(id), mealdetector.DetectRequest{
		ImageURL: url, ContentType: a.ContentType, SizeBytes: a.SizeBytes,
	})
	if err != nil {
		if errors.Is(err, mealdetector.ErrInvalidResponse) {
			logger.WarnContext(ctx, "meal detector answer rejected", "analysis_id", id, "err", err)
			return fail("The meal detector gave an answer that cannot be right, so it was discarded. Try another photo.")
		}
		if errors.Is(err, mealdetector.ErrInvalidRequest) {
			logger.ErrorContext(ctx, "meal detector request invalid", "analysis_id", id, "err", err)
			return fail("This photo cannot be sent to the meal detector.")
		}
		var ie *integrations.Error
		if errors.As(err, &ie) && !ie.Retryable {
			if ie.Status == 422 {
				return fail("The meal detector could not read this photo. Try a clearer photo of the plate.")
			}
			logger.ErrorContext(ctx, "meal detector refused the request", "analysis_id", id, "err", err)
			return fail("The meal detector refused this photo.")
		}
		return w.retryLater(ctx, job, err)
	}

	items := make([]FoodItem, len(d.Items))
	for i, it := range d.Items {
		items[i] = FoodItem{Name: it.Name, Grams: it.Grams, Kcal: it.Kcal, ProteinG: it.ProteinG,
			CarbsG: it.CarbsG, FatG: it.FatG, Confidence: it.Confidence}
	}
	key, err := NutritionDataKey(ctx, w.Pool, w.MasterKeys, a.UserID)
	if db.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("meal analysis %s: %w", id, err)
	}
	sealed, err := SealFoodItems(key, EncColAnalysisItems, items)
	if err != nil {
		return fmt.Errorf("meal analysis %s: %w", id, err)
	}
	if err := mealQueries.MealAnalysisSetReady(ctx, w.Pool, dbsqlc.MealAnalysisSetReadyParams{ID: id, ItemsEnc: sealed}); err != nil {
		return fmt.Errorf("meal analysis %s: store items: %w", id, err)
	}
	return nil
}

// retryLater handles a failure another attempt may cure: on the last
// attempt the analysis fails; before it, the analysis stays pending with a
// reason and the job snoozes (open breaker, Retry-After) or returns the
// error for River's backoff.
func (w *MealAnalysisWorker) retryLater(ctx context.Context, job *river.Job[MealAnalysisArgs], cause error) error {
	id := job.Args.AnalysisID
	if job.Attempt >= job.MaxAttempts {
		err := mealQueries.MealAnalysisSetFailed(ctx, w.Pool, dbsqlc.MealAnalysisSetFailedParams{
			ID: id, FailureReason: "The meal detector could not be reached. Try again later.",
		})
		if err != nil {
			return fmt.Errorf("meal analysis %s: mark failed: %w", id, err)
		}
		return nil
	}
	if err := mealQueries.MealAnalysisSetPending(ctx, w.Pool, dbsqlc.MealAnalysisSetPendingParams{
		ID: id, FailureReason: "The meal detector is not answering right now; we will keep trying.",
	}); err != nil {
		return fmt.Errorf("meal analysis %s: record wait: %w", id, err)
	}
	if wait, ok := integrations.SnoozeFor(cause); ok {
		return river.JobSnooze(wait)
	}
	return fmt.Errorf("meal analysis %s: %w", id, cause)
}

