package workoutplanner

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

// ErrInvalidRequest and ErrInvalidResponse are wrapped by every refusal
// of a request (Validate) and of an answer (the response checks): the same
// errors as every typed client's, see integrations.FieldError.
var (
	ErrInvalidRequest  = integrations.ErrInvalidRequest
	ErrInvalidResponse = integrations.ErrInvalidResponse
)

// FieldError names the field that broke a rule and the value it had.
type FieldError = integrations.FieldError

func badRequest(field string, value any, rule string) error {
	return integrations.BadRequest(Name, field, value, rule)
}

func badResponse(field string, value any, rule string) error {
	return integrations.BadResponse(Name, field, value, rule)
}

// Ranges of the contract, shared by the client's validation and the
// simulator in internal/devstack so both keep the same rules.
const (
	MinDaysPerWeek, MaxDaysPerWeek       = 1, 7
	MinSessionMinutes, MaxSessionMinutes = 15, 180
	MaxNotesChars                        = 500
	MaxCatalogue                         = 1000
	MaxHistory                           = 1000

	MinExercisesPerDay, MaxExercisesPerDay = 1, 12
	MinSetsPerExercise, MaxSetsPerExercise = 1, 10
	MaxReps                                = 100
	MaxWeightKg                            = 500
	MaxDurationSeconds                     = 7200
	MaxDistanceM                           = 50000
	MaxRestSeconds                         = 600

	// SecondsPerRep and SetupSecondsPerExercise are how a day's time is
	// estimated (EstimateDay); a day may take up to SessionSlack times the
	// session length, since the estimate is rough.
	SecondsPerRep           = 4
	SetupSecondsPerExercise = 60
	SessionSlack            = 1.2
)

// Validate checks the request against the contract, so a caller learns of a
// bad request before spending a call on it; the error names the field.
func (r PlanRequest) Validate() error {
	if !slices.Contains(Goals, r.Goal) {
		return badRequest("goal", r.Goal, "one of "+strings.Join(Goals, ", "))
	}
	if r.DaysPerWeek < MinDaysPerWeek || r.DaysPerWeek > MaxDaysPerWeek {
		return badRequest("days_per_week", r.DaysPerWeek, fmt.Sprintf("%d..%d", MinDaysPerWeek, MaxDaysPerWeek))
	}
	if r.SessionMinutes < MinSessionMinutes || r.SessionMinutes > MaxSessionMinutes {
		return badRequest("session_minutes", r.SessionMinutes, fmt.Sprintf("%d..%d", MinSessionMinutes, MaxSessionMinutes))
	}
	for i, e := range r.Equipment {
		if !slices.Contains(Equipment, e) {
			return badRequest(fmt.Sprintf("equipment[%d]", i), e, "one of "+strings.Join(Equipment, ", "))
		}
	}
	if n := utf8.RuneCountInString(r.Notes); n > MaxNotesChars {
		return badRequest("notes", fmt.Sprintf("%d characters", n), fmt.Sprintf("at most %d characters", MaxNotesChars))
	}
	if err := r.Profile.validate(); err != nil {
		return err
	}
	if len(r.History) > MaxHistory {
		return badRequest("history", fmt.Sprintf("%d entries", len(r.History)), fmt.Sprintf("at most %d entries", MaxHistory))
	}
	for i, h := range r.History {
		if err := h.validate(fmt.Sprintf("history[%d]", i)); err != nil {
			return err
		}
	}
	if len(r.Catalogue) == 0 || len(r.Catalogue) > MaxCatalogue {
		return badRequest("catalogue", fmt.Sprintf("%d exercises", len(r.Catalogue)), fmt.Sprintf("1..%d exercises", MaxCatalogue))
	}
	seen := make(map[string]bool, len(r.Catalogue))
	usable := 0
	for i, e := range r.Catalogue {
		field := fmt.Sprintf("catalogue[%d]", i)
		if e.ID == "" || seen[e.ID] {
			return badRequest(field+".id", e.ID, "a non-empty id unique in the catalogue")
		}
		seen[e.ID] = true
		if !slices.Contains(Equipment, e.Equipment) {
			return badRequest(field+".equipment", e.Equipment, "one of "+strings.Join(Equipment, ", "))
		}
		if r.Available(e.Equipment) {
			usable++
		}
	}
	if usable == 0 {
		return badRequest("catalogue", fmt.Sprintf("%d exercises", len(r.Catalogue)),
			"at least one exercise whose equipment is in equipment or is bodyweight")
	}
	return nil
}

func (p Profile) validate() error {
	if p.Sex != "" && !slices.Contains([]string{SexFemale, SexMale, SexOther, SexUnspecified}, p.Sex) {
		return badRequest("profile.sex", p.Sex, "female, male, other or unspecified")
	}
	if p.Age != 0 && (p.Age < 13 || p.Age > 100) {
		return badRequest("profile.age", p.Age, "13..100 or 0 for unknown")
	}
	if p.HeightCm != 0 && (p.HeightCm < 100 || p.HeightCm > 250) {
		return badRequest("profile.height_cm", p.HeightCm, "100..250 or 0 for unknown")
	}
	if p.WeightKg != 0 && (p.WeightKg < 30 || p.WeightKg > 300) {
		return badRequest("profile.weight_kg", p.WeightKg, "30..300 or 0 for unknown")
	}
	if p.Experience != "" && !slices.Contains([]string{ExperienceBeginner, ExperienceIntermediate, ExperienceAdvanced}, p.Experience) {
		return badRequest("profile.experience", p.Experience, "beginner, intermediate or advanced")
	}
	return nil
}

