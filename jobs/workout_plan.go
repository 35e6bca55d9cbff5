package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
)

// WorkoutPlanCollection is the MongoDB collection caching workout plans
// (listed in CacheCollections, so they expire and are erased by userId).
const WorkoutPlanCollection = "workout_plans"

// WorkoutPlanCacheTTL is how long an identical request is answered from the
// cache without calling the planner.
const WorkoutPlanCacheTTL = 7 * 24 * time.Hour

// Reasons the member's app shows while a plan is not (freshly) ready.
const (
	WorkoutPlanReasonUnavailable = "The workout planner cannot be reached right now; we keep trying."
	WorkoutPlanReasonStale       = "The workout planner cannot be reached right now; this is your previous plan until a new one arrives."
	WorkoutPlanReasonInvalid     = "The workout planner answered with a plan that failed our safety checks; we keep trying."
	WorkoutPlanReasonFailed      = "We could not get a plan from the workout planner. Please ask again later."
	WorkoutPlanReasonFailedBad   = "The workout planner kept answering with plans that failed our safety checks. Please ask again later."
)

// Plan statuses, as stored in workout_plans.status.
const (
	WorkoutPlanPending = "pending"
	WorkoutPlanReady   = "ready"
	WorkoutPlanFailed  = "failed"
)

// WorkoutPlanArgs asks the planner for the plan of one workout_plans row.
// RequestWorkoutPlan inserts it in the transaction that inserts the row.
type WorkoutPlanArgs struct {
	PlanID uuid.UUID `json:"plan_id" river:"unique"`
}

// Kind is the stable job kind name stored with every job.
func (WorkoutPlanArgs) Kind() string { return "workout_plan" }

