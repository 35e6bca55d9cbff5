package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// exportWorkouts is the user's training in their data export: the plans
// they asked for (with the plans themselves), their workouts and every set
// logged in them, from the app or a machine. The MongoDB plan cache holds
// copies of the same plans, so it adds nothing here.
type exportWorkouts struct {
	Plans    []exportWorkoutPlan `json:"plans"`
	Workouts []exportWorkout     `json:"workouts"`
	Sets     []exportWorkoutSet  `json:"sets"`
}

type exportWorkoutPlan struct {
	ID             uuid.UUID       `json:"id"`
	Goal           string          `json:"goal"`
	DaysPerWeek    int32           `json:"days_per_week"`
	SessionMinutes int32           `json:"session_minutes"`
	Equipment      []string        `json:"equipment"`
	Notes          string          `json:"notes,omitempty"`
	Status         string          `json:"status"`
	FailureReason  string          `json:"failure_reason,omitempty"`
	Stale          bool            `json:"stale"`
	Name           string          `json:"name,omitempty"`
	Days           json.RawMessage `json:"days,omitempty"`
	Active         bool            `json:"active"`
	RequestedAt    time.Time       `json:"requested_at"`
	ReadyAt        *time.Time      `json:"ready_at,omitempty"`
}

type exportWorkout struct {
	ID          uuid.UUID  `json:"id"`
	PlanID      *uuid.UUID `json:"plan_id,omitempty"`
	DayIndex    int32      `json:"day_index"`
	StartedAt   time.Time  `json:"started_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

type exportWorkoutSet struct {
	ID              uuid.UUID  `json:"id"`
	WorkoutID       uuid.UUID  `json:"workout_id"`
	ExerciseID      string     `json:"exercise_id"`
	Reps            int32      `json:"reps"`
	WeightKg        float64    `json:"weight_kg"`
	DurationSeconds int32      `json:"duration_seconds"`
	DistanceM       float64    `json:"distance_m"`
	RPE             float64    `json:"rpe"`
	Calories        float64    `json:"calories"`
	ClientSetID     string     `json:"client_set_id"`
	Source          string     `json:"source"`
	MachineID       *uuid.UUID `json:"machine_id,omitempty"`
	LoggedAt        time.Time  `json:"logged_at"`
}

// readWorkouts adds the user's plans, workouts and sets to the archive.
func readWorkouts(ctx context.Context, tx pgx.Tx, userID uuid.UUID, a *exportArchive) error {
	out := exportWorkouts{Plans: []exportWorkoutPlan{}, Workouts: []exportWorkout{}, Sets: []exportWorkoutSet{}}
	plans, err := workoutQueries.WorkoutPlansAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read workout plans: %w", err)
	}
	for _, p := range plans {
		e := exportWorkoutPlan{
			ID: p.ID, Goal: p.Goal, DaysPerWeek: p.DaysPerWeek, SessionMinutes: p.SessionMinutes,
			Equipment: p.Equipment, Notes: p.Notes, Status: p.Status, FailureReason: p.FailureReason,
			Stale: p.Stale, Name: p.Name, Days: json.RawMessage(p.Days), Active: p.Active, RequestedAt: p.RequestedAt,
		}
		if p.ReadyAt.Valid {
			e.ReadyAt = &p.ReadyAt.Time
		}
		out.Plans = append(out.Plans, e)
	}
	workouts, err := workoutQueries.WorkoutsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read workouts: %w", err)
	}
	for _, w := range workouts {
		e := exportWorkout{ID: w.ID, DayIndex: w.DayIndex, StartedAt: w.StartedAt}
		if w.PlanID.Valid {
			e.PlanID = &w.PlanID.UUID
		}
		if w.CompletedAt.Valid {
			e.CompletedAt = &w.CompletedAt.Time
		}
		out.Workouts = append(out.Workouts, e)
	}
	sets, err := workoutQueries.WorkoutSetsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read workout sets: %w", err)
	}
	for _, s := range sets {
		e := exportWorkoutSet{
			ID: s.ID, WorkoutID: s.WorkoutID, ExerciseID: s.ExerciseID, Reps: s.Reps, WeightKg: s.WeightKg,
			DurationSeconds: s.DurationSeconds, DistanceM: s.DistanceM, RPE: s.Rpe, Calories: s.Calories,
			ClientSetID: s.ClientSetID, Source: s.Source, LoggedAt: s.LoggedAt,
		}
		if s.MachineID.Valid {
			e.MachineID = &s.MachineID.UUID
		}
		out.Sets = append(out.Sets, e)
	}
	a.Workouts = out
	return nil
}
