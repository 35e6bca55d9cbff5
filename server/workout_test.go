package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
	"github.com/nxg-fitness/nxg/internal/testkit/mongotest"
	"github.com/nxg-fitness/nxg/jobs"
)

// quickRetries is a River retry policy whose delay a test sets: River
// makes a job due within its scheduler interval available at once, so a
// short delay retries a failed plan job within milliseconds.
type quickRetries struct{ delay atomic.Int64 }

func (q *quickRetries) NextRetry(*rivertype.JobRow) time.Time {
	return time.Now().Add(time.Duration(q.delay.Load()))
}

// workoutFloor is a console floor whose API has the plan cache in
// FerretDB, and a River client that works the ai queue against the
// workout planner simulator.
type workoutFloor struct {
	*consoleFloor
	planner *devstack.WorkoutPlanner
	retries *quickRetries
	client  nxgv1connect.WorkoutServiceClient
}

func setupWorkoutFloor(t *testing.T) *workoutFloor {
	t.Helper()
	planner, err := devstack.StartWorkoutPlanner(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = planner.Close() })
	metrics, err := integrations.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// One attempt per call and a breaker that never opens: River's retries
	// are what these tests watch.
	base, err := integrations.New(integrations.Config{
		Name: workoutplanner.Name, BaseURL: planner.URL(), APIKey: planner.APIKey(),
		Timeout: 5 * time.Second, MaxAttempts: 1, FailureThreshold: 1000,
	}, metrics)
	if err != nil {
		t.Fatal(err)
	}
	retries := &quickRetries{}
	retries.delay.Store(int64(20 * time.Millisecond))
	var runner *river.Client[pgx.Tx]
	cf := setupConsoleFloor(t, func(o *Options) {
		// A console here attaches twice and watches a workout at once.
		o.Floor.Settings.MaxStreamsPerDevice = 8
		mdb := mongotest.New(t, o.Pool.Config().ConnString())
		o.Mongo = mdb
		workers := river.NewWorkers()
		river.AddWorker(workers, &jobs.WorkoutPlanWorker{
			Pool: o.Pool, Mongo: mdb, Planner: workoutplanner.New(base),
			MasterKeys: o.Identity.MasterKeys, Logger: o.Logger,
		})
		var err error
		runner, err = river.NewClient(riverpgxv5.New(o.Pool), &river.Config{
			Logger:            slog.New(slog.DiscardHandler),
			Queues:            map[string]river.QueueConfig{jobs.QueueAI: {MaxWorkers: 4}},
			Workers:           workers,
			RetryPolicy:       retries,
			FetchCooldown:     10 * time.Millisecond,
			FetchPollInterval: 20 * time.Millisecond,
			TestOnly:          true,
			// Other kinds (timeouts, idle unlinks) are inserted and left
			// unworked, as by the insert-only client of other tests.
			SkipUnknownJobCheck: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		o.Identity.River = runner
	})
	if err := runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = runner.Stop(ctx)
	})
	return &workoutFloor{
		consoleFloor: cf, planner: planner, retries: retries,
		client: nxgv1connect.NewWorkoutServiceClient(http.DefaultClient, cf.b.server.URL, connect.WithProtoJSON()),
	}
}

// request asks for a plan, checking the RPC answers at once.
func (f *workoutFloor) request(t *testing.T, caller auditTestCaller, req *nxgv1.RequestWorkoutPlanRequest) *nxgv1.RequestWorkoutPlanResponse {
	t.Helper()
	start := time.Now()
	res, err := f.client.RequestWorkoutPlan(context.Background(), authBearer(req, caller.Token))
	if err != nil {
		t.Fatalf("RequestWorkoutPlan: %v", err)
	}
	// The planner is never called while the member waits: even with it
	// down or slow the answer takes database time only.
	if d := time.Since(start); d > time.Second {
		t.Fatalf("RequestWorkoutPlan took %v", d)
	}
	return res.Msg
}

func (f *workoutFloor) plan(t *testing.T, caller auditTestCaller, id string) *nxgv1.WorkoutPlan {
	t.Helper()
	res, err := f.client.GetWorkoutPlan(context.Background(), authBearer(&nxgv1.GetWorkoutPlanRequest{
		Ref: &nxgv1.GetWorkoutPlanRequest_PlanRequestId{PlanRequestId: id},
	}, caller.Token))
	if err != nil {
		t.Fatalf("GetWorkoutPlan: %v", err)
	}
	return res.Msg.GetPlan()
}

// waitPlan polls the plan until cond holds, for up to 15s.
func (f *workoutFloor) waitPlan(t *testing.T, caller auditTestCaller, id, what string, cond func(*nxgv1.WorkoutPlan) bool) *nxgv1.WorkoutPlan {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := f.plan(t, caller, id)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("plan %s not %s within 15s: %v", id, what, p)
		}
		// Not faster: the per-user rate limit would refuse the polls.
		time.Sleep(100 * time.Millisecond)
	}
}

