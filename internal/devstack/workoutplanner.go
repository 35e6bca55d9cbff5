package devstack

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	wp "github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
)

// WorkoutPlanner simulates the outside workout planning service
// (POST /v1/plans, docs/integrations.md). Its plans follow the request's
// goal, days, session length and equipment, use only catalogue exercises,
// and are the same for the same request.
type WorkoutPlanner struct {
	*simulator
}

// StartWorkoutPlanner starts the simulator on a free loopback port.
func StartWorkoutPlanner(logger *slog.Logger) (*WorkoutPlanner, error) {
	sim, err := startSimulator(wp.Name, logger, map[string]simHandler{
		"POST /v1/plans": handleWorkoutPlan,
	})
	if err != nil {
		return nil, err
	}
	return &WorkoutPlanner{sim}, nil
}

// simPlannerModel is the model name the simulator reports.
const simPlannerModel = "sim-planner-1"

func handleWorkoutPlan(_ context.Context, body []byte, absurd bool) (any, *apiError) {
	var req wp.PlanRequest
	if e := decodeStrict(body, &req); e != nil {
		return nil, e
	}
	if err := req.Validate(); err != nil {
		return nil, invalidRequest("%s", fieldErrorDetail(err))
	}
	plan, err := planWorkout(req)
	if err != nil {
		return nil, invalidRequest("%v", err)
	}
	if absurd {
		makeAbsurdPlan(plan)
	}
	return plan, nil
}

// makeAbsurdPlan turns a plan into one no person could do, for tests of the
// client's validation.
func makeAbsurdPlan(p *wp.Plan) {
	for i := range p.Days {
		for j := range p.Days[i].Exercises {
			for k := range p.Days[i].Exercises[j].Sets {
				p.Days[i].Exercises[j].Sets[k].Reps = 400
				p.Days[i].Exercises[j].Sets[k].WeightKg = 2500
			}
		}
	}
}

// Muscle groups by the part of a split they belong to. The catalogue is
// ours, so these are the names it uses; an exercise belongs to a focus by
// its first (primary) muscle group.
var (
	pushGroups  = []string{"chest", "shoulders", "triceps", "front_delts"}
	pullGroups  = []string{"back", "lats", "biceps", "rear_delts", "traps", "upper_back", "forearms"}
	legGroups   = []string{"quads", "quadriceps", "hamstrings", "glutes", "calves", "legs", "adductors", "abductors", "hips"}
	coreGroups  = []string{"core", "abs", "obliques", "lower_back"}
	cardioGroup = []string{"cardio", "conditioning", "full_body"}
)

// dayFocus is what one day of a split trains.
type dayFocus struct {
	title  string
	groups []string // nil: any group
	cardio bool     // the day is mostly cardio
}

var (
	focusFull   = dayFocus{title: "Full body"}
	focusUpper  = dayFocus{title: "Upper body", groups: slices.Concat(pushGroups, pullGroups)}
	focusLower  = dayFocus{title: "Lower body", groups: slices.Concat(legGroups, coreGroups)}
	focusPush   = dayFocus{title: "Push", groups: pushGroups}
	focusPull   = dayFocus{title: "Pull", groups: pullGroups}
	focusLegs   = dayFocus{title: "Legs", groups: slices.Concat(legGroups, coreGroups)}
	focusCardio = dayFocus{title: "Conditioning", groups: slices.Concat(cardioGroup, coreGroups), cardio: true}
)

// split returns the days of a week for a goal: resistance goals get the
// classic splits, cardio goals alternate full-body circuits with
// conditioning.
func split(goal string, days int) []dayFocus {
	switch goal {
	case wp.GoalEndurance, wp.GoalWeightLoss:
		out := make([]dayFocus, days)
		for i := range out {
			out[i] = focusFull
			if i%2 == 1 {
				out[i] = focusCardio
			}
		}
		return out
	}
	switch days {
	case 1:
		return []dayFocus{focusFull}
	case 2:
		return []dayFocus{focusUpper, focusLower}
	case 3:
		if goal == wp.GoalGeneralFitness {
			return []dayFocus{focusFull, focusFull, focusFull}
		}
		return []dayFocus{focusPush, focusPull, focusLegs}
	case 4:
		return []dayFocus{focusUpper, focusLower, focusUpper, focusLower}
	case 5:
		return []dayFocus{focusPush, focusPull, focusLegs, focusUpper, focusLower}
	case 6:
		return []dayFocus{focusPush, focusPull, focusLegs, focusPush, focusPull, focusLegs}
	default:
		return []dayFocus{focusPush, focusPull, focusLegs, focusPush, focusPull, focusLegs, focusCardio}
	}
}

