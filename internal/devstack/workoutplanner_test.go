package devstack_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/devstack"
	wp "github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
)

// testCatalogue is a gym's exercise list like the seeded one: every kind of
// equipment and the muscle groups of a full split.
var testCatalogue = []wp.CatalogueExercise{
	{ID: "ex_bench_press", Name: "Bench press", Equipment: "barbell", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_overhead_press", Name: "Overhead press", Equipment: "barbell", MuscleGroups: []string{"shoulders", "triceps"}},
	{ID: "ex_back_squat", Name: "Back squat", Equipment: "barbell", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_deadlift", Name: "Deadlift", Equipment: "barbell", MuscleGroups: []string{"hamstrings", "glutes", "back"}},
	{ID: "ex_barbell_row", Name: "Barbell row", Equipment: "barbell", MuscleGroups: []string{"back", "biceps"}},
	{ID: "ex_db_press", Name: "Dumbbell press", Equipment: "dumbbell", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_db_row", Name: "One-arm dumbbell row", Equipment: "dumbbell", MuscleGroups: []string{"back", "biceps"}},
	{ID: "ex_db_curl", Name: "Dumbbell curl", Equipment: "dumbbell", MuscleGroups: []string{"biceps"}},
	{ID: "ex_db_lateral", Name: "Lateral raise", Equipment: "dumbbell", MuscleGroups: []string{"shoulders"}},
	{ID: "ex_goblet_squat", Name: "Goblet squat", Equipment: "dumbbell", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_db_rdl", Name: "Dumbbell Romanian deadlift", Equipment: "dumbbell", MuscleGroups: []string{"hamstrings", "glutes"}},
	{ID: "ex_chest_press", Name: "Machine chest press", Equipment: "chest_press", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_leg_press", Name: "Leg press", Equipment: "leg_press", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_cable_row", Name: "Seated cable row", Equipment: "cable", MuscleGroups: []string{"back", "biceps"}},
	{ID: "ex_lat_pulldown", Name: "Lat pulldown", Equipment: "cable", MuscleGroups: []string{"lats", "biceps"}},
	{ID: "ex_triceps_pushdown", Name: "Triceps pushdown", Equipment: "cable", MuscleGroups: []string{"triceps"}},
	{ID: "ex_face_pull", Name: "Face pull", Equipment: "cable", MuscleGroups: []string{"rear_delts", "traps"}},
	{ID: "ex_kb_swing", Name: "Kettlebell swing", Equipment: "kettlebell", MuscleGroups: []string{"glutes", "hamstrings"}},
	{ID: "ex_push_up", Name: "Push-up", Equipment: "bodyweight", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_pull_up", Name: "Pull-up", Equipment: "bodyweight", MuscleGroups: []string{"lats", "biceps"}},
	{ID: "ex_air_squat", Name: "Air squat", Equipment: "bodyweight", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_lunge", Name: "Walking lunge", Equipment: "bodyweight", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_plank", Name: "Plank", Equipment: "bodyweight", MuscleGroups: []string{"core"}},
	{ID: "ex_crunch", Name: "Crunch", Equipment: "bodyweight", MuscleGroups: []string{"abs"}},
	{ID: "ex_burpee", Name: "Burpee", Equipment: "bodyweight", MuscleGroups: []string{"cardio", "full_body"}},
	{ID: "ex_treadmill_run", Name: "Treadmill run", Equipment: "treadmill", MuscleGroups: []string{"cardio"}},
	{ID: "ex_bike", Name: "Stationary bike", Equipment: "bike", MuscleGroups: []string{"cardio", "quads"}},
	{ID: "ex_rower", Name: "Rowing machine", Equipment: "rower", MuscleGroups: []string{"cardio", "back"}},
}

var fullGym = []string{"treadmill", "bike", "rower", "chest_press", "leg_press", "cable", "dumbbell", "barbell", "kettlebell"}

func startWorkoutPlanner(t *testing.T) *devstack.WorkoutPlanner {
	t.Helper()
	s, err := devstack.StartWorkoutPlanner(testLogger(t))
	if err != nil {
		t.Fatalf("StartWorkoutPlanner: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func planRequest(goal string, days, minutes int, equipment []string) wp.PlanRequest {
	return wp.PlanRequest{
		Goal: goal, DaysPerWeek: days, SessionMinutes: minutes, Equipment: equipment,
		Profile:   wp.Profile{Sex: "female", Age: 34, HeightCm: 170, WeightKg: 65, Experience: "intermediate"},
		Catalogue: testCatalogue,
	}
}

// requestPlan posts req and decodes a 200 into a plan.
func requestPlan(t *testing.T, s *devstack.WorkoutPlanner, key string, req wp.PlanRequest) (*wp.Plan, simAnswer) {
	t.Helper()
	a := callSim(t, http.MethodPost, s.URL()+"/v1/plans", s.APIKey(), key, req)
	if a.status != http.StatusOK {
		return nil, a
	}
	var p wp.Plan
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("decode plan: %v: %s", err, a.body)
	}
	return &p, a
}

func catalogueEntry(id string) wp.CatalogueExercise {
	i := slices.IndexFunc(testCatalogue, func(e wp.CatalogueExercise) bool { return e.ID == id })
	return testCatalogue[i]
}

func isCardioMachine(id string) bool {
	return slices.Contains(wp.CardioEquipment, catalogueEntry(id).Equipment)
}

// isCardio counts bodyweight conditioning (burpees) as cardio too.
func isCardio(id string) bool {
	return isCardioMachine(id) || catalogueEntry(id).MuscleGroups[0] == "cardio"
}

// TestWorkoutPlanner checks that every plan keeps the contract's rules and
// is shaped by the request.
func TestWorkoutPlanner(t *testing.T) {
	s := startWorkoutPlanner(t)

	t.Run("Rules", func(t *testing.T) {
		equipmentSets := map[string][]string{
			"full gym": fullGym, "dumbbells": {"dumbbell"}, "bodyweight": nil, "cardio": {"treadmill", "rower"},
		}
		n := 0
		for _, goal := range wp.Goals {
			for days := wp.MinDaysPerWeek; days <= wp.MaxDaysPerWeek; days++ {
				for name, equipment := range equipmentSets {
					for _, minutes := range []int{15, 45, 180} {
						req := planRequest(goal, days, minutes, equipment)
						n++
						p, a := requestPlan(t, s, fmt.Sprint("rules-", n), req)
						if p == nil {
							t.Fatalf("%s %d days %s %d min: %d %s", goal, days, name, minutes, a.status, a.body)
						}
						if err := wp.ValidatePlan(req, p); err != nil {
							t.Fatalf("%s %d days %s %d min: %v", goal, days, name, minutes, err)
						}
						for _, d := range p.Days {
							for _, e := range d.Exercises {
								if eq := catalogueEntry(e.ExerciseID).Equipment; eq != "bodyweight" && !slices.Contains(equipment, eq) {
									t.Fatalf("%s plan with %s uses %s (%s)", goal, name, e.ExerciseID, eq)
								}
							}
						}
					}
				}
			}
		}
	})

	t.Run("GoalShapesSets", func(t *testing.T) {
		for goal, reps := range map[string][2]int{
			wp.GoalStrength: {3, 6}, wp.GoalHypertrophy: {8, 12}, wp.GoalEndurance: {15, 20},
		} {
			p, a := requestPlan(t, s, "goal-"+goal, planRequest(goal, 3, 60, fullGym))
			if p == nil {
				t.Fatalf("%s: %d %s", goal, a.status, a.body)
			}
			cardio := 0
			for _, d := range p.Days {
				for _, e := range d.Exercises {
					if isCardio(e.ExerciseID) {
						if isCardioMachine(e.ExerciseID) {
							cardio++
						}
						if goal == wp.GoalStrength {
							t.Errorf("strength plan with free weights available prescribes cardio %s", e.ExerciseID)
						}
						continue
					}
					for _, set := range e.Sets {
						if set.Reps < reps[0] || set.Reps > reps[1] {
							t.Errorf("%s: %s has a set of %d reps, want %d..%d", goal, e.ExerciseID, set.Reps, reps[0], reps[1])
						}
					}
				}
			}
			if goal == wp.GoalEndurance && cardio == 0 {
				t.Errorf("endurance plan has no cardio machine work: %+v", p)
			}
		}

		// Weight loss: cardio intervals and circuits every day.
		p, a := requestPlan(t, s, "goal-loss", planRequest(wp.GoalWeightLoss, 4, 45, fullGym))
		if p == nil {
			t.Fatalf("weight loss: %d %s", a.status, a.body)
		}
		for _, d := range p.Days {
			intervals := false
			for _, e := range d.Exercises {
				if isCardioMachine(e.ExerciseID) && len(e.Sets) > 1 && e.Sets[0].DurationSeconds > 0 && e.Sets[0].DurationSeconds <= 120 {
					intervals = true
				}
				if !isCardio(e.ExerciseID) && e.Sets[0].RestSeconds > 30 {
					t.Errorf("weight loss day %d: %s rests %d s, want circuit rests of at most 30 s", d.DayIndex, e.ExerciseID, e.Sets[0].RestSeconds)
				}
			}
			if !intervals {
				t.Errorf("weight loss day %d has no cardio intervals: %+v", d.DayIndex, d)
			}
		}
	})

	t.Run("SplitAndSessionLength", func(t *testing.T) {
		p, _ := requestPlan(t, s, "split", planRequest(wp.GoalHypertrophy, 3, 60, fullGym))
		if p == nil || p.Days[0].Title != "Push" || p.Days[1].Title != "Pull" || p.Days[2].Title != "Legs" {
			t.Fatalf("3-day hypertrophy plan is not push/pull/legs: %+v", p)
		}
		for _, e := range p.Days[2].Exercises {
			if g := catalogueEntry(e.ExerciseID).MuscleGroups[0]; !slices.Contains([]string{"quads", "hamstrings", "glutes", "core", "abs"}, g) {
				t.Errorf("legs day has %s (%s)", e.ExerciseID, g)
			}
		}
		sets := func(minutes int) int {
			p, a := requestPlan(t, s, fmt.Sprint("len-", minutes), planRequest(wp.GoalHypertrophy, 1, minutes, fullGym))
			if p == nil {
				t.Fatalf("%d min: %d %s", minutes, a.status, a.body)
			}
			n := 0
			for _, e := range p.Days[0].Exercises {
				n += len(e.Sets)
			}
			return n
		}
		if short, long := sets(30), sets(120); short >= long {
			t.Fatalf("a 30-minute session has %d sets and a 120-minute one %d, want more in the longer one", short, long)
		}
	})

	t.Run("WeightsFromHistoryOrProfile", func(t *testing.T) {
		benchWeight := func(req wp.PlanRequest, key string) float64 {
			p, a := requestPlan(t, s, key, req)
			if p == nil {
				t.Fatalf("%d %s", a.status, a.body)
			}
			for _, d := range p.Days {
				for _, e := range d.Exercises {
					if e.ExerciseID == "ex_bench_press" {
						return e.Sets[0].WeightKg
					}
				}
			}
			t.Fatalf("no bench press in %+v", p)
			return 0
		}
		req := planRequest(wp.GoalStrength, 1, 60, []string{"barbell"})
		req.Catalogue = []wp.CatalogueExercise{catalogueEntry("ex_bench_press"), catalogueEntry("ex_back_squat")}
		fromProfile := benchWeight(req, "w1")
		// 65 kg intermediate: one-rep max about 0.9 × 65 = 58.5 kg.
		if fromProfile < 30 || fromProfile > 58.5 {
			t.Fatalf("bench press from the profile = %v kg, want a share of about 58 kg", fromProfile)
		}
		req.History = []wp.HistoryEntry{{ExerciseID: "ex_bench_press", Date: "2026-11-20", Sets: 4, BestReps: 5, BestWeightKg: 100}}
		fromHistory := benchWeight(req, "w2")
		// 100 kg × 5: one-rep max about 117 kg; 3–6 reps at up to 85%.
		if fromHistory < 80 || fromHistory > 100 {
			t.Fatalf("bench press after 100 kg × 5 = %v kg, want 80..100", fromHistory)
		}
	})

	t.Run("Deterministic", func(t *testing.T) {
		req := planRequest(wp.GoalGeneralFitness, 4, 50, fullGym)
		_, a1 := requestPlan(t, s, "det-1", req)
		_, a2 := requestPlan(t, s, "det-2", req)
		if a1.status != http.StatusOK || !bytes.Equal(a1.body, a2.body) {
			t.Fatalf("the same request under two keys gave different plans:\n%s\n%s", a1.body, a2.body)
		}
		req.Profile.WeightKg = 90
		if _, a3 := requestPlan(t, s, "det-3", req); bytes.Equal(a1.body, a3.body) {
			t.Fatalf("a heavier member got the same plan")
		}
	})

	t.Run("InvalidRequest", func(t *testing.T) {
		for field, mutate := range map[string]func(*wp.PlanRequest){
			"days_per_week":   func(r *wp.PlanRequest) { r.DaysPerWeek = 9 },
			"session_minutes": func(r *wp.PlanRequest) { r.SessionMinutes = 5 },
			"goal":            func(r *wp.PlanRequest) { r.Goal = "bulk" },
			"equipment[0]":    func(r *wp.PlanRequest) { r.Equipment = []string{"smith_machine"} },
			"notes":           func(r *wp.PlanRequest) { r.Notes = strings.Repeat("n", 501) },
			"profile.age":     func(r *wp.PlanRequest) { r.Profile.Age = 7 },
			"catalogue":       func(r *wp.PlanRequest) { r.Catalogue = nil },
		} {
			req := planRequest(wp.GoalStrength, 3, 60, fullGym)
			mutate(&req)
			if err := req.Validate(); !errors.Is(err, wp.ErrInvalidRequest) || !strings.Contains(err.Error(), field) {
				t.Errorf("Validate with a bad %s = %v", field, err)
			}
			_, a := requestPlan(t, s, "bad-"+field, req)
			if a.status != http.StatusBadRequest || a.errorCode() != "invalid_request" || !strings.Contains(a.errorMessage(), field) {
				t.Errorf("bad %s: %d %s, want 400 invalid_request naming the field", field, a.status, a.body)
			}
		}
		a := callSim(t, http.MethodPost, s.URL()+"/v1/plans", s.APIKey(), "bad-json", []byte(`{"goal":`))
		if a.status != http.StatusBadRequest || a.errorCode() != "invalid_request" {
			t.Errorf("malformed JSON: %d %s", a.status, a.body)
		}
	})

	t.Run("Absurd", func(t *testing.T) {
		s := startWorkoutPlanner(t)
		s.SetKnobs(devstack.SimKnobs{Absurd: true})
		req := planRequest(wp.GoalStrength, 2, 60, fullGym)
		p, a := requestPlan(t, s, "absurd", req)
		if p == nil {
			t.Fatalf("absurd knob: %d %s, want 200", a.status, a.body)
		}
		err := wp.ValidatePlan(req, p)
		var fe *wp.FieldError
		if !errors.Is(err, wp.ErrInvalidResponse) || !errors.As(err, &fe) || !strings.HasSuffix(fe.Field, ".reps") || fe.Value != 400 {
			t.Fatalf("ValidatePlan of an absurd plan = %v, want ErrInvalidResponse naming reps = 400", err)
		}
	})
}