// plannerCalls are the simulator's requests with the idempotency key of one plan.
func (f *workoutFloor) plannerCalls(planID string) []devstack.SimRequest {
	var out []devstack.SimRequest
	for _, r := range f.planner.Requests() {
		if r.IdempotencyKey == "workout-plan-"+planID {
			out = append(out, r)
		}
	}
	return out
}

func strengthRequest(days int32) *nxgv1.RequestWorkoutPlanRequest {
	return &nxgv1.RequestWorkoutPlanRequest{
		Goal:           nxgv1.FitnessGoal_FITNESS_GOAL_BUILD_MUSCLE,
		DaysPerWeek:    days,
		SessionMinutes: 60,
		Equipment:      []nxgv1.Equipment{nxgv1.Equipment_EQUIPMENT_DUMBBELL, nxgv1.Equipment_EQUIPMENT_BARBELL, nxgv1.Equipment_EQUIPMENT_CHEST_PRESS},
	}
}

func readyFresh(p *nxgv1.WorkoutPlan) bool {
	return p.GetStatus() == nxgv1.PlanStatus_PLAN_STATUS_READY && !p.GetStale()
}

func TestWorkoutPlans(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	member := f.member

	// A fresh request: pending at once, ready once the job ran.
	req := strengthRequest(3)
	req.ClientRequestId = "plan-req-1"
	first := f.request(t, member, req)
	if first.GetPlan().GetStatus() != nxgv1.PlanStatus_PLAN_STATUS_PENDING || first.GetPlanRequestId() == "" || first.GetPlan().GetFromCache() {
		t.Fatalf("first answer = %v, want pending", first)
	}
	id := first.GetPlanRequestId()
	if again := f.request(t, member, req); again.GetPlanRequestId() != id {
		t.Fatalf("retry with the same client_request_id got %s, want %s", again.GetPlanRequestId(), id)
	}
	plan := f.waitPlan(t, member, id, "ready", readyFresh)
	if len(plan.GetDays()) != 3 || plan.GetName() == "" || plan.GetReadyAt() == nil || plan.GetFromCache() {
		t.Fatalf("ready plan = %v", plan)
	}
	for _, d := range plan.GetDays() {
		for _, e := range d.GetExercises() {
			if e.GetExerciseName() == "" || len(e.GetSets()) == 0 {
				t.Fatalf("plan exercise without name or sets: %v", e)
			}
		}
	}
	if n := len(f.plannerCalls(id)); n != 1 {
		t.Fatalf("planner called %d times for one request, want 1", n)
	}

	t.Run("IdenticalRequestFromCache", func(t *testing.T) {
		calls := len(f.planner.Requests())
		jobsBefore := len(jobsOfKind(t, f.b.db, jobs.WorkoutPlanArgs{}.Kind()))
		// The same request, its equipment in another order: normalised alike.
		same := strengthRequest(3)
		same.Equipment = []nxgv1.Equipment{nxgv1.Equipment_EQUIPMENT_CHEST_PRESS, nxgv1.Equipment_EQUIPMENT_BODYWEIGHT, nxgv1.Equipment_EQUIPMENT_BARBELL, nxgv1.Equipment_EQUIPMENT_DUMBBELL}
		res := f.request(t, member, same)
		got := res.GetPlan()
		if !readyFresh(got) || !got.GetFromCache() || res.GetPlanRequestId() == id || len(got.GetDays()) != 3 {
			t.Fatalf("identical request = %v, want ready from the cache", got)
		}
		if got.GetDays()[0].GetExercises()[0].GetExerciseId() != plan.GetDays()[0].GetExercises()[0].GetExerciseId() {
			t.Fatal("cached plan differs from the planner's")
		}
		if n := len(f.planner.Requests()); n != calls {
			t.Fatalf("planner called %d more times for a cached request", n-calls)
		}
		if n := len(jobsOfKind(t, f.b.db, jobs.WorkoutPlanArgs{}.Kind())); n != jobsBefore {
			t.Fatalf("%d jobs queued for a cached request", n-jobsBefore)
		}
	})

	t.Run("OutageServesStaleThenFresh", func(t *testing.T) {
		f.retries.delay.Store(int64(300 * time.Millisecond))
		f.planner.SetKnobs(devstack.SimKnobs{Outage: true})
		res := f.request(t, member, strengthRequest(4))
		newID := res.GetPlanRequestId()
		if res.GetPlan().GetStatus() != nxgv1.PlanStatus_PLAN_STATUS_PENDING {
			t.Fatalf("answer during outage = %v, want pending", res.GetPlan())
		}
		stale := f.waitPlan(t, member, newID, "stale", func(p *nxgv1.WorkoutPlan) bool { return p.GetStale() })
		if stale.GetStatus() != nxgv1.PlanStatus_PLAN_STATUS_READY || len(stale.GetDays()) != 3 ||
			stale.GetFailureReason() != jobs.WorkoutPlanReasonStale || stale.GetDaysPerWeek() != 4 {
			t.Fatalf("stale plan = %v, want the earlier 3-day plan with a reason", stale)
		}
		f.planner.SetKnobs(devstack.SimKnobs{})
		fresh := f.waitPlan(t, member, newID, "fresh", readyFresh)
		if len(fresh.GetDays()) != 4 || fresh.GetFailureReason() != "" {
			t.Fatalf("fresh plan = %v", fresh)
		}
		// Every attempt of the one logical call sent the same key.
		calls := f.plannerCalls(newID)
		if len(calls) < 2 || calls[0].Status != http.StatusServiceUnavailable || calls[len(calls)-1].Status != http.StatusOK {
			t.Fatalf("planner calls for %s = %d (first %d), want failures then a success", newID, len(calls), calls[0].Status)
		}
		for _, r := range f.planner.Requests() {
			if r.Time.After(calls[0].Time) && r.IdempotencyKey != "workout-plan-"+newID {
				t.Fatalf("another key %q sent during the retries", r.IdempotencyKey)
			}
		}
	})

	t.Run("OutageWithoutEarlierPlan", func(t *testing.T) {
		other := f.other
		f.retries.delay.Store(int64(time.Hour))
		f.planner.SetKnobs(devstack.SimKnobs{Outage: true})
		defer f.planner.SetKnobs(devstack.SimKnobs{})
		res := f.request(t, other, strengthRequest(2))
		p := f.waitPlan(t, other, res.GetPlanRequestId(), "pending with a reason", func(p *nxgv1.WorkoutPlan) bool {
			return p.GetFailureReason() != ""
		})
		if p.GetStatus() != nxgv1.PlanStatus_PLAN_STATUS_PENDING || p.GetStale() || len(p.GetDays()) != 0 ||
			p.GetFailureReason() != jobs.WorkoutPlanReasonUnavailable {
			t.Fatalf("plan without an earlier one = %v, want pending with the reason", p)
		}
	})

	t.Run("AbsurdPlanRejected", func(t *testing.T) {
		third := auditTestUser(t, f.b, token.RoleMember)
		f.retries.delay.Store(int64(10 * time.Millisecond))
		f.planner.SetKnobs(devstack.SimKnobs{Absurd: true})
		defer f.planner.SetKnobs(devstack.SimKnobs{})
		res := f.request(t, third, strengthRequest(3))
		id := res.GetPlanRequestId()
		p := f.waitPlan(t, third, id, "failed", func(p *nxgv1.WorkoutPlan) bool {
			return p.GetStatus() == nxgv1.PlanStatus_PLAN_STATUS_FAILED
		})
		if p.GetFailureReason() != jobs.WorkoutPlanReasonFailedBad || len(p.GetDays()) != 0 || p.GetStale() {
			t.Fatalf("absurd plan = %v, want failed without days", p)
		}
		calls := f.plannerCalls(id)
		if want := int(jobs.WorkoutPlanArgs{}.InsertOpts().MaxAttempts); len(calls) != want {
			t.Fatalf("planner called %d times, want once per attempt (%d)", len(calls), want)
		}
		if !strings.Contains(f.b.logs.String(), "rejected an invalid plan from the workout planner") {
			t.Fatal("the rejected plan was not logged")
		}
		_, err := f.client.SetActivePlan(ctx, authBearer(&nxgv1.SetActivePlanRequest{PlanId: id}, third.Token))
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "not ready")
	})

	t.Run("OthersPlansNotFound", func(t *testing.T) {
		_, err := f.client.GetWorkoutPlan(ctx, authBearer(&nxgv1.GetWorkoutPlanRequest{
			Ref: &nxgv1.GetWorkoutPlanRequest_PlanId{PlanId: id},
		}, f.other.Token))
		requireAuthCode(t, err, connect.CodeNotFound, "workout plan")
	})

	t.Run("ListAndActivate", func(t *testing.T) {
		var ids []string
		pageToken := ""
		for {
			res, err := f.client.ListWorkoutPlans(ctx, authBearer(&nxgv1.ListWorkoutPlansRequest{PageSize: 1, PageToken: pageToken}, member.Token))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range res.Msg.GetPlans() {
				ids = append(ids, p.GetId())
			}
			if pageToken = res.Msg.GetNextPageToken(); pageToken == "" {
				break
			}
		}
		if len(ids) != 3 || ids[2] != id {
			t.Fatalf("listed plans %v, want 3, oldest %s last", ids, id)
		}
		res, err := f.client.SetActivePlan(ctx, authBearer(&nxgv1.SetActivePlanRequest{PlanId: id}, member.Token))
		if err != nil || !res.Msg.GetPlan().GetActive() {
			t.Fatalf("SetActivePlan = %v, %v", res, err)
		}
		res, err = f.client.SetActivePlan(ctx, authBearer(&nxgv1.SetActivePlanRequest{PlanId: ids[0]}, member.Token))
		if err != nil || !res.Msg.GetPlan().GetActive() || f.plan(t, member, id).GetActive() {
			t.Fatalf("switching the active plan = %v, %v", res, err)
		}
	})

	t.Run("StartWorkoutFromPlan", func(t *testing.T) {
		_, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{PlanId: id, DayIndex: 3}, member.Token))
		requireAuthCode(t, err, connect.CodeInvalidArgument, "day_index")
		res, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{PlanId: id, DayIndex: 2}, member.Token))
		if err != nil || res.Msg.GetWorkout().GetPlanId() != id || res.Msg.GetWorkout().GetDayIndex() != 2 {
			t.Fatalf("StartWorkout = %v, %v", res, err)
		}
	})
}