// prescription is how a goal loads resistance exercises.
type prescription struct {
	sets      int
	reps      [2]int  // range; the planner picks within it per exercise
	rest      int     // seconds
	intensity float64 // share of the estimated one-repetition maximum
	cardio    bool    // the goal puts cardio into every day
}

var prescriptions = map[string]prescription{
	wp.GoalStrength:       {sets: 5, reps: [2]int{3, 6}, rest: 180, intensity: 0.85},
	wp.GoalHypertrophy:    {sets: 4, reps: [2]int{8, 12}, rest: 90, intensity: 0.70},
	wp.GoalEndurance:      {sets: 3, reps: [2]int{15, 20}, rest: 45, intensity: 0.55, cardio: true},
	wp.GoalWeightLoss:     {sets: 3, reps: [2]int{12, 15}, rest: 30, intensity: 0.55, cardio: true},
	wp.GoalGeneralFitness: {sets: 3, reps: [2]int{8, 12}, rest: 60, intensity: 0.65, cardio: true},
}

// planWorkout builds the plan for a valid request. The random source is
// seeded by the request, so the same request always gives the same plan.
func planWorkout(req wp.PlanRequest) (*wp.Plan, error) {
	canonical, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	rng := seedFrom(canonical)
	sum := sha256.Sum256(canonical)

	var usable []wp.CatalogueExercise
	for _, e := range req.Catalogue {
		if req.Available(e.Equipment) {
			usable = append(usable, e)
		}
	}
	if len(usable) == 0 {
		return nil, errors.New("catalogue: no exercise uses the available equipment")
	}
	history := bestLifts(req.History)
	rx := prescriptions[req.Goal]
	plan := &wp.Plan{
		PlanID: "wp_" + hex.EncodeToString(sum[:12]),
		Name:   fmt.Sprintf("%d-day %s", req.DaysPerWeek, strings.ReplaceAll(req.Goal, "_", " ")),
		Model:  simPlannerModel,
	}
	budget := req.SessionMinutes * 60
	for i, focus := range split(req.Goal, req.DaysPerWeek) {
		day := wp.Day{DayIndex: i, Title: focus.title}
		for _, e := range pickExercises(rng, usable, focus, rx) {
			ex, ok := prescribe(rng, req, e, focus, rx, history, budget-secondsOf(day))
			if !ok {
				// The session is full; topping it up with a stray set of
				// whatever still fits is not how a coach plans.
				if len(day.Exercises) > 0 {
					break
				}
				continue
			}
			day.Exercises = append(day.Exercises, ex)
			if len(day.Exercises) == wp.MaxExercisesPerDay {
				break
			}
		}
		if len(day.Exercises) == 0 {
			return nil, fmt.Errorf("session_minutes: %d minutes fit no exercise", req.SessionMinutes)
		}
		plan.Days = append(plan.Days, day)
	}
	return plan, nil
}

func secondsOf(d wp.Day) int { return int(wp.EstimateDay(d).Seconds()) }

func isCardio(e wp.CatalogueExercise) bool {
	if slices.Contains(wp.CardioEquipment, e.Equipment) {
		return true
	}
	return len(e.MuscleGroups) > 0 && slices.Contains(cardioGroup, e.MuscleGroups[0])
}

