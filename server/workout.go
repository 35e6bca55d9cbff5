package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/pagination"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/jobs"
)

// List names that tie page tokens to their lists.
const (
	exerciseListName    = "exercises"
	workoutPlanListName = "workout_plans"
	workoutListName     = "workouts"
)

// cacheLookupTimeout bounds RequestWorkoutPlan's look into the plan cache:
// MongoDB is ours, but a slow cache must not hold the member's request, so
// a lookup that takes longer counts as a miss and the job asks the planner.
const cacheLookupTimeout = 2 * time.Second

// Bounds of ListWorkouts when the request leaves one open.
var (
	timeRangeStart = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	timeRangeEnd   = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// workoutService serves nxg.v1.WorkoutService: the exercise catalogue,
// workout plans from the outside planner (asked for here, made by
// jobs.WorkoutPlanWorker on the ai queue, never while a request waits),
// and the workouts members do, logged from the app or by linked machines
// (internal/floor.LandMachineSets) and watched live by both.
//
// RequestWorkoutPlan answers at once: ready from the plan cache when an
// identical request of the member (same normalised request and profile snapshot) was
// answered within the cache's expiry, without calling the planner or
// queueing a job; otherwise pending, with the job queued in the same
// transaction as the row. It does not show an earlier plan as stale at
// once: the job does that only when the planner fails, so a member whose
// planner is healthy never sees an old plan flash by.
type workoutService struct {
	nxgv1connect.UnimplementedWorkoutServiceHandler
	pool    *pgxpool.Pool
	id      Identity
	floor   Floor
	guard   *streamGuard
	mongo   *mongo.Database
	logger  *slog.Logger
	queries *dbsqlc.Queries
	now     func() time.Time
}

// NewWorkoutService returns the WorkoutService handler. mdb may be nil:
// every request then misses the plan cache.
func NewWorkoutService(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, mdb *mongo.Database, logger *slog.Logger) *workoutService {
	return &workoutService{
		pool: pool, id: id, floor: fl, guard: guard, mongo: mdb, logger: logger,
		queries: dbsqlc.New(), now: time.Now,
	}
}

// memberCaller returns the signed-in member: workouts and plans are members'.
func memberCaller(ctx context.Context) (auth.Principal, error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return p, err
	}
	if !p.IsMember() {
		return p, apperr.PermissionDenied("only members have workouts and workout plans")
	}
	return p, nil
}

// protoEnumName is a proto enum value's name in lower case without its prefix,
// as the database stores it: EQUIPMENT_LAT_PULLDOWN is "lat_pulldown".
func protoEnumName(full, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(full, prefix))
}

// protoEnumNumber is the inverse of protoEnumName; 0 (unspecified) for unknown names.
func protoEnumNumber(values map[string]int32, prefix, name string) int32 {
	return values[prefix+strings.ToUpper(name)]
}

func exerciseProto(e dbsqlc.Exercise) *nxgv1.Exercise {
	out := &nxgv1.Exercise{
		Id:        e.ID,
		Name:      e.Name,
		Equipment: nxgv1.Equipment(protoEnumNumber(nxgv1.Equipment_value, "EQUIPMENT_", e.Equipment)),
		Cardio:    e.Cardio,
	}
	for _, m := range e.MuscleGroups {
		out.MuscleGroups = append(out.MuscleGroups, nxgv1.MuscleGroup(protoEnumNumber(nxgv1.MuscleGroup_value, "MUSCLE_GROUP_", m)))
	}
	for _, m := range e.MachineTypes {
		out.MachineTypes = append(out.MachineTypes, nxgv1.MachineType(protoEnumNumber(nxgv1.MachineType_value, "MACHINE_TYPE_", m)))
	}
	return out
}

// exerciseCursor is the keyset position after the last exercise of a page.
type exerciseCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