func TestWorkoutTracking(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	m := f.member

	_, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{DayIndex: 1}, m.Token))
	requireAuthCode(t, err, connect.CodeInvalidArgument, "day_index")
	start, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	w := start.Msg.GetWorkout()
	if w.GetStatus() != nxgv1.WorkoutStatus_WORKOUT_STATUS_OPEN {
		t.Fatalf("started = %v", w)
	}
	if again, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token)); err != nil || again.Msg.GetWorkout().GetId() != w.GetId() {
		t.Fatalf("starting again = %v, %v; want the open workout", again, err)
	}

	log := func(clientID, exercise string, reps int32, kg float64) (*nxgv1.WorkoutSet, error) {
		res, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{
			WorkoutId: w.GetId(), ExerciseId: exercise, Reps: reps, WeightKg: kg, Rpe: 8, ClientSetId: clientID,
		}, m.Token))
		if err != nil {
			return nil, err
		}
		return res.Msg.GetSet(), nil
	}
	first, err := log("s1", "barbell-bench-press", 8, 60)
	if err != nil || first.GetSource() != nxgv1.SetSource_SET_SOURCE_APP || first.GetReps() != 8 {
		t.Fatalf("LogSet = %v, %v", first, err)
	}
	// A retry returns the first set, even with another body.
	retry, err := log("s1", "barbell-bench-press", 9, 65)
	if err != nil || retry.GetId() != first.GetId() || retry.GetReps() != 8 {
		t.Fatalf("retried LogSet = %v, %v; want the first set", retry, err)
	}
	_, err = log("s2", "no-such-exercise", 8, 60)
	requireAuthCode(t, err, connect.CodeInvalidArgument, "exercise_id")
	_, err = f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{WorkoutId: w.GetId(), ExerciseId: "plank", ClientSetId: "s3"}, m.Token))
	requireAuthCode(t, err, connect.CodeInvalidArgument, "reps or duration_seconds")
	if _, err := log("s2", "barbell-bench-press", 6, 70); err != nil {
		t.Fatal(err)
	}
	_, err = f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{WorkoutId: w.GetId(), ExerciseId: "plank", Reps: 1, ClientSetId: "s9"}, f.other.Token))
	requireAuthCode(t, err, connect.CodeNotFound, "workout")

	done, err := f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	got := done.Msg.GetWorkout()
	if got.GetStatus() != nxgv1.WorkoutStatus_WORKOUT_STATUS_COMPLETED || got.GetSetCount() != 2 || got.GetVolumeKg() != 8*60+6*70 || len(got.GetSets()) != 2 {
		t.Fatalf("completed = %v", got)
	}
	_, err = log("s4", "barbell-bench-press", 5, 70)
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "completed")
	if again, err := log("s1", "barbell-bench-press", 8, 60); err != nil || again.GetId() != first.GetId() {
		t.Fatalf("retry after completion = %v, %v; want the first set", again, err)
	}

	// A second workout, then the list pages newest first.
	second, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil || second.Msg.GetWorkout().GetId() == w.GetId() {
		t.Fatalf("second workout = %v, %v", second, err)
	}
	page1, err := f.client.ListWorkouts(ctx, authBearer(&nxgv1.ListWorkoutsRequest{PageSize: 1}, m.Token))
	if err != nil || len(page1.Msg.GetWorkouts()) != 1 || page1.Msg.GetWorkouts()[0].GetId() != second.Msg.GetWorkout().GetId() || page1.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v", page1, err)
	}
	page2, err := f.client.ListWorkouts(ctx, authBearer(&nxgv1.ListWorkoutsRequest{PageSize: 1, PageToken: page1.Msg.GetNextPageToken()}, m.Token))
	if err != nil || len(page2.Msg.GetWorkouts()) != 1 || page2.Msg.GetWorkouts()[0].GetSetCount() != 2 || page2.Msg.GetNextPageToken() != "" {
		t.Fatalf("second page = %v, %v", page2, err)
	}

	exercises, err := f.client.ListExercises(ctx, authBearer(&nxgv1.ListExercisesRequest{PageSize: 500}, m.Token))
	if err != nil || len(exercises.Msg.GetExercises()) < 60 {
		t.Fatalf("catalogue = %d exercises, %v; want at least 60", len(exercises.Msg.GetExercises()), err)
	}
	presses, err := f.client.ListExercises(ctx, authBearer(&nxgv1.ListExercisesRequest{Equipment: nxgv1.Equipment_EQUIPMENT_CHEST_PRESS, PageSize: 1}, m.Token))
	if err != nil || len(presses.Msg.GetExercises()) != 1 || presses.Msg.GetNextPageToken() == "" ||
		presses.Msg.GetExercises()[0].GetMachineTypes()[0] != nxgv1.MachineType_MACHINE_TYPE_CHEST_PRESS {
		t.Fatalf("chest press exercises = %v, %v", presses, err)
	}
}

