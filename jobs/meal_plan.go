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
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

// MealPlanCollection is the aicache collection of meal plans (listed in
// CacheCollections).
const MealPlanCollection = "meal_plans"

// MealPlanCacheTTL is how long an identical request is answered from the
// cache: a week, after which a member asking again gets a fresh menu.
const MealPlanCacheTTL = 7 * 24 * time.Hour

// MealPlanMaxAttempts bounds the planner calls of one request.
const MealPlanMaxAttempts = 5

// MealPlanArgs asks the meal planner for a plan. RequestMealPlan inserts it
// in the transaction that creates the request row; user_id is top level so
// that erasing the member deletes a waiting job.
type MealPlanArgs struct {
	RequestID uuid.UUID `json:"request_id" river:"unique"`
	UserID    uuid.UUID `json:"user_id"`
}

// Kind is the stable job kind name stored with every job.
func (MealPlanArgs) Kind() string { return "meal_plan" }

// InsertOpts: one job per request, on the queue of outside calls.
func (MealPlanArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueAI, MaxAttempts: MealPlanMaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// MealPlanIdempotencyKey is the key every attempt of one request sends.
func MealPlanIdempotencyKey(requestID uuid.UUID) string { return "meal-plan-" + requestID.String() }

// MealPlanRequestOf is the planner request a stored request row stands for.
func MealPlanRequestOf(r dbsqlc.MealPlanRequest) mealplanner.MealPlanRequest {
	return mealplanner.MealPlanRequest{
		Days: int(r.Days), KcalTarget: r.KcalTarget,
		ProteinG: r.ProteinG, CarbsG: r.CarbsG, FatG: r.FatG,
		Diet: r.Diet, Exclusions: r.Exclusions,
	}
}

// MealPlanWorker asks the planner for the plan of a pending request,
// validates it, caches it and stores it on the request. When the planner
// cannot be reached, the member's most recent cached plan is put on the
// request marked stale while the job retries; after the last attempt the
// request fails with a reason (keeping the stale plan to look at). It is
// idempotent: a request no longer pending, or gone with its member, makes it
// a no-op, and every attempt sends the same idempotency key.
type MealPlanWorker struct {
	river.WorkerDefaults[MealPlanArgs]
	Pool    *pgxpool.Pool
	Mongo   *mongo.Database
	Planner *mealplanner.Client
	// Logger records rejected plans; nil means slog.Default().
	Logger *slog.Logger
}

// Timeout covers the planner's retries within one call.
func (w *MealPlanWorker) Timeout(*river.Job[MealPlanArgs]) time.Duration { return 2 * time.Minute }

// Work runs one attempt.
func (w *MealPlanWorker) Work(ctx context.Context, job *river.Job[MealPlanArgs]) error {
	if w.Pool == nil || w.Mongo == nil || w.Planner == nil {
		return errors.New("meal plan: pool, mongo and planner are required")
	}
	logger := w.Logger
	if logger == nil {
		logger = slog.Default()
	}
	id := job.Args.RequestID
	r, err := mealQueries.MealPlanRequestGetForJob(ctx, w.Pool, id)
	if db.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("meal plan %s: read: %w", id, err)
	}
	if r.Status != "pending" {
		return nil
	}
	fail := func(reason string) error {
		if err := mealQueries.MealPlanRequestSetFailed(ctx, w.Pool, dbsqlc.MealPlanRequestSetFailedParams{ID: id, FailureReason: reason}); err != nil {
			return fmt.Errorf("meal plan %s: mark failed: %w", id, err)
		}
		return nil
	}
	cache := aicache.New(w.Mongo, MealPlanCollection)

	plan, err := w.Planner.CreatePlan(ctx, MealPlanIdempotencyKey(id), MealPlanRequestOf(r))
	if err != nil {
		if errors.Is(err, mealplanner.ErrInvalidResponse) {
			logger.WarnContext(ctx, "meal planner answer rejected", "meal_plan_request_id", id, "err", err)
			return fail("The meal planner gave a plan that does not meet your request, so it was discarded. Ask again.")
		}
		var ie *integrations.Error
		if errors.Is(err, mealplanner.ErrInvalidRequest) || (errors.As(err, &ie) && !ie.Retryable) {
			logger.ErrorContext(ctx, "meal planner refused the request", "meal_plan_request_id", id, "err", err)
			return fail("The meal planner could not make a plan for this request.")
		}
		return w.retryLater(ctx, job, cache, r, err)
	}

	body, err := json.Marshal(plan)
	if err != nil {
		return fmt.Errorf("meal plan %s: encode: %w", id, err)
	}
	// The cache is an optimisation: a plan that could not be cached is
	// still the member's answer.
	if _, err := cache.Put(ctx, r.CacheKey, r.UserID.String(), plan, MealPlanCacheTTL); err != nil {
		logger.WarnContext(ctx, "meal plan not cached", "meal_plan_request_id", id, "err", err)
	}
	if err := mealQueries.MealPlanRequestSetReady(ctx, w.Pool, dbsqlc.MealPlanRequestSetReadyParams{ID: id, Plan: body}); err != nil {
		return fmt.Errorf("meal plan %s: store: %w", id, err)
	}
	return nil
}

// retryLater handles a failure another attempt may cure (see
// MealAnalysisWorker.retryLater), serving the member's latest cached plan as
// stale meanwhile.
func (w *MealPlanWorker) retryLater(ctx context.Context, job *river.Job[MealPlanArgs], cache *aicache.Cache, r dbsqlc.MealPlanRequest, cause error) error {
	id := r.ID
	if job.Attempt >= job.MaxAttempts {
		err := mealQueries.MealPlanRequestSetFailed(ctx, w.Pool, dbsqlc.MealPlanRequestSetFailedParams{
			ID: id, FailureReason: "The meal planner could not be reached. Try again later.",
		})
		if err != nil {
			return fmt.Errorf("meal plan %s: mark failed: %w", id, err)
		}
		return nil
	}
	waiting := dbsqlc.MealPlanRequestSetWaitingParams{
		ID: id, FailureReason: "The meal planner is not answering right now; we will keep trying.",
	}
	prev, found, err := cache.Latest(ctx, r.UserID.String())
	if err != nil {
		return fmt.Errorf("meal plan %s: stale fallback: %w", id, err)
	}
	if found {
		waiting.Stale, waiting.Plan = true, prev.Body
		waiting.FailureReason = "The meal planner is not answering right now; this is your most recent plan while we keep trying."
	}
	if err := mealQueries.MealPlanRequestSetWaiting(ctx, w.Pool, waiting); err != nil {
		return fmt.Errorf("meal plan %s: record wait: %w", id, err)
	}
	if wait, ok := integrations.SnoozeFor(cause); ok {
		return river.JobSnooze(wait)
	}
	return fmt.Errorf("meal plan %s: %w", id, cause)
}