func (s *workoutService) ListExercises(ctx context.Context, req *connect.Request[nxgv1.ListExercisesRequest]) (*connect.Response[nxgv1.ListExercisesResponse], error) {
	if _, err := auth.MustPrincipal(ctx); err != nil {
		return nil, err
	}
	msg := req.Msg
	var cursor exerciseCursor
	after, err := pagination.Decode(exerciseListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.SizeWithin(msg.GetPageSize(), 100, 500)
	params := dbsqlc.ExercisesListParams{RowLimit: size + 1}
	if g := msg.GetMuscleGroup(); g != nxgv1.MuscleGroup_MUSCLE_GROUP_UNSPECIFIED {
		params.MuscleGroup = pgtype.Text{String: protoEnumName(g.String(), "MUSCLE_GROUP_"), Valid: true}
	}
	if e := msg.GetEquipment(); e != nxgv1.Equipment_EQUIPMENT_UNSPECIFIED {
		params.Equipment = pgtype.Text{String: protoEnumName(e.String(), "EQUIPMENT_"), Valid: true}
	}
	if after {
		params.AfterName = pgtype.Text{String: cursor.Name, Valid: true}
		params.AfterID = pgtype.Text{String: cursor.ID, Valid: true}
	}
	rows, err := s.queries.ExercisesList(ctx, s.pool, params)
	if err != nil {
		return nil, fmt.Errorf("list exercises: %w", err)
	}
	resp := &nxgv1.ListExercisesResponse{}
	rows, resp.NextPageToken = pagination.Page(exerciseListName, rows, size, func(last dbsqlc.Exercise) any {
		return exerciseCursor{Name: last.Name, ID: last.ID}
	})
	resp.Exercises = make([]*nxgv1.Exercise, len(rows))
	for i, r := range rows {
		resp.Exercises[i] = exerciseProto(r)
	}
	return connect.NewResponse(resp), nil
}

// planStatuses maps workout_plans.status to the API's enum.
var planStatuses = map[string]nxgv1.PlanStatus{
	jobs.WorkoutPlanPending: nxgv1.PlanStatus_PLAN_STATUS_PENDING,
	jobs.WorkoutPlanReady:   nxgv1.PlanStatus_PLAN_STATUS_READY,
	jobs.WorkoutPlanFailed:  nxgv1.PlanStatus_PLAN_STATUS_FAILED,
}

func (s *workoutService) planProto(p dbsqlc.WorkoutPlan) (*nxgv1.WorkoutPlan, error) {
	out := &nxgv1.WorkoutPlan{
		Id:             p.ID.String(),
		PlanRequestId:  p.ID.String(),
		Status:         planStatuses[p.Status],
		FailureReason:  p.FailureReason,
		Stale:          p.Stale,
		Name:           p.Name,
		Goal:           nxgv1.FitnessGoal(protoEnumNumber(nxgv1.FitnessGoal_value, "FITNESS_GOAL_", p.Goal)),
		DaysPerWeek:    p.DaysPerWeek,
		SessionMinutes: p.SessionMinutes,
		Active:         p.Active,
		RequestedAt:    timestamppb.New(p.RequestedAt),
		FromCache:      p.FromCache,
	}
	if p.ReadyAt.Valid {
		out.ReadyAt = timestamppb.New(p.ReadyAt.Time)
	}
	days, err := jobs.DecodeWorkoutPlanDays(p.Days)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", p.ID, err)
	}
	for _, d := range days {
		day := &nxgv1.PlanDay{DayIndex: int32(d.DayIndex), Title: d.Title}
		for _, e := range d.Exercises {
			pe := &nxgv1.PlanExercise{ExerciseId: e.ExerciseID, ExerciseName: e.ExerciseName}
			for _, set := range e.Sets {
				pe.Sets = append(pe.Sets, &nxgv1.PrescribedSet{
					Reps: int32(set.Reps), WeightKg: set.WeightKg, DurationSeconds: int32(set.DurationSeconds),
					DistanceM: set.DistanceM, RestSeconds: int32(set.RestSeconds),
				})
			}
			day.Exercises = append(day.Exercises, pe)
		}
		out.Days = append(out.Days, day)
	}
	return out, nil
}