// workoutWatch is an open WatchWorkout stream as a test reads it.
type workoutWatch struct {
	t      testing.TB
	stream *connect.ServerStreamForClient[nxgv1.WatchWorkoutResponse]
	seq    uint64
	cancel context.CancelFunc
}

func (f *workoutFloor) watchWorkout(t testing.TB, tok, workoutID string) *workoutWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.client.WatchWorkout(ctx, authBearer(&nxgv1.WatchWorkoutRequest{WorkoutId: workoutID}, tok))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = stream.Close() })
	return &workoutWatch{t: t, stream: stream, cancel: cancel}
}

func (w *workoutWatch) next() *nxgv1.WatchWorkoutResponse {
	w.t.Helper()
	got := make(chan bool, 1)
	go func() { got <- w.stream.Receive() }()
	select {
	case ok := <-got:
		if !ok {
			w.t.Fatalf("workout stream ended: %v", w.stream.Err())
		}
	case <-time.After(10 * time.Second):
		w.cancel()
		<-got
		w.t.Fatal("no workout message within 10s")
	}
	msg := w.stream.Msg()
	w.seq++
	if msg.GetSequence() != w.seq {
		w.t.Fatalf("sequence = %d, want %d", msg.GetSequence(), w.seq)
	}
	return msg
}