// pickExercises orders the usable exercises for a day: a cardio piece first
// when the goal or day wants one, then exercises of the day's focus in a
// shuffled order, then the rest as fillers in case the focus has too few.
func pickExercises(rng *rand.Rand, usable []wp.CatalogueExercise, focus dayFocus, rx prescription) []wp.CatalogueExercise {
	shuffled := slices.Clone(usable)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	var cardio, inFocus, rest []wp.CatalogueExercise
	for _, e := range shuffled {
		primary := ""
		if len(e.MuscleGroups) > 0 {
			primary = e.MuscleGroups[0]
		}
		switch {
		case isCardio(e):
			cardio = append(cardio, e)
		case focus.groups == nil || slices.Contains(focus.groups, primary):
			inFocus = append(inFocus, e)
		default:
			rest = append(rest, e)
		}
	}
	// A coach puts heavy compound lifts first, isolation after, core last;
	// the shuffle only varies the choice within each rank.
	slices.SortStableFunc(inFocus, func(a, b wp.CatalogueExercise) int { return cmp.Compare(liftRank(a), liftRank(b)) })
	slices.SortStableFunc(rest, func(a, b wp.CatalogueExercise) int { return cmp.Compare(liftRank(a), liftRank(b)) })
	// Machines are what the contract means by cardio; bodyweight
	// conditioning (burpees) comes after them.
	slices.SortStableFunc(cardio, func(a, b wp.CatalogueExercise) int {
		return cmp.Compare(machineRank(a), machineRank(b))
	})
	var out []wp.CatalogueExercise
	switch {
	case focus.cardio:
		// A conditioning day: two cardio pieces if there are machines, then
		// core and circuits.
		out = append(out, cardio[:min(2, len(cardio))]...)
	case rx.cardio && len(cardio) > 0:
		out = append(out, cardio[0])
	}
	out = append(out, inFocus...)
	out = append(out, rest...)
	// A strength or hypertrophy day falls back on cardio only when nothing
	// else is usable.
	if !focus.cardio && !rx.cardio && len(out) == 0 {
		out = append(out, cardio...)
	}
	return out
}

// liftRank orders resistance exercises: barbell lifts, other compound
// lifts, isolation, core.
func liftRank(e wp.CatalogueExercise) int {
	switch {
	case len(e.MuscleGroups) > 0 && slices.Contains(coreGroups, e.MuscleGroups[0]):
		return 3
	case e.Equipment == wp.EquipmentBarbell:
		return 0
	case len(e.MuscleGroups) > 1:
		return 1
	}
	return 2
}

func machineRank(e wp.CatalogueExercise) int {
	if slices.Contains(wp.CardioEquipment, e.Equipment) {
		return 0
	}
	return 1
}

// prescribe sets the sets of one exercise within the seconds left of the
// session; ok is false when not even one set fits.
func prescribe(rng *rand.Rand, req wp.PlanRequest, e wp.CatalogueExercise, focus dayFocus, rx prescription,
	history map[string]wp.HistoryEntry, secondsLeft int) (wp.Exercise, bool) {
	ex := wp.Exercise{ExerciseID: e.ID}
	var set wp.Set
	sets := rx.sets
	if isCardio(e) {
		set, sets = cardioSet(req, e, focus, rx)
	} else {
		reps := rx.reps[0] + rng.IntN(rx.reps[1]-rx.reps[0]+1)
		set = wp.Set{Reps: reps, WeightKg: workingWeight(req, e, rx, reps, history), RestSeconds: rx.rest}
		if focus.cardio || req.Goal == wp.GoalWeightLoss {
			// Circuits: short rests between stations.
			set.RestSeconds = 30
		}
	}
	perSet := set.RestSeconds + cmp.Or(set.DurationSeconds, set.Reps*wp.SecondsPerRep)
	fit := (secondsLeft - wp.SetupSecondsPerExercise) / perSet
	if fit < 1 && set.DurationSeconds > 0 && sets == 1 {
		// Shorten a steady cardio piece to what is left rather than drop it.
		set.DurationSeconds = secondsLeft - wp.SetupSecondsPerExercise - set.RestSeconds
		set.DistanceM = math.Round(set.DistanceM*float64(set.DurationSeconds)/float64(perSet-set.RestSeconds)/10) * 10
		if set.DurationSeconds < 120 {
			return ex, false
		}
		fit = 1
	}
	sets = min(sets, fit, wp.MaxSetsPerExercise)
	if sets < 1 {
		return ex, false
	}
	for range sets {
		ex.Sets = append(ex.Sets, set)
	}
	return ex, true
}