func (s *workoutService) RequestWorkoutPlan(ctx context.Context, req *connect.Request[nxgv1.RequestWorkoutPlanRequest]) (*connect.Response[nxgv1.RequestWorkoutPlanResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	if msg.GetGoal() == nxgv1.FitnessGoal_FITNESS_GOAL_UNSPECIFIED {
		return nil, apperr.InvalidArgument("goal", "is required")
	}
	params := jobs.WorkoutPlanParams{
		Goal:           protoEnumName(msg.GetGoal().String(), "FITNESS_GOAL_"),
		DaysPerWeek:    int(msg.GetDaysPerWeek()),
		SessionMinutes: int(msg.GetSessionMinutes()),
		Notes:          msg.GetNotes(),
	}
	for _, e := range msg.GetEquipment() {
		if e == nxgv1.Equipment_EQUIPMENT_UNSPECIFIED {
			return nil, apperr.InvalidArgument("equipment", "must not contain EQUIPMENT_UNSPECIFIED")
		}
		params.Equipment = append(params.Equipment, protoEnumName(e.String(), "EQUIPMENT_"))
	}
	params = params.Normalise()
	clientID := pgtype.Text{String: msg.GetClientRequestId(), Valid: msg.GetClientRequestId() != ""}

	// A retry of a request already made returns that request, whatever
	// became of it, without looking at the cache again.
	if clientID.Valid {
		prev, err := s.queries.WorkoutPlanByClientRequest(ctx, s.pool, dbsqlc.WorkoutPlanByClientRequestParams{UserID: p.UserID, ClientRequestID: clientID})
		if err == nil {
			return s.planResponse(prev)
		}
		if !db.IsNotFound(err) {
			return nil, fmt.Errorf("read plan request: %w", err)
		}
	}

	profile, err := jobs.WorkoutPlanProfile(ctx, s.pool, s.id.MasterKeys, p.UserID, s.now())
	if err != nil {
		return nil, err
	}
	key, err := jobs.WorkoutPlanCacheKey(p.UserID, params, profile)
	if err != nil {
		return nil, err
	}
	lookupCtx, cancel := context.WithTimeout(ctx, cacheLookupTimeout)
	body, hit := jobs.WorkoutPlanFromCache(lookupCtx, s.mongo, key)
	cancel()

	row, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.WorkoutPlan, error) {
		ins := dbsqlc.WorkoutPlanInsertParams{
			UserID: p.UserID, ClientRequestID: clientID, Goal: params.Goal,
			DaysPerWeek: int32(params.DaysPerWeek), SessionMinutes: int32(params.SessionMinutes),
			Equipment: params.Equipment, Notes: params.Notes, Status: jobs.WorkoutPlanPending, CacheKey: key,
		}
		if hit {
			days, err := json.Marshal(body.Days)
			if err != nil {
				return dbsqlc.WorkoutPlan{}, fmt.Errorf("encode cached plan: %w", err)
			}
			ins.Status, ins.FromCache, ins.Name, ins.Days = jobs.WorkoutPlanReady, true, body.Name, days
			ins.ReadyAt = pgtype.Timestamptz{Time: s.now(), Valid: true}
		}
		row, err := s.queries.WorkoutPlanInsert(ctx, tx, ins)
		if db.IsNotFound(err) && clientID.Valid {
			// A concurrent retry with the same client_request_id won.
			return s.queries.WorkoutPlanByClientRequest(ctx, tx, dbsqlc.WorkoutPlanByClientRequestParams{UserID: p.UserID, ClientRequestID: clientID})
		}
		if err != nil {
			return dbsqlc.WorkoutPlan{}, fmt.Errorf("insert plan request: %w", err)
		}
		if !hit {
			// The job commits with the row: a pending plan always has the
			// job that will settle it.
			if _, err := s.id.River.InsertTx(ctx, tx, jobs.WorkoutPlanArgs{PlanID: row.ID}, nil); err != nil {
				return dbsqlc.WorkoutPlan{}, fmt.Errorf("queue workout plan job: %w", err)
			}
		}
		return row, nil
	})
	if err != nil {
		return nil, err
	}
	return s.planResponse(row)
}

func (s *workoutService) planResponse(row dbsqlc.WorkoutPlan) (*connect.Response[nxgv1.RequestWorkoutPlanResponse], error) {
	plan, err := s.planProto(row)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.RequestWorkoutPlanResponse{PlanRequestId: plan.Id, Plan: plan}), nil
}

// ownPlan reads a plan of userID's; other members' plans are not found.
func (s *workoutService) ownPlan(ctx context.Context, q dbsqlc.DBTX, userID uuid.UUID, field, id string) (dbsqlc.WorkoutPlan, error) {
	planID, err := uuid.Parse(id)
	if err != nil {
		return dbsqlc.WorkoutPlan{}, apperr.InvalidArgument(field, "must be a UUID")
	}
	row, err := s.queries.WorkoutPlanGet(ctx, q, planID)
	if db.IsNotFound(err) || (err == nil && row.UserID != userID) {
		return dbsqlc.WorkoutPlan{}, apperr.NotFound("workout plan", id)
	}
	if err != nil {
		return dbsqlc.WorkoutPlan{}, fmt.Errorf("read plan: %w", err)
	}
	return row, nil
}

func (s *workoutService) GetWorkoutPlan(ctx context.Context, req *connect.Request[nxgv1.GetWorkoutPlanRequest]) (*connect.Response[nxgv1.GetWorkoutPlanResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	// A plan's id is its request's id, so either names the same row.
	field, id := "plan_request_id", req.Msg.GetPlanRequestId()
	if pid, ok := req.Msg.GetRef().(*nxgv1.GetWorkoutPlanRequest_PlanId); ok {
		field, id = "plan_id", pid.PlanId
	}
	if id == "" {
		return nil, apperr.InvalidArgument("ref", "one of plan_request_id or plan_id is required")
	}
	row, err := s.ownPlan(ctx, s.pool, p.UserID, field, id)
	if err != nil {
		return nil, err
	}
	plan, err := s.planProto(row)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetWorkoutPlanResponse{Plan: plan}), nil
}