// insertActivePlan stores a ready plan, active, prescribing three chest
// press sets then push-ups, as the planner would have.
func (f *workoutFloor) insertActivePlan(t *testing.T, user auditTestCaller) string {
	t.Helper()
	days := `[{"day_index":0,"title":"Push","exercises":[
		{"exercise_id":"machine-chest-press","exercise_name":"Machine chest press","sets":[
			{"reps":10,"weight_kg":40,"rest_seconds":90},{"reps":8,"weight_kg":45,"rest_seconds":90},{"reps":6,"weight_kg":50,"rest_seconds":90}]},
		{"exercise_id":"push-up","exercise_name":"Push-up","sets":[{"reps":15,"rest_seconds":60}]}]}]`
	var id string
	if err := f.b.db.Pool.QueryRow(context.Background(), `INSERT INTO workout_plans
		(user_id, goal, days_per_week, session_minutes, status, name, days, active, ready_at)
		VALUES ($1, 'build_muscle', 1, 45, 'ready', 'Push day', $2, true, now()) RETURNING id::text`, user.ID, days).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestWorkoutMachineSets(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	m := f.member
	f.insertActivePlan(t, m)
	f.checkIn(t, m.ID, f.branchA)
	if _, err := f.link(m, byID(f.press)); err != nil {
		t.Fatalf("LinkMachine: %v\n%s", err, f.b.logs.String())
	}

	// The console shows the plan's first chest press set.
	att := f.attach(t, f.consoleClients()["GRPC"], f.pressToken)
	if next := att.next().GetMember().GetNextSet(); next.GetExercise() != "Machine chest press" || next.GetReps() != 10 || next.GetWeightKg() != 40 {
		t.Fatalf("next set on attach = %v, want 10 × 40 kg chest press", next)
	}

	// A set from the machine with no workout open opens one.
	res, err := f.report(f.pressToken, setReportReq(&nxgv1.SetReport{ClientSetId: "console-1", Reps: 10, WeightKg: 40, DurationSeconds: 40}))
	if err != nil {
		t.Fatal(err)
	}
	machineSet := res.GetSet()
	open, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	w := open.Msg.GetWorkout()
	if len(w.GetSets()) != 1 {
		t.Fatalf("open workout = %v, want the machine's set", w)
	}
	landed := w.GetSets()[0]
	if landed.GetSource() != nxgv1.SetSource_SET_SOURCE_MACHINE || landed.GetExerciseId() != "machine-chest-press" ||
		landed.GetMachineId() != f.press || landed.GetClientSetId() != "machine/"+machineSet.GetId() || landed.GetReps() != 10 {
		t.Fatalf("landed set = %v", landed)
	}
	// The console's retry lands nothing twice.
	if _, err := f.report(f.pressToken, setReportReq(&nxgv1.SetReport{ClientSetId: "console-1", Reps: 10, WeightKg: 40, DurationSeconds: 40})); err != nil {
		t.Fatal(err)
	}

	// The console's stream moves on to the second prescribed set: one is
	// done. (The link's own change may come first.)
	for i := 0; ; i++ {
		next := att.next().GetMember().GetNextSet()
		if next.GetReps() == 8 && next.GetWeightKg() == 45 {
			break
		}
		if i == 4 {
			t.Fatalf("next set after one = %v, want 8 × 45 kg", next)
		}
	}
	// A new attach shows it too.
	att2 := f.attach(t, f.consoleClients()["GRPC"], f.pressToken)
	if next := att2.next().GetMember().GetNextSet(); next.GetReps() != 8 || next.GetWeightKg() != 45 {
		t.Fatalf("next set on a new attach = %v, want 8 × 45 kg", next)
	}

	// The member's app and the machine's console both watch the workout.
	app := f.watchWorkout(t, m.Token, w.GetId())
	console := f.watchWorkout(t, f.pressToken, w.GetId())
	for _, s := range []*workoutWatch{app, console} {
		if snap := s.next().GetSnapshot(); snap.GetId() != w.GetId() || len(snap.GetSets()) != 1 {
			t.Fatalf("snapshot = %v", snap)
		}
	}
	fromApp, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{
		WorkoutId: w.GetId(), ExerciseId: "push-up", Reps: 15, ClientSetId: "app-1",
	}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	res, err = f.report(f.pressToken, setReportReq(&nxgv1.SetReport{ClientSetId: "console-2", Reps: 8, WeightKg: 45, DurationSeconds: 35}))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*workoutWatch{"app": app, "console": console} {
		a := s.next().GetSetLogged()
		b := s.next().GetSetLogged()
		if a.GetId() != fromApp.Msg.GetSet().GetId() || a.GetSource() != nxgv1.SetSource_SET_SOURCE_APP {
			t.Fatalf("%s: first event = %v, want the app's set", name, a)
		}
		if b.GetSource() != nxgv1.SetSource_SET_SOURCE_MACHINE || b.GetClientSetId() != "machine/"+res.GetSet().GetId() {
			t.Fatalf("%s: second event = %v, want the machine's set", name, b)
		}
	}
	if _, err := f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, m.Token)); err != nil {
		t.Fatal(err)
	}
	if done := app.next().GetCompleted(); done.GetSetCount() != 3 {
		t.Fatalf("completed event = %v, want 3 sets", done)
	}
	if app.stream.Receive() {
		t.Fatal("stream went on after completion")
	}

	// Another member's console may not watch this workout.
	f.exec(t, `UPDATE machine_links SET ended_at = now(), end_reason = 'member' WHERE user_id = $1`, m.ID)
	f.exec(t, `UPDATE machines SET current_link_id = NULL WHERE id = $1`, f.press)
	stream := f.watchWorkout(t, f.pressToken, w.GetId())
	if stream.stream.Receive() {
		t.Fatal("an unlinked console watched the workout")
	}
	requireAuthCode(t, stream.stream.Err(), connect.CodeNotFound, "workout")
}