// InsertOpts: the ai queue, so a slow planner delays nothing else; one job
// per plan; enough attempts for River's backoff to span a long outage.
func (WorkoutPlanArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueAI, MaxAttempts: 8, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// WorkoutPlanBody is a plan as stored: in workout_plans.days (Days) and, as
// a whole, in the MongoDB cache.
type WorkoutPlanBody struct {
	Name string           `json:"name"`
	Days []WorkoutPlanDay `json:"days"`
}

// WorkoutPlanDay is one training day of a stored plan.
type WorkoutPlanDay struct {
	DayIndex  int                   `json:"day_index"`
	Title     string                `json:"title"`
	Exercises []WorkoutPlanExercise `json:"exercises"`
}

// WorkoutPlanExercise is one exercise of a stored plan's day; the name is
// the catalogue's when the plan was made.
type WorkoutPlanExercise struct {
	ExerciseID   string               `json:"exercise_id"`
	ExerciseName string               `json:"exercise_name"`
	Sets         []workoutplanner.Set `json:"sets"`
}

// WorkoutPlanParams is a plan request normalised, so that requests meaning
// the same thing share a cache key: equipment sorted, without repeats, with
// bodyweight (always assumed); notes trimmed. Goal and equipment use our
// names (workout_plans.goal, exercises.equipment).
type WorkoutPlanParams struct {
	Goal           string   `json:"goal"`
	DaysPerWeek    int      `json:"days_per_week"`
	SessionMinutes int      `json:"session_minutes"`
	Equipment      []string `json:"equipment"`
	Notes          string   `json:"notes"`
}

// Normalise returns p in the form its cache key is computed from.
func (p WorkoutPlanParams) Normalise() WorkoutPlanParams {
	eq := append([]string{"bodyweight"}, p.Equipment...)
	slices.Sort(eq)
	p.Equipment = slices.Compact(eq)
	p.Notes = strings.TrimSpace(p.Notes)
	return p
}

// WorkoutPlanCacheKey is the cache key of a normalised request of a member
// with this profile snapshot: the same request from a member whose profile
// changed is a different request. The member's id is part of it, so an
// entry belongs to one member only: erasing a member's entries (by userId)
// takes nothing another member relies on, and the stale fallback
// (aicache.Latest) finds only the member's own plans.
func WorkoutPlanCacheKey(userID uuid.UUID, p WorkoutPlanParams, profile workoutplanner.Profile) (string, error) {
	return aicache.Key("workout_plan/v1", userID, p.Normalise(), profile)
}

// workoutGoals maps workout_plans.goal to the planner's goals.
var workoutGoals = map[string]string{
	"lose_weight":       workoutplanner.GoalWeightLoss,
	"build_muscle":      workoutplanner.GoalHypertrophy,
	"increase_strength": workoutplanner.GoalStrength,
	"improve_endurance": workoutplanner.GoalEndurance,
	"general_fitness":   workoutplanner.GoalGeneralFitness,
}

// plannerEquipment maps our equipment to the planner's smaller vocabulary.
// The planner knows no bands, ellipticals, stair climbers or shoulder
// press machines: exercises needing them are left out of its catalogue.
// A lat pulldown is a cable station to it, and a rack or Smith machine a
// barbell.
var plannerEquipment = map[string]string{
	"bodyweight":   workoutplanner.EquipmentBodyweight,
	"dumbbell":     workoutplanner.EquipmentDumbbell,
	"barbell":      workoutplanner.EquipmentBarbell,
	"kettlebell":   workoutplanner.EquipmentKettlebell,
	"cable":        workoutplanner.EquipmentCable,
	"lat_pulldown": workoutplanner.EquipmentCable,
	"treadmill":    workoutplanner.EquipmentTreadmill,
	"bike":         workoutplanner.EquipmentBike,
	"rower":        workoutplanner.EquipmentRower,
	"chest_press":  workoutplanner.EquipmentChestPress,
	"leg_press":    workoutplanner.EquipmentLegPress,
	"smith":        workoutplanner.EquipmentBarbell,
	"rack":         workoutplanner.EquipmentBarbell,
}

// experienceByActivity guesses training experience from the profile's
// activity level, the nearest thing the profile records.
var experienceByActivity = map[string]string{
	"sedentary":   workoutplanner.ExperienceBeginner,
	"light":       workoutplanner.ExperienceBeginner,
	"moderate":    workoutplanner.ExperienceIntermediate,
	"active":      workoutplanner.ExperienceIntermediate,
	"very_active": workoutplanner.ExperienceAdvanced,
}

// Encrypted columns the profile snapshot reads (server/profile.go seals them).
const (
	encColDateOfBirth = "date_of_birth_enc"
	encColSex         = "sex_enc"
	encColHeightCM    = "height_cm_enc"
	encColWeightKg    = "weight_kg_enc"
)

// WorkoutPlanProfile is the snapshot of a member's profile the planner is
// sent: sex, age, height, latest weight and an experience level. Values the
// member has not given, or that fall outside the planner's ranges, are left
// out rather than failing the request.
func WorkoutPlanProfile(ctx context.Context, q dbsqlc.DBTX, keys *fieldcrypt.MasterKeys, userID uuid.UUID, now time.Time) (workoutplanner.Profile, error) {
	var out workoutplanner.Profile
	user, err := workoutQueries.UserGet(ctx, q, userID)
	if err != nil {
		return out, fmt.Errorf("read user %s: %w", userID, err)
	}
	prof, err := workoutQueries.ProfileGet(ctx, q, userID)
	if err != nil && !db.IsNotFound(err) {
		return out, fmt.Errorf("read profile: %w", err)
	}
	weight, err := workoutQueries.WorkoutLatestWeight(ctx, q, userID)
	if err != nil && !db.IsNotFound(err) {
		return out, fmt.Errorf("read latest weight: %w", err)
	}
	out.Experience = experienceByActivity[prof.ActivityLevel]
	if len(prof.DateOfBirthEnc)+len(prof.SexEnc)+len(prof.HeightCmEnc)+len(weight) == 0 {
		return out, nil
	}
	if keys == nil {
		return out, errors.New("workout plan: no master keys to read the profile with")
	}
	dk, err := keys.Unwrap(user.ID.String(), user.DataKey)
	if err != nil {
		return out, fmt.Errorf("unwrap data key of user %s: %w", userID, err)
	}
	open := func(column string, b []byte) (string, error) {
		if len(b) == 0 {
			return "", nil
		}
		v, err := dk.Open(column, b)
		if err != nil {
			return "", fmt.Errorf("decrypt %s of user %s: %w", column, userID, err)
		}
		return string(v), nil
	}
	sex, err := open(encColSex, prof.SexEnc)
	if err != nil {
		return out, err
	}
	switch sex {
	case "female", "male", "other":
		out.Sex = sex
	case "prefer_not_to_say":
		out.Sex = workoutplanner.SexUnspecified
	}
	dob, err := open(encColDateOfBirth, prof.DateOfBirthEnc)
	if err != nil {
		return out, err
	}
	if born, err := time.Parse(time.DateOnly, dob); err == nil {
		age := now.Year() - born.Year()
		if now.YearDay() < born.YearDay() {
			age--
		}
		if age >= 13 && age <= 100 {
			out.Age = age
		}
	}
	height, err := open(encColHeightCM, prof.HeightCmEnc)
	if err != nil {
		return out, err
	}
	if h, err := strconv.ParseFloat(height, 64); err == nil && h >= 100 && h <= 250 {
		out.HeightCm = h
	}
	w, err := open(encColWeightKg, weight)
	if err != nil {
		return out, err
	}
	if kg, err := strconv.ParseFloat(w, 64); err == nil && kg >= 30 && kg <= 300 {
		out.WeightKg = kg
	}
	return out, nil
}

// workoutHistoryDays is how far back the history sent to the planner goes.
const workoutHistoryDays = 28

// buildPlanRequest is the planner request for a plan row: the request, the
// member's profile snapshot and recent history, and our catalogue filtered
// to the equipment asked for. It returns the cache key too.
func buildPlanRequest(ctx context.Context, q dbsqlc.DBTX, keys *fieldcrypt.MasterKeys, row dbsqlc.WorkoutPlan, now time.Time) (workoutplanner.PlanRequest, map[string]string, string, error) {
	params := WorkoutPlanParams{
		Goal: row.Goal, DaysPerWeek: int(row.DaysPerWeek), SessionMinutes: int(row.SessionMinutes),
		Equipment: row.Equipment, Notes: row.Notes,
	}.Normalise()
	profile, err := WorkoutPlanProfile(ctx, q, keys, row.UserID, now)
	if err != nil {
		return workoutplanner.PlanRequest{}, nil, "", err
	}
	key, err := WorkoutPlanCacheKey(row.UserID, params, profile)
	if err != nil {
		return workoutplanner.PlanRequest{}, nil, "", err
	}
	req := workoutplanner.PlanRequest{
		Goal: workoutGoals[params.Goal], DaysPerWeek: params.DaysPerWeek, SessionMinutes: params.SessionMinutes,
		Notes: params.Notes, Profile: profile,
	}
	for _, e := range params.Equipment {
		if pe, ok := plannerEquipment[e]; ok && !slices.Contains(req.Equipment, pe) {
			req.Equipment = append(req.Equipment, pe)
		}
	}
	exercises, err := workoutQueries.ExercisesAll(ctx, q)
	if err != nil {
		return workoutplanner.PlanRequest{}, nil, "", fmt.Errorf("read catalogue: %w", err)
	}
	names := map[string]string{}
	for _, e := range exercises {
		pe, ok := plannerEquipment[e.Equipment]
		if !ok || !slices.Contains(params.Equipment, e.Equipment) {
			continue
		}
		req.Catalogue = append(req.Catalogue, workoutplanner.CatalogueExercise{
			ID: e.ID, Name: e.Name, Equipment: pe, MuscleGroups: e.MuscleGroups,
		})
		names[e.ID] = e.Name
	}
	history, err := workoutQueries.WorkoutHistory(ctx, q, dbsqlc.WorkoutHistoryParams{
		UserID: row.UserID, Since: now.AddDate(0, 0, -workoutHistoryDays), RowLimit: 200,
	})
	if err != nil {
		return workoutplanner.PlanRequest{}, nil, "", fmt.Errorf("read history: %w", err)
	}
	for _, h := range history {
		req.History = append(req.History, workoutplanner.HistoryEntry{
			ExerciseID: h.ExerciseID, Date: h.Day,
			Sets:         min(int(h.Sets), 100),
			BestReps:     min(int(h.BestReps), workoutplanner.MaxReps),
			BestWeightKg: min(h.BestWeightKg, workoutplanner.MaxWeightKg),
		})
	}
	return req, names, key, nil
}

// planBody converts the planner's validated plan into the stored form,
// naming each exercise from our catalogue.
func planBody(p *workoutplanner.Plan, names map[string]string) WorkoutPlanBody {
	out := WorkoutPlanBody{Name: p.Name, Days: make([]WorkoutPlanDay, len(p.Days))}
	for i, d := range p.Days {
		day := WorkoutPlanDay{DayIndex: d.DayIndex, Title: d.Title, Exercises: make([]WorkoutPlanExercise, len(d.Exercises))}
		for j, e := range d.Exercises {
			day.Exercises[j] = WorkoutPlanExercise{ExerciseID: e.ExerciseID, ExerciseName: names[e.ExerciseID], Sets: e.Sets}
		}
		out.Days[i] = day
	}
	return out
}

var workoutQueries = dbsqlc.New()

// WorkoutPlanWorker gets a plan from the workout planner: from the cache
// when an identical request (same normalised request, same profile
// snapshot) was answered within WorkoutPlanCacheTTL, else by calling the
// planner with the idempotency key "workout-plan-<plan id>", the same on
// every attempt. The answer is validated by the client (an absurd plan is
// rejected, logged and never stored), stored on the row and cached.
//
// While the planner fails, the row says why: it shows the member's most
// recent cached plan marked stale, or stays pending with a reason; the job
// returns the error so River retries it with its backoff, or snoozes it
// while the breaker is open or the planner asked to wait. After the last
// attempt the row is failed with a reason the app can show.
//
// It is idempotent: a row that is ready (not stale), failed or gone makes
// the job a no-op.
type WorkoutPlanWorker struct {
	river.WorkerDefaults[WorkoutPlanArgs]
	Pool       *pgxpool.Pool
	Mongo      *mongo.Database
	Planner    *workoutplanner.Client
	MasterKeys *fieldcrypt.MasterKeys
	// Logger records rejected plans; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CacheTTL overrides WorkoutPlanCacheTTL when positive.
	CacheTTL time.Duration
}

// Timeout bounds one attempt: the client's own retries and timeouts fit well within it.
func (w *WorkoutPlanWorker) Timeout(*river.Job[WorkoutPlanArgs]) time.Duration {
	return 2 * time.Minute
}

// Work gets the plan or records why it could not.
func (w *WorkoutPlanWorker) Work(ctx context.Context, job *river.Job[WorkoutPlanArgs]) error {
	if w.Pool == nil || w.Mongo == nil || w.Planner == nil {
		return errors.New("workout plan: pool, MongoDB and the workout planner client are required")
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	logger := w.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ttl := WorkoutPlanCacheTTL
	if w.CacheTTL > 0 {
		ttl = w.CacheTTL
	}
	row, err := workoutQueries.WorkoutPlanGet(ctx, w.Pool, job.Args.PlanID)
	if db.IsNotFound(err) {
		return nil // erased with its member
	}
	if err != nil {
		return fmt.Errorf("read plan: %w", err)
	}
	if row.Status == WorkoutPlanFailed || (row.Status == WorkoutPlanReady && !row.Stale) {
		return nil
	}
	req, names, key, err := buildPlanRequest(ctx, w.Pool, w.MasterKeys, row, now())
	if err != nil {
		return err
	}
	cache := aicache.New(w.Mongo, WorkoutPlanCollection)
	cache.Now = now
	if entry, ok, err := cache.Get(ctx, key); err != nil {
		logger.WarnContext(ctx, "workout plan cache unreadable; asking the planner", "plan_id", row.ID, "error", err)
	} else if ok {
		var body WorkoutPlanBody
		if err := entry.Decode(&body); err == nil {
			return w.store(ctx, row.ID, body, true)
		}
		logger.WarnContext(ctx, "undecodable cached workout plan; asking the planner", "plan_id", row.ID)
	}

	plan, err := w.Planner.CreatePlan(ctx, "workout-plan-"+row.ID.String(), req)
	if err != nil {
		return w.failed(ctx, logger, job, row, cache, err)
	}
	body := planBody(plan, names)
	if _, err := cache.Put(ctx, key, row.UserID.String(), body, ttl); err != nil {
		// The plan is safe in PostgreSQL; only later identical requests
		// miss the cache.
		logger.WarnContext(ctx, "could not cache workout plan", "plan_id", row.ID, "error", err)
	}
	return w.store(ctx, row.ID, body, false)
}

// store makes the row ready with body.
func (w *WorkoutPlanWorker) store(ctx context.Context, id uuid.UUID, body WorkoutPlanBody, fromCache bool) error {
	days, err := encodeDays(body.Days)
	if err != nil {
		return err
	}
	if _, err := workoutQueries.WorkoutPlanSetReady(ctx, w.Pool, dbsqlc.WorkoutPlanSetReadyParams{
		ID: id, Name: body.Name, Days: days, FromCache: fromCache,
	}); err != nil && !db.IsNotFound(err) {
		return fmt.Errorf("store plan: %w", err)
	}
	return nil
}

// failed records why the planner gave no usable plan and tells River what
// to do next: snooze, retry, or (after the last attempt) nothing more.
func (w *WorkoutPlanWorker) failed(ctx context.Context, logger *slog.Logger, job *river.Job[WorkoutPlanArgs], row dbsqlc.WorkoutPlan, cache *aicache.Cache, callErr error) error {
	invalid := errors.Is(callErr, workoutplanner.ErrInvalidResponse)
	if invalid {
		logger.ErrorContext(ctx, "rejected an invalid plan from the workout planner",
			"plan_id", row.ID, "attempt", job.Attempt, "error", callErr)
	}
	if job.Attempt >= job.MaxAttempts {
		reason := WorkoutPlanReasonFailed
		if invalid {
			reason = WorkoutPlanReasonFailedBad
		}
		if err := workoutQueries.WorkoutPlanFail(ctx, w.Pool, dbsqlc.WorkoutPlanFailParams{ID: row.ID, FailureReason: reason}); err != nil {
			return fmt.Errorf("mark plan failed: %w", err)
		}
		logger.WarnContext(ctx, "gave up on a workout plan", "plan_id", row.ID, "error", callErr)
		return nil
	}
	reason := WorkoutPlanReasonUnavailable
	if invalid {
		reason = WorkoutPlanReasonInvalid
	}
	if err := w.fallBack(ctx, row, cache, reason); err != nil {
		return err
	}
	if wait, ok := integrations.SnoozeFor(callErr); ok {
		return river.JobSnooze(wait)
	}
	return fmt.Errorf("workout plan %s: %w", row.ID, callErr)
}

// fallBack shows the member's most recent cached plan, marked stale, or
// leaves the row pending with the reason.
func (w *WorkoutPlanWorker) fallBack(ctx context.Context, row dbsqlc.WorkoutPlan, cache *aicache.Cache, reason string) error {
	entry, ok, err := cache.Latest(ctx, row.UserID.String())
	if err != nil {
		ok = false // the reason alone, then
	}
	if ok {
		var body WorkoutPlanBody
		if err := entry.Decode(&body); err == nil {
			days, err := encodeDays(body.Days)
			if err != nil {
				return err
			}
			if err := workoutQueries.WorkoutPlanSetStale(ctx, w.Pool, dbsqlc.WorkoutPlanSetStaleParams{
				ID: row.ID, FailureReason: WorkoutPlanReasonStale, Name: body.Name, Days: days,
			}); err != nil {
				return fmt.Errorf("show stale plan: %w", err)
			}
			return nil
		}
	}
	if err := workoutQueries.WorkoutPlanSetPendingReason(ctx, w.Pool, dbsqlc.WorkoutPlanSetPendingReasonParams{ID: row.ID, FailureReason: reason}); err != nil {
		return fmt.Errorf("record pending reason: %w", err)
	}
	return nil
}

// encodeDays is the JSON stored in workout_plans.days.
func encodeDays(days []WorkoutPlanDay) ([]byte, error) {
	if days == nil {
		days = []WorkoutPlanDay{}
	}
	b, err := json.Marshal(days)
	if err != nil {
		return nil, fmt.Errorf("encode plan days: %w", err)
	}
	return b, nil
}

// DecodeWorkoutPlanDays reads workout_plans.days; NULL is no days.
func DecodeWorkoutPlanDays(b []byte) ([]WorkoutPlanDay, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var days []WorkoutPlanDay
	if err := json.Unmarshal(b, &days); err != nil {
		return nil, fmt.Errorf("decode plan days: %w", err)
	}
	return days, nil
}

// WorkoutPlanFromCache looks up a cached plan for a request; the server's
// RequestWorkoutPlan uses it to answer an identical request at once.
// A cache that cannot be read is a miss: the job will ask again.
func WorkoutPlanFromCache(ctx context.Context, mdb *mongo.Database, key string) (WorkoutPlanBody, bool) {
	if mdb == nil {
		return WorkoutPlanBody{}, false
	}
	entry, ok, err := aicache.New(mdb, WorkoutPlanCollection).Get(ctx, key)
	if err != nil || !ok {
		return WorkoutPlanBody{}, false
	}
	var body WorkoutPlanBody
	if err := entry.Decode(&body); err != nil {
		return WorkoutPlanBody{}, false
	}
	return body, true
}