func (h HistoryEntry) validate(field string) error {
	if h.ExerciseID == "" {
		return badRequest(field+".exercise_id", h.ExerciseID, "a catalogue id")
	}
	if _, err := time.Parse(time.DateOnly, h.Date); err != nil {
		return badRequest(field+".date", h.Date, "a date as YYYY-MM-DD")
	}
	if h.Sets < 0 || h.Sets > 100 {
		return badRequest(field+".sets", h.Sets, "0..100")
	}
	if h.BestReps < 0 || h.BestReps > MaxReps {
		return badRequest(field+".best_reps", h.BestReps, fmt.Sprintf("0..%d", MaxReps))
	}
	if h.BestWeightKg < 0 || h.BestWeightKg > MaxWeightKg {
		return badRequest(field+".best_weight_kg", h.BestWeightKg, fmt.Sprintf("0..%d", MaxWeightKg))
	}
	return nil
}

// Available reports whether the request lets the planner use equipment;
// bodyweight is always available.
func (r PlanRequest) Available(equipment string) bool {
	return equipment == EquipmentBodyweight || slices.Contains(r.Equipment, equipment)
}

// EstimateDay is the time a day is expected to take: every set's work
// (its duration, or SecondsPerRep per repetition) and rest, plus
// SetupSecondsPerExercise per exercise.
func EstimateDay(d Day) time.Duration {
	seconds := 0
	for _, e := range d.Exercises {
		seconds += SetupSecondsPerExercise
		for _, s := range e.Sets {
			seconds += setSeconds(s)
		}
	}
	return time.Duration(seconds) * time.Second
}

func setSeconds(s Set) int {
	work := s.DurationSeconds
	if work == 0 {
		work = s.Reps * SecondsPerRep
	}
	return work + s.RestSeconds
}

// ValidatePlan checks a plan the planner answered for req against the
// contract's rules; the error wraps ErrInvalidResponse and names the first
// field that broke one.
func ValidatePlan(req PlanRequest, p *Plan) error {
	if p == nil {
		return badResponse("plan", nil, "a plan object")
	}
	if !strings.HasPrefix(p.PlanID, "wp_") || len(p.PlanID) > 128 {
		return badResponse("plan_id", p.PlanID, `"wp_" followed by an id, at most 128 characters`)
	}
	if len(p.Days) != req.DaysPerWeek {
		return badResponse("days", fmt.Sprintf("%d days", len(p.Days)), fmt.Sprintf("%d days (days_per_week)", req.DaysPerWeek))
	}
	catalogue := make(map[string]CatalogueExercise, len(req.Catalogue))
	for _, e := range req.Catalogue {
		catalogue[e.ID] = e
	}
	limit := time.Duration(float64(req.SessionMinutes)*SessionSlack) * time.Minute
	for i, d := range p.Days {
		field := fmt.Sprintf("days[%d]", i)
		if d.DayIndex != i {
			return badResponse(field+".day_index", d.DayIndex, fmt.Sprint(i))
		}
		if n := len(d.Exercises); n < MinExercisesPerDay || n > MaxExercisesPerDay {
			return badResponse(field+".exercises", fmt.Sprintf("%d exercises", n), fmt.Sprintf("%d..%d exercises", MinExercisesPerDay, MaxExercisesPerDay))
		}
		for j, e := range d.Exercises {
			if err := validateExercise(fmt.Sprintf("%s.exercises[%d]", field, j), req, catalogue, e); err != nil {
				return err
			}
		}
		if est := EstimateDay(d); est > limit {
			return badResponse(field, fmt.Sprintf("an estimated %v", est), fmt.Sprintf("at most %v (session_minutes × %.1f)", limit, SessionSlack))
		}
	}
	return nil
}

func validateExercise(field string, req PlanRequest, catalogue map[string]CatalogueExercise, e Exercise) error {
	ce, ok := catalogue[e.ExerciseID]
	if !ok {
		return badResponse(field+".exercise_id", e.ExerciseID, "an id from the request's catalogue")
	}
	if !req.Available(ce.Equipment) {
		return badResponse(field+".exercise_id", e.ExerciseID,
			fmt.Sprintf("an exercise with available equipment (it needs %s)", ce.Equipment))
	}
	if n := len(e.Sets); n < MinSetsPerExercise || n > MaxSetsPerExercise {
		return badResponse(field+".sets", fmt.Sprintf("%d sets", n), fmt.Sprintf("%d..%d sets", MinSetsPerExercise, MaxSetsPerExercise))
	}
	for k, s := range e.Sets {
		sf := fmt.Sprintf("%s.sets[%d]", field, k)
		switch {
		case s.Reps < 0 || s.Reps > MaxReps:
			return badResponse(sf+".reps", s.Reps, fmt.Sprintf("0..%d", MaxReps))
		case !(s.WeightKg >= 0 && s.WeightKg <= MaxWeightKg):
			return badResponse(sf+".weight_kg", s.WeightKg, fmt.Sprintf("0..%d", MaxWeightKg))
		case s.DurationSeconds < 0 || s.DurationSeconds > MaxDurationSeconds:
			return badResponse(sf+".duration_seconds", s.DurationSeconds, fmt.Sprintf("0..%d", MaxDurationSeconds))
		case !(s.DistanceM >= 0 && s.DistanceM <= MaxDistanceM):
			return badResponse(sf+".distance_m", s.DistanceM, fmt.Sprintf("0..%d", MaxDistanceM))
		case s.RestSeconds < 0 || s.RestSeconds > MaxRestSeconds:
			return badResponse(sf+".rest_seconds", s.RestSeconds, fmt.Sprintf("0..%d", MaxRestSeconds))
		case s.Reps == 0 && s.DurationSeconds == 0:
			return badResponse(sf, "no reps and no duration", "reps > 0 or duration_seconds > 0")
		}
	}
	return nil
}