func TestWorkoutReadsAndAccess(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	m := f.member

	start, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	w := start.Msg.GetWorkout()
	for i, reps := range []int32{10, 8} {
		if _, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{
			WorkoutId: w.GetId(), ExerciseId: "barbell-bench-press", Reps: reps, WeightKg: 50, ClientSetId: fmt.Sprintf("r%d", i),
		}, m.Token)); err != nil {
			t.Fatal(err)
		}
	}

	// GetWorkout returns the open workout with its sets, in the order logged.
	got, err := f.client.GetWorkout(ctx, authBearer(&nxgv1.GetWorkoutRequest{WorkoutId: w.GetId()}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	gw := got.Msg.GetWorkout()
	if gw.GetStatus() != nxgv1.WorkoutStatus_WORKOUT_STATUS_OPEN || len(gw.GetSets()) != 2 || gw.GetSets()[0].GetReps() != 10 ||
		gw.GetSets()[1].GetReps() != 8 || gw.GetSetCount() != 2 || gw.GetVolumeKg() != 18*50 {
		t.Fatalf("GetWorkout = %v", gw)
	}

	// Another member's workout does not exist for them; a malformed id
	// names the field.
	_, err = f.client.GetWorkout(ctx, authBearer(&nxgv1.GetWorkoutRequest{WorkoutId: w.GetId()}, f.other.Token))
	requireAuthCode(t, err, connect.CodeNotFound, "workout")
	_, err = f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, f.other.Token))
	requireAuthCode(t, err, connect.CodeNotFound, "workout")
	_, err = f.client.GetWorkout(ctx, authBearer(&nxgv1.GetWorkoutRequest{WorkoutId: "not-a-uuid"}, m.Token))
	requireAuthCode(t, err, connect.CodeInvalidArgument, "workout_id")

	// Completing twice returns the completed workout unchanged.
	first, err := f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, m.Token))
	if err != nil || !again.Msg.GetWorkout().GetCompletedAt().AsTime().Equal(first.Msg.GetWorkout().GetCompletedAt().AsTime()) ||
		len(again.Msg.GetWorkout().GetSets()) != 2 {
		t.Fatalf("completing again = %v, %v; want the first completion unchanged", again, err)
	}

	// Workouts are members': staff and devices are refused.
	_, err = f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, f.staffA.Token))
	requireAuthCode(t, err, connect.CodePermissionDenied, "only members")
	_, err = f.client.ListWorkouts(ctx, authBearer(&nxgv1.ListWorkoutsRequest{}, f.pressToken))
	requireAuthCode(t, err, connect.CodePermissionDenied, "")
	_, err = f.client.ListWorkoutPlans(ctx, authBearer(&nxgv1.ListWorkoutPlansRequest{}, f.staffA.Token))
	requireAuthCode(t, err, connect.CodePermissionDenied, "only members")
}

