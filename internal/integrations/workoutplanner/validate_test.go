package workoutplanner_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
)

// validRequest and validPlan are the smallest request and plan the
// contract accepts; each case below breaks one rule.
func validRequest() workoutplanner.PlanRequest {
	return workoutplanner.PlanRequest{
		Goal: workoutplanner.GoalStrength, DaysPerWeek: 1, SessionMinutes: 60,
		Equipment: []string{workoutplanner.EquipmentBarbell},
		Profile:   workoutplanner.Profile{Sex: workoutplanner.SexFemale, Age: 34, HeightCm: 170, WeightKg: 65, Experience: workoutplanner.ExperienceBeginner},
		History:   []workoutplanner.HistoryEntry{{ExerciseID: "back-squat", Date: "2026-11-20", Sets: 3, BestReps: 5, BestWeightKg: 60}},
		Catalogue: []workoutplanner.CatalogueExercise{
			{ID: "back-squat", Name: "Back squat", Equipment: workoutplanner.EquipmentBarbell},
			{ID: "leg-press", Name: "Leg press", Equipment: workoutplanner.EquipmentLegPress},
		},
	}
}

func validPlan() *workoutplanner.Plan {
	return &workoutplanner.Plan{PlanID: "wp_1", Days: []workoutplanner.Day{{
		DayIndex: 0, Exercises: []workoutplanner.Exercise{{ExerciseID: "back-squat", Sets: []workoutplanner.Set{{Reps: 5, WeightKg: 60, RestSeconds: 120}}}},
	}}}
}

func TestValidatePlanRejectsAbsurdPlans(t *testing.T) {
	if err := workoutplanner.ValidatePlan(validRequest(), validPlan()); err != nil {
		t.Fatalf("the valid plan was refused: %v", err)
	}
	set := func(mutate func(*workoutplanner.Set)) func(*workoutplanner.Plan) {
		return func(p *workoutplanner.Plan) { mutate(&p.Days[0].Exercises[0].Sets[0]) }
	}
	for _, tc := range []struct {
		name   string
		mutate func(*workoutplanner.Plan)
		field  string
	}{
		{"bad id", func(p *workoutplanner.Plan) { p.PlanID = "plan-1" }, "plan_id"},
		{"days per week", func(p *workoutplanner.Plan) { p.Days = append(p.Days, p.Days[0]) }, "days"},
		{"day index", func(p *workoutplanner.Plan) { p.Days[0].DayIndex = 3 }, "days[0].day_index"},
		{"no exercises", func(p *workoutplanner.Plan) { p.Days[0].Exercises = nil }, "days[0].exercises"},
		{"not in the catalogue", func(p *workoutplanner.Plan) { p.Days[0].Exercises[0].ExerciseID = "moon-walk" }, "exercise_id"},
		{"equipment the member lacks", func(p *workoutplanner.Plan) { p.Days[0].Exercises[0].ExerciseID = "leg-press" }, "exercise_id"},
		{"no sets", func(p *workoutplanner.Plan) { p.Days[0].Exercises[0].Sets = nil }, "sets"},
		{"reps", set(func(s *workoutplanner.Set) { s.Reps = 400 }), "reps"},
		{"weight", set(func(s *workoutplanner.Set) { s.WeightKg = 2000 }), "weight_kg"},
		{"weight NaN", set(func(s *workoutplanner.Set) { s.WeightKg = math.NaN() }), "weight_kg"},
		{"duration", set(func(s *workoutplanner.Set) { s.DurationSeconds = -1 }), "duration_seconds"},
		{"distance", set(func(s *workoutplanner.Set) { s.DistanceM = 1e9 }), "distance_m"},
		{"rest", set(func(s *workoutplanner.Set) { s.RestSeconds = 3600 }), "rest_seconds"},
		{"no work", set(func(s *workoutplanner.Set) { s.Reps = 0 }), "sets[0]"},
		{"too long a day", func(p *workoutplanner.Plan) {
			ex := &p.Days[0].Exercises[0]
			for range 9 {
				ex.Sets = append(ex.Sets, workoutplanner.Set{Reps: 5, WeightKg: 60, RestSeconds: 600})
			}
		}, "days[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validPlan()
			tc.mutate(p)
			err := workoutplanner.ValidatePlan(validRequest(), p)
			var fe *workoutplanner.FieldError
			if !errors.Is(err, workoutplanner.ErrInvalidResponse) || !errors.As(err, &fe) || !strings.Contains(fe.Field, tc.field) {
				t.Fatalf("ValidatePlan = %v, want an invalid response naming %s", err, tc.field)
			}
		})
	}
	if err := workoutplanner.ValidatePlan(validRequest(), nil); !errors.Is(err, workoutplanner.ErrInvalidResponse) {
		t.Fatalf("a missing plan = %v, want an invalid response", err)
	}
}

func TestPlanRequestValidate(t *testing.T) {
	if err := validRequest().Validate(); err != nil {
		t.Fatalf("the valid request was refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*workoutplanner.PlanRequest)
		field  string
	}{
		{"sex", func(r *workoutplanner.PlanRequest) { r.Profile.Sex = "robot" }, "profile.sex"},
		{"age", func(r *workoutplanner.PlanRequest) { r.Profile.Age = 7 }, "profile.age"},
		{"height", func(r *workoutplanner.PlanRequest) { r.Profile.HeightCm = 20 }, "profile.height_cm"},
		{"weight", func(r *workoutplanner.PlanRequest) { r.Profile.WeightKg = 900 }, "profile.weight_kg"},
		{"experience", func(r *workoutplanner.PlanRequest) { r.Profile.Experience = "guru" }, "profile.experience"},
		{"history id", func(r *workoutplanner.PlanRequest) { r.History[0].ExerciseID = "" }, "history[0].exercise_id"},
		{"history date", func(r *workoutplanner.PlanRequest) { r.History[0].Date = "yesterday" }, "history[0].date"},
		{"history sets", func(r *workoutplanner.PlanRequest) { r.History[0].Sets = 500 }, "history[0].sets"},
		{"history reps", func(r *workoutplanner.PlanRequest) { r.History[0].BestReps = -1 }, "history[0].best_reps"},
		{"history weight", func(r *workoutplanner.PlanRequest) { r.History[0].BestWeightKg = 5000 }, "history[0].best_weight_kg"},
		{"empty catalogue", func(r *workoutplanner.PlanRequest) { r.Catalogue = nil }, "catalogue"},
		{"duplicate id", func(r *workoutplanner.PlanRequest) { r.Catalogue[1].ID = r.Catalogue[0].ID }, "catalogue[1].id"},
		{"unknown equipment", func(r *workoutplanner.PlanRequest) { r.Catalogue[1].Equipment = "trampoline" }, "catalogue[1].equipment"},
		{"nothing usable", func(r *workoutplanner.PlanRequest) { r.Catalogue = r.Catalogue[1:] }, "catalogue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := validRequest()
			tc.mutate(&r)
			err := r.Validate()
			var fe *workoutplanner.FieldError
			if !errors.Is(err, workoutplanner.ErrInvalidRequest) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate = %v, want an invalid request naming %s", err, tc.field)
			}
		})
	}
}