func (s *workoutService) ListWorkoutPlans(ctx context.Context, req *connect.Request[nxgv1.ListWorkoutPlansRequest]) (*connect.Response[nxgv1.ListWorkoutPlansResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	var cursor pagination.TimeCursor
	after, err := pagination.Decode(workoutPlanListName, req.Msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.SizeWithin(req.Msg.GetPageSize(), 20, 100)
	params := dbsqlc.WorkoutPlanListParams{UserID: p.UserID, RowLimit: size + 1}
	if after {
		params.BeforeTime = pgtype.Timestamptz{Time: cursor.Time, Valid: true}
		params.BeforeID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	rows, err := s.queries.WorkoutPlanList(ctx, s.pool, params)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	resp := &nxgv1.ListWorkoutPlansResponse{}
	rows, resp.NextPageToken = pagination.Page(workoutPlanListName, rows, size, func(last dbsqlc.WorkoutPlan) any {
		return pagination.TimeCursor{Time: last.RequestedAt, ID: last.ID}
	})
	for _, r := range rows {
		plan, err := s.planProto(r)
		if err != nil {
			return nil, err
		}
		resp.Plans = append(resp.Plans, plan)
	}
	return connect.NewResponse(resp), nil
}

// requireFollowable refuses a plan that has no plan of its own to follow:
// pending, failed, or stale (a stale row shows an earlier plan, which the
// member follows by that plan's own id).
func requireFollowable(row dbsqlc.WorkoutPlan, field string) error {
	if row.Status != jobs.WorkoutPlanReady || row.Stale {
		return &apperr.Error{Code: apperr.CodeFailedPrecondition, Field: field,
			Message: fmt.Sprintf("plan %s is not ready (status %s, stale %t); only a ready plan can be followed", row.ID, row.Status, row.Stale)}
	}
	return nil
}

func (s *workoutService) SetActivePlan(ctx context.Context, req *connect.Request[nxgv1.SetActivePlanRequest]) (*connect.Response[nxgv1.SetActivePlanResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	row, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.WorkoutPlan, error) {
		row, err := s.ownPlan(ctx, tx, p.UserID, "plan_id", req.Msg.GetPlanId())
		if err != nil {
			return row, err
		}
		if err := requireFollowable(row, "plan_id"); err != nil {
			return row, err
		}
		if row.Active {
			return row, nil
		}
		// Two statements: one would briefly hold two active plans, which
		// the unique index refuses.
		if err := s.queries.WorkoutPlanClearActive(ctx, tx, p.UserID); err != nil {
			return row, fmt.Errorf("clear active plan: %w", err)
		}
		return s.queries.WorkoutPlanSetActive(ctx, tx, row.ID)
	})
	if err != nil {
		return nil, err
	}
	plan, err := s.planProto(row)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.SetActivePlanResponse{Plan: plan}), nil
}

// setSources maps workout_sets.source to the API's enum.
var setSources = map[string]nxgv1.SetSource{
	"app":     nxgv1.SetSource_SET_SOURCE_APP,
	"machine": nxgv1.SetSource_SET_SOURCE_MACHINE,
}

func workoutSetProto(s dbsqlc.WorkoutSet) *nxgv1.WorkoutSet {
	out := &nxgv1.WorkoutSet{
		Id:              s.ID.String(),
		ExerciseId:      s.ExerciseID,
		Reps:            s.Reps,
		WeightKg:        s.WeightKg,
		DurationSeconds: s.DurationSeconds,
		DistanceM:       s.DistanceM,
		Rpe:             s.Rpe,
		ClientSetId:     s.ClientSetID,
		Source:          setSources[s.Source],
		LoggedAt:        timestamppb.New(s.LoggedAt),
		Calories:        s.Calories,
	}
	if s.MachineID.Valid {
		out.MachineId = s.MachineID.UUID.String()
	}
	return out
}

func workoutProto(w dbsqlc.Workout, setCount int32, volume float64) *nxgv1.Workout {
	out := &nxgv1.Workout{
		Id:        w.ID.String(),
		Status:    nxgv1.WorkoutStatus_WORKOUT_STATUS_OPEN,
		DayIndex:  w.DayIndex,
		StartedAt: timestamppb.New(w.StartedAt),
		SetCount:  setCount,
		VolumeKg:  volume,
	}
	if w.PlanID.Valid {
		out.PlanId = w.PlanID.UUID.String()
	}
	if w.CompletedAt.Valid {
		out.Status = nxgv1.WorkoutStatus_WORKOUT_STATUS_COMPLETED
		out.CompletedAt = timestamppb.New(w.CompletedAt.Time)
	}
	return out
}

// fullWorkout reads a workout with its sets.
func (s *workoutService) fullWorkout(ctx context.Context, q dbsqlc.DBTX, w dbsqlc.Workout) (*nxgv1.Workout, error) {
	sets, err := s.queries.WorkoutSetsOfWorkout(ctx, q, w.ID)
	if err != nil {
		return nil, fmt.Errorf("read sets of workout %s: %w", w.ID, err)
	}
	var volume float64
	out := workoutProto(w, int32(len(sets)), 0)
	for _, set := range sets {
		volume += float64(set.Reps) * set.WeightKg
		out.Sets = append(out.Sets, workoutSetProto(set))
	}
	out.VolumeKg = volume
	return out, nil
}

// ownWorkout reads a workout of userID's; other members' are not found.
func (s *workoutService) ownWorkout(ctx context.Context, q dbsqlc.DBTX, userID uuid.UUID, id string, forShare bool) (dbsqlc.Workout, error) {
	workoutID, err := uuid.Parse(id)
	if err != nil {
		return dbsqlc.Workout{}, apperr.InvalidArgument("workout_id", "must be a UUID")
	}
	read := s.queries.WorkoutGet
	if forShare {
		read = s.queries.WorkoutGetForShare
	}
	w, err := read(ctx, q, workoutID)
	if db.IsNotFound(err) || (err == nil && w.UserID != userID) {
		return dbsqlc.Workout{}, apperr.NotFound("workout", id)
	}
	if err != nil {
		return dbsqlc.Workout{}, fmt.Errorf("read workout: %w", err)
	}
	return w, nil
}

func (s *workoutService) StartWorkout(ctx context.Context, req *connect.Request[nxgv1.StartWorkoutRequest]) (*connect.Response[nxgv1.StartWorkoutResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	if msg.GetPlanId() == "" && msg.GetDayIndex() != 0 {
		return nil, apperr.InvalidArgument("day_index", "is only valid with plan_id")
	}
	out, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.Workout, error) {
		ins := dbsqlc.WorkoutInsertParams{UserID: p.UserID, DayIndex: msg.GetDayIndex()}
		if msg.GetPlanId() != "" {
			plan, err := s.ownPlan(ctx, tx, p.UserID, "plan_id", msg.GetPlanId())
			if err != nil {
				return nil, err
			}
			if err := requireFollowable(plan, "plan_id"); err != nil {
				return nil, err
			}
			if msg.GetDayIndex() >= plan.DaysPerWeek {
				return nil, apperr.InvalidArgument("day_index", "must be below the plan's days_per_week (%d)", plan.DaysPerWeek)
			}
			ins.PlanID = uuid.NullUUID{UUID: plan.ID, Valid: true}
		}
		w, err := s.queries.WorkoutInsert(ctx, tx, ins)
		if db.IsNotFound(err) {
			// One is open already (started here before, or by a machine):
			// starting again returns it.
			if w, err = s.queries.WorkoutOpen(ctx, tx, p.UserID); err != nil {
				return nil, fmt.Errorf("read open workout: %w", err)
			}
			return s.fullWorkout(ctx, tx, w)
		}
		if err != nil {
			return nil, fmt.Errorf("insert workout: %w", err)
		}
		if err := floor.NotifyWorkout(ctx, tx, floor.WorkoutEvent{User: p.UserID, Workout: w.ID, Kind: floor.WorkoutStarted, ID: w.ID}); err != nil {
			return nil, err
		}
		return workoutProto(w, 0, 0), nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.StartWorkoutResponse{Workout: out}), nil
}

// LogSet records a set once per client_set_id within the workout. A retry
// with the same client_set_id returns the first set as recorded, even when
// its body differs (the first write wins, as for the machines' sets) and
// even after the workout was completed, so a retry never fails where the
// first attempt succeeded.
func (s *workoutService) LogSet(ctx context.Context, req *connect.Request[nxgv1.LogSetRequest]) (*connect.Response[nxgv1.LogSetResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	if msg.GetReps() <= 0 && msg.GetDurationSeconds() <= 0 {
		return nil, apperr.InvalidArgument("reps", "a set needs reps or duration_seconds")
	}
	set, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.WorkoutSet, error) {
		w, err := s.ownWorkout(ctx, tx, p.UserID, msg.GetWorkoutId(), true)
		if err != nil {
			return dbsqlc.WorkoutSet{}, err
		}
		byClient := dbsqlc.WorkoutSetByClientIDParams{WorkoutID: w.ID, ClientSetID: msg.GetClientSetId()}
		if prev, err := s.queries.WorkoutSetByClientID(ctx, tx, byClient); err == nil {
			return prev, nil
		} else if !db.IsNotFound(err) {
			return dbsqlc.WorkoutSet{}, fmt.Errorf("read set: %w", err)
		}
		if w.CompletedAt.Valid {
			return dbsqlc.WorkoutSet{}, apperr.FailedPrecondition("workout %s is completed; start a new workout to log sets", w.ID)
		}
		if _, err := s.queries.ExerciseGet(ctx, tx, msg.GetExerciseId()); db.IsNotFound(err) {
			return dbsqlc.WorkoutSet{}, apperr.InvalidArgument("exercise_id", "%q is not in the exercise catalogue (ListExercises)", msg.GetExerciseId())
		} else if err != nil {
			return dbsqlc.WorkoutSet{}, fmt.Errorf("read exercise: %w", err)
		}
		set, err := s.queries.WorkoutSetInsert(ctx, tx, dbsqlc.WorkoutSetInsertParams{
			WorkoutID: w.ID, UserID: p.UserID, ExerciseID: msg.GetExerciseId(), Reps: msg.GetReps(),
			WeightKg: msg.GetWeightKg(), DurationSeconds: msg.GetDurationSeconds(), DistanceM: msg.GetDistanceM(),
			Rpe: msg.GetRpe(), ClientSetID: msg.GetClientSetId(),
		})
		if db.IsNotFound(err) {
			// A concurrent retry inserted it first.
			return s.queries.WorkoutSetByClientID(ctx, tx, byClient)
		}
		if err != nil {
			return dbsqlc.WorkoutSet{}, fmt.Errorf("insert set: %w", err)
		}
		if err := floor.NotifyWorkout(ctx, tx, floor.WorkoutEvent{User: p.UserID, Workout: w.ID, Kind: floor.WorkoutSetLogged, ID: set.ID}); err != nil {
			return dbsqlc.WorkoutSet{}, err
		}
		return set, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.LogSetResponse{Set: workoutSetProto(set)}), nil
}

func (s *workoutService) CompleteWorkout(ctx context.Context, req *connect.Request[nxgv1.CompleteWorkoutRequest]) (*connect.Response[nxgv1.CompleteWorkoutResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.Workout, error) {
		w, err := s.ownWorkout(ctx, tx, p.UserID, req.Msg.GetWorkoutId(), false)
		if err != nil {
			return nil, err
		}
		done, err := s.queries.WorkoutComplete(ctx, tx, w.ID)
		switch {
		case db.IsNotFound(err):
			// Completed before: returned unchanged.
			if w, err = s.queries.WorkoutGet(ctx, tx, w.ID); err != nil {
				return nil, fmt.Errorf("read workout: %w", err)
			}
		case err != nil:
			return nil, fmt.Errorf("complete workout: %w", err)
		default:
			w = done
			if err := floor.NotifyWorkout(ctx, tx, floor.WorkoutEvent{User: p.UserID, Workout: w.ID, Kind: floor.WorkoutCompleted, ID: w.ID}); err != nil {
				return nil, err
			}
		}
		return s.fullWorkout(ctx, tx, w)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.CompleteWorkoutResponse{Workout: out}), nil
}

func (s *workoutService) GetWorkout(ctx context.Context, req *connect.Request[nxgv1.GetWorkoutRequest]) (*connect.Response[nxgv1.GetWorkoutResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.Workout, error) {
		w, err := s.ownWorkout(ctx, tx, p.UserID, req.Msg.GetWorkoutId(), false)
		if err != nil {
			return nil, err
		}
		return s.fullWorkout(ctx, tx, w)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetWorkoutResponse{Workout: out}), nil
}

func (s *workoutService) ListWorkouts(ctx context.Context, req *connect.Request[nxgv1.ListWorkoutsRequest]) (*connect.Response[nxgv1.ListWorkoutsResponse], error) {
	p, err := memberCaller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	since, until := timeRangeStart, timeRangeEnd
	if msg.GetStartTime() != nil {
		since = msg.GetStartTime().AsTime()
	}
	if msg.GetEndTime() != nil {
		until = msg.GetEndTime().AsTime()
	}
	if !until.After(since) {
		return nil, apperr.InvalidArgument("end_time", "must be after start_time")
	}
	var cursor pagination.TimeCursor
	after, err := pagination.Decode(workoutListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.WorkoutListParams{UserID: p.UserID, Since: since, Until: until, RowLimit: size + 1}
	if after {
		params.BeforeTime = pgtype.Timestamptz{Time: cursor.Time, Valid: true}
		params.BeforeID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	rows, err := s.queries.WorkoutList(ctx, s.pool, params)
	if err != nil {
		return nil, fmt.Errorf("list workouts: %w", err)
	}
	resp := &nxgv1.ListWorkoutsResponse{}
	rows, resp.NextPageToken = pagination.Page(workoutListName, rows, size, func(last dbsqlc.WorkoutListRow) any {
		return pagination.TimeCursor{Time: last.Workout.StartedAt, ID: last.Workout.ID}
	})
	for _, r := range rows {
		resp.Workouts = append(resp.Workouts, workoutProto(r.Workout, r.SetCount, r.VolumeKg))
	}
	return connect.NewResponse(resp), nil
}

// WatchWorkout streams a workout to its member, or to the console of the
// machine the member is linked to (so the machine's screen follows the
// sets logged from the app): the whole workout first, then each set
// logged and finally its completion, after which the stream ends.
func (s *workoutService) WatchWorkout(ctx context.Context, req *connect.Request[nxgv1.WatchWorkoutRequest], stream *connect.ServerStream[nxgv1.WatchWorkoutResponse]) error {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	workoutID, err := uuid.Parse(req.Msg.GetWorkoutId())
	if err != nil {
		return apperr.InvalidArgument("workout_id", "must be a UUID")
	}
	owner, err := s.watcherOwner(ctx, p, workoutID)
	if err != nil {
		return err
	}
	ctx, release, err := s.guard.admit(ctx, p)
	if err != nil {
		return err
	}
	defer release()
	return s.watch(ctx, owner, workoutID, consoleMachine(p), stream.Send)
}

// consoleMachine is the machine whose console p is, or uuid.Nil for a
// person: a console may follow a workout only while its member stays linked.
func consoleMachine(p auth.Principal) uuid.UUID {
	if p.IsDevice() {
		return p.Device.MachineID
	}
	return uuid.Nil
}

// watcherOwner is whose workout p may watch: the member's own, or, for a
// machine's console, the member linked to that machine now. It is the rule
// of WatchWorkout over Connect and over the WebSocket.
func (s *workoutService) watcherOwner(ctx context.Context, p auth.Principal, workoutID uuid.UUID) (uuid.UUID, error) {
	switch {
	case p.IsMember():
		return p.UserID, nil
	case p.IsDevice() && p.Device.Kind == auth.DeviceMachine && p.Device.MachineID != uuid.Nil:
		linked, err := s.queries.WorkoutMachineMember(ctx, s.pool, p.Device.MachineID)
		if db.IsNotFound(err) {
			return uuid.Nil, apperr.NotFound("workout", workoutID.String())
		}
		if err != nil {
			return uuid.Nil, fmt.Errorf("read machine's member: %w", err)
		}
		return linked.UserID, nil
	default:
		return uuid.Nil, apperr.PermissionDenied("only the workout's member and the console of the machine they are linked to may watch it")
	}
}

// watch streams the workout to send until it completes or ctx ends,
// numbering the messages from 1 without gaps. For a machine's console
// (machine not uuid.Nil) it also ends, with permission_denied, once the
// member is no longer linked to that machine: the console followed the
// workout only on the member's behalf.
func (s *workoutService) watch(ctx context.Context, owner, workoutID, machine uuid.UUID, send func(*nxgv1.WatchWorkoutResponse) error) error {
	// The payload names the workout: a cheap cut on the hub's goroutine.
	needle := []byte(workoutID.String())
	sub := s.floor.Hub.Subscribe(floor.ChannelWorkouts, func(ev realtime.Event) bool {
		return bytes.Contains(ev.Payload, needle)
	})
	defer sub.Close()
	// A console hears of its member's unlinks and session ends; nil (a
	// channel never ready) for a person.
	var memberEvents <-chan realtime.Event
	var members *realtime.Subscription
	if machine != uuid.Nil {
		ownerNeedle := []byte(owner.String())
		members = s.floor.Hub.Subscribe(floor.ChannelMembers, func(ev realtime.Event) bool {
			return ev.Resync || bytes.Contains(ev.Payload, ownerNeedle)
		})
		defer members.Close()
		memberEvents = members.Events()
	}
	stillLinked := func() error {
		linked, err := s.queries.WorkoutMachineMember(ctx, s.pool, machine)
		if db.IsNotFound(err) || (err == nil && linked.UserID != owner) {
			return apperr.PermissionDenied("the member is no longer linked to this machine; its console may not follow their workout")
		}
		if err != nil && ctx.Err() != nil {
			return streamEnd(ctx)
		}
		return err
	}

	var seq uint64
	emit := func(msg *nxgv1.WatchWorkoutResponse) error {
		seq++
		msg.Sequence = seq
		if err := send(msg); err != nil {
			if ctx.Err() != nil {
				return streamEnd(ctx)
			}
			return err
		}
		return nil
	}
	// Subscribed before the snapshot is read, so nothing committed after
	// the read is missed; a set the snapshot already holds may come again
	// as set_logged, which the client applies idempotently by its id.
	snapshot := func() (done bool, err error) {
		out, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.Workout, error) {
			w, err := s.ownWorkout(ctx, tx, owner, workoutID.String(), false)
			if err != nil {
				return nil, err
			}
			return s.fullWorkout(ctx, tx, w)
		})
		if err != nil {
			if ctx.Err() != nil {
				return true, streamEnd(ctx)
			}
			return true, err
		}
		if err := emit(&nxgv1.WatchWorkoutResponse{Event: &nxgv1.WatchWorkoutResponse_Snapshot{Snapshot: out}}); err != nil {
			return true, err
		}
		// A completed workout changes no more: the stream ends.
		return out.GetStatus() == nxgv1.WorkoutStatus_WORKOUT_STATUS_COMPLETED, nil
	}
	if done, err := snapshot(); done || err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case _, ok := <-memberEvents:
			if !ok {
				return subscriptionEnd(ctx, members.Err(), "watch again")
			}
			if err := stillLinked(); err != nil {
				return err
			}
		case ev, ok := <-sub.Events():
			if !ok {
				return subscriptionEnd(ctx, sub.Err(), "watch again for a fresh snapshot")
			}
			if ev.Resync {
				if done, err := snapshot(); done || err != nil {
					return err
				}
				continue
			}
			var we floor.WorkoutEvent
			if err := json.Unmarshal(ev.Payload, &we); err != nil {
				s.logger.WarnContext(ctx, "undecodable workout notification", "error", err)
				continue
			}
			if we.Workout != workoutID || we.User != owner {
				continue
			}
			switch we.Kind {
			case floor.WorkoutSetLogged:
				set, err := s.queries.WorkoutSetGet(ctx, s.pool, we.ID)
				if db.IsNotFound(err) {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						return streamEnd(ctx)
					}
					return fmt.Errorf("read set %s: %w", we.ID, err)
				}
				if err := emit(&nxgv1.WatchWorkoutResponse{Event: &nxgv1.WatchWorkoutResponse_SetLogged{SetLogged: workoutSetProto(set)}}); err != nil {
					return err
				}
			case floor.WorkoutCompleted:
				w, err := s.queries.WorkoutGet(ctx, s.pool, workoutID)
				if err != nil {
					if ctx.Err() != nil {
						return streamEnd(ctx)
					}
					return fmt.Errorf("read workout: %w", err)
				}
				out, err := s.fullWorkout(ctx, s.pool, w)
				if err != nil {
					return err
				}
				return emit(&nxgv1.WatchWorkoutResponse{Event: &nxgv1.WatchWorkoutResponse_Completed{Completed: out}})
			}
		}
	}
}