func TestWatchWorkoutOverWebSocket(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	m := f.member
	start, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	w := start.Msg.GetWorkout()

	// Another member may not follow it: the socket closes with 4404.
	stranger := wsDial(t, f.b, f.other.Token)
	wsSend(t, stranger, `{"subscribe":"workout","workout_id":"`+w.GetId()+`"}`)
	if _, _, err := stranger.Read(ctx); websocket.CloseStatus(err) != wsStatusNotFound {
		t.Fatalf("another member's socket ended with %v, want close 4404", err)
	}

	c := wsDial(t, f.b, m.Token)
	wsSend(t, c, `{"subscribe":"workout","workout_id":"`+w.GetId()+`"}`)
	var msg nxgv1.WatchWorkoutResponse
	wsReadProto(t, c, &msg)
	if msg.GetSequence() != 1 || msg.GetSnapshot().GetId() != w.GetId() {
		t.Fatalf("first frame = %v, want the workout's snapshot", &msg)
	}
	if _, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{
		WorkoutId: w.GetId(), ExerciseId: "barbell-bench-press", Reps: 5, WeightKg: 80, ClientSetId: "ws-1",
	}, m.Token)); err != nil {
		t.Fatal(err)
	}
	wsReadProto(t, c, &msg)
	if msg.GetSequence() != 2 || msg.GetSetLogged().GetReps() != 5 || msg.GetSetLogged().GetClientSetId() != "ws-1" {
		t.Fatalf("second frame = %v, want the set just logged", &msg)
	}
	if _, err := f.client.CompleteWorkout(ctx, authBearer(&nxgv1.CompleteWorkoutRequest{WorkoutId: w.GetId()}, m.Token)); err != nil {
		t.Fatal(err)
	}
	wsReadProto(t, c, &msg)
	if msg.GetSequence() != 3 || msg.GetCompleted().GetStatus() != nxgv1.WorkoutStatus_WORKOUT_STATUS_COMPLETED {
		t.Fatalf("third frame = %v, want the completed workout", &msg)
	}
	// The stream ends with the workout: a normal close.
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after completion the socket ended with %v, want close 1000", err)
	}
}

func TestConsoleStopsFollowingAnUnlinkedMembersWorkout(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	m := f.member
	f.checkIn(t, m.ID, f.branchA)
	if _, err := f.link(m, byID(f.press)); err != nil {
		t.Fatalf("LinkMachine: %v", err)
	}
	open, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, m.Token))
	if err != nil {
		t.Fatal(err)
	}
	w := open.Msg.GetWorkout()
	console := f.watchWorkout(t, f.pressToken, w.GetId())
	app := f.watchWorkout(t, m.Token, w.GetId())
	for _, s := range []*workoutWatch{console, app} {
		if snap := s.next().GetSnapshot(); snap.GetId() != w.GetId() {
			t.Fatalf("snapshot = %v", snap)
		}
	}

	// The member walks away from the machine: the console's stream ends,
	// the member's own goes on.
	if _, err := f.machineFloor.client().UnlinkMachine(ctx, authBearer(&nxgv1.UnlinkMachineRequest{}, m.Token)); err != nil {
		t.Fatal(err)
	}
	if console.stream.Receive() {
		t.Fatalf("the console still follows the workout after the unlink: %v", console.stream.Msg())
	}
	requireAuthCode(t, console.stream.Err(), connect.CodePermissionDenied, "no longer linked")
	if _, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{
		WorkoutId: w.GetId(), ExerciseId: "push-up", Reps: 12, ClientSetId: "after-unlink",
	}, m.Token)); err != nil {
		t.Fatal(err)
	}
	if set := app.next().GetSetLogged(); set.GetClientSetId() != "after-unlink" {
		t.Fatalf("the member's stream got %v, want the set logged after the unlink", set)
	}
}