// cardioSet is the cardio piece for a goal: intervals for weight loss,
// steady work otherwise, with the distance a person of that experience
// covers on that machine.
func cardioSet(req wp.PlanRequest, e wp.CatalogueExercise, focus dayFocus, rx prescription) (wp.Set, int) {
	speed := map[string]float64{wp.EquipmentTreadmill: 2.5, wp.EquipmentBike: 6.5, wp.EquipmentRower: 3.6}[e.Equipment]
	switch req.Profile.Experience {
	case wp.ExperienceIntermediate:
		speed *= 1.15
	case wp.ExperienceAdvanced:
		speed *= 1.3
	}
	if req.Goal == wp.GoalWeightLoss {
		work := 60
		return wp.Set{DurationSeconds: work, DistanceM: math.Round(speed*1.2*float64(work)/10) * 10, RestSeconds: 60}, 8
	}
	minutes := 10
	if focus.cardio || req.Goal == wp.GoalEndurance {
		minutes = 20
	}
	d := minutes * 60
	return wp.Set{DurationSeconds: d, DistanceM: math.Round(speed*float64(d)/10) * 10}, 1
}

// bestLifts keeps, per exercise, the history entry with the highest
// estimated one-repetition maximum.
func bestLifts(history []wp.HistoryEntry) map[string]wp.HistoryEntry {
	best := map[string]wp.HistoryEntry{}
	for _, h := range history {
		if prev, ok := best[h.ExerciseID]; !ok || oneRepMax(h.BestWeightKg, h.BestReps) > oneRepMax(prev.BestWeightKg, prev.BestReps) {
			best[h.ExerciseID] = h
		}
	}
	return best
}

// oneRepMax is Epley's estimate of the weight a person lifts once from a
// set of reps at weight.
func oneRepMax(weight float64, reps int) float64 { return weight * (1 + float64(reps)/30) }

// Estimated one-repetition maximum as a share of body weight, by equipment,
// for beginner, intermediate and advanced lifters (common strength
// standards, rounded).
var bodyweightRatios = map[string][3]float64{
	wp.EquipmentBarbell:    {0.6, 0.9, 1.2},
	wp.EquipmentDumbbell:   {0.2, 0.3, 0.4},
	wp.EquipmentKettlebell: {0.25, 0.35, 0.45},
	wp.EquipmentChestPress: {0.5, 0.7, 0.9},
	wp.EquipmentLegPress:   {1.2, 1.8, 2.4},
	wp.EquipmentCable:      {0.3, 0.45, 0.6},
}

// workingWeight is the load of a set of reps: from the member's best lift of
// the exercise when known, else from body weight and experience; the
// goal's intensity is lowered for higher rep counts.
func workingWeight(req wp.PlanRequest, e wp.CatalogueExercise, rx prescription, reps int, history map[string]wp.HistoryEntry) float64 {
	if e.Equipment == wp.EquipmentBodyweight {
		return 0
	}
	var max1 float64
	if h, ok := history[e.ID]; ok && h.BestWeightKg > 0 {
		max1 = oneRepMax(h.BestWeightKg, h.BestReps)
	} else {
		ratios, ok := bodyweightRatios[e.Equipment]
		if !ok {
			return 0
		}
		level := 0
		switch req.Profile.Experience {
		case wp.ExperienceIntermediate:
			level = 1
		case wp.ExperienceAdvanced:
			level = 2
		}
		bw := req.Profile.WeightKg
		if bw == 0 {
			bw = 70
		}
		max1 = bw * ratios[level]
		if e.Equipment == wp.EquipmentBarbell && len(e.MuscleGroups) > 0 && slices.Contains(legGroups, e.MuscleGroups[0]) {
			// Squats and deadlifts move more than presses.
			max1 *= 1.4
		}
	}
	// Epley inverted: the share of the maximum a set of reps allows, capped
	// by the goal's intensity.
	share := min(rx.intensity, 1/(1+float64(reps)/30))
	w := math.Floor(max1*share/2.5) * 2.5
	return min(max(w, 2.5), wp.MaxWeightKg)
}