// nextPlannedSet is the set a machine's console shows its linked member
// next: the first prescribed set, not yet done in the member's open
// workout, of the active plan's exercises this machine type performs. The
// day looked at is the open workout's plan day when it follows the active
// plan, else the plan's first day with such an exercise. Sets done count
// per exercise in order: with two sets done of an exercise, its third
// prescribed set is next. Nil when there is no active plan or nothing
// left for this machine.
func nextPlannedSet(ctx context.Context, q dbsqlc.DBTX, queries *dbsqlc.Queries, userID uuid.UUID, machineType string) (*nxgv1.PlannedSet, error) {
	plan, err := queries.WorkoutPlanActive(ctx, q, userID)
	if db.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read active plan: %w", err)
	}
	days, err := jobs.DecodeWorkoutPlanDays(plan.Days)
	if err != nil {
		return nil, err
	}
	performs, err := queries.ExercisesForMachineType(ctx, q, machineType)
	if err != nil {
		return nil, fmt.Errorf("read exercises of %s: %w", machineType, err)
	}
	byMachine := map[string]bool{}
	for _, e := range performs {
		byMachine[e.ID] = true
	}
	done := map[string]int{}
	dayIndex := -1
	open, err := queries.WorkoutOpen(ctx, q, userID)
	switch {
	case err == nil:
		if open.PlanID.Valid && open.PlanID.UUID == plan.ID {
			dayIndex = int(open.DayIndex)
		}
		sets, err := queries.WorkoutSetsOfWorkout(ctx, q, open.ID)
		if err != nil {
			return nil, fmt.Errorf("read open workout's sets: %w", err)
		}
		for _, s := range sets {
			done[s.ExerciseID]++
		}
	case !db.IsNotFound(err):
		return nil, fmt.Errorf("read open workout: %w", err)
	}
	for _, d := range days {
		if dayIndex >= 0 && d.DayIndex != dayIndex {
			continue
		}
		for _, e := range d.Exercises {
			if !byMachine[e.ExerciseID] {
				continue
			}
			if n := done[e.ExerciseID]; n < len(e.Sets) {
				set := e.Sets[n]
				return &nxgv1.PlannedSet{
					Exercise: e.ExerciseName, Reps: int32(set.Reps), WeightKg: set.WeightKg, DurationSeconds: int32(set.DurationSeconds),
				}, nil
			}
			// Spent sets of this exercise do not count for a later one.
			done[e.ExerciseID] -= len(e.Sets)
		}
		if dayIndex < 0 {
			// Only the first day that has this machine's exercises.
			for _, e := range d.Exercises {
				if byMachine[e.ExerciseID] {
					return nil, nil
				}
			}
		}
	}
	return nil, nil
}