func TestWorkoutRefusesBadInputNamingTheField(t *testing.T) {
	t.Parallel()
	f := setupWorkoutFloor(t)
	ctx := context.Background()
	tok := f.member.Token
	open, err := f.client.StartWorkout(ctx, authBearer(&nxgv1.StartWorkoutRequest{}, tok))
	if err != nil {
		t.Fatal(err)
	}
	w := open.Msg.GetWorkout().GetId()
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"goal", func() error {
			_, err := f.client.RequestWorkoutPlan(ctx, authBearer(&nxgv1.RequestWorkoutPlanRequest{DaysPerWeek: 3, SessionMinutes: 60}, tok))
			return err
		}, "goal"},
		{"days per week", func() error {
			r := strengthRequest(3)
			r.DaysPerWeek = 9
			_, err := f.client.RequestWorkoutPlan(ctx, authBearer(r, tok))
			return err
		}, "days_per_week"},
		{"session minutes", func() error {
			r := strengthRequest(3)
			r.SessionMinutes = 5
			_, err := f.client.RequestWorkoutPlan(ctx, authBearer(r, tok))
			return err
		}, "session_minutes"},
		{"repeated equipment", func() error {
			r := strengthRequest(3)
			r.Equipment = []nxgv1.Equipment{nxgv1.Equipment_EQUIPMENT_BARBELL, nxgv1.Equipment_EQUIPMENT_BARBELL}
			_, err := f.client.RequestWorkoutPlan(ctx, authBearer(r, tok))
			return err
		}, "equipment"},
		{"plan reference", func() error {
			_, err := f.client.GetWorkoutPlan(ctx, authBearer(&nxgv1.GetWorkoutPlanRequest{}, tok))
			return err
		}, "ref"},
		{"plan id", func() error {
			_, err := f.client.SetActivePlan(ctx, authBearer(&nxgv1.SetActivePlanRequest{PlanId: "plan-1"}, tok))
			return err
		}, "plan_id"},
		{"weight", func() error {
			_, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{WorkoutId: w, ExerciseId: "barbell-bench-press", Reps: 5, WeightKg: 5000, ClientSetId: "x"}, tok))
			return err
		}, "weight_kg"},
		{"rpe", func() error {
			_, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{WorkoutId: w, ExerciseId: "barbell-bench-press", Reps: 5, Rpe: 11, ClientSetId: "x"}, tok))
			return err
		}, "rpe"},
		{"client set id", func() error {
			_, err := f.client.LogSet(ctx, authBearer(&nxgv1.LogSetRequest{WorkoutId: w, ExerciseId: "barbell-bench-press", Reps: 5, ClientSetId: "machine/1"}, tok))
			return err
		}, "client_set_id"},
		{"time range", func() error {
			now := time.Now()
			_, err := f.client.ListWorkouts(ctx, authBearer(&nxgv1.ListWorkoutsRequest{StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(-time.Hour))}, tok))
			return err
		}, "end_time"},
		{"page token", func() error {
			_, err := f.client.ListWorkoutPlans(ctx, authBearer(&nxgv1.ListWorkoutPlansRequest{PageToken: "nope"}, tok))
			return err
		}, "page_token"},
		{"watch id", func() error {
			s, err := f.client.WatchWorkout(ctx, authBearer(&nxgv1.WatchWorkoutRequest{WorkoutId: "w-1"}, tok))
			if err != nil {
				return err
			}
			defer s.Close()
			s.Receive()
			return s.Err()
		}, "workout_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireAuthCode(t, tc.call(), connect.CodeInvalidArgument, tc.field)
		})
	}
	// Unknown but well-formed ids are not found, not invalid.
	_, err = f.client.GetWorkoutPlan(ctx, authBearer(&nxgv1.GetWorkoutPlanRequest{Ref: &nxgv1.GetWorkoutPlanRequest_PlanId{PlanId: "01900000-0000-7000-8000-000000000000"}}, tok))
	requireAuthCode(t, err, connect.CodeNotFound, "plan")
	_, err = f.client.SetActivePlan(ctx, authBearer(&nxgv1.SetActivePlanRequest{PlanId: "01900000-0000-7000-8000-000000000000"}, tok))
	requireAuthCode(t, err, connect.CodeNotFound, "plan")
}
