// Package workoutplanner is the typed client of the outside workout planning
// service (POST /v1/plans). The wire contract is written down in
// docs/integrations.md; the types here are its JSON, and ValidatePlan checks
// every answer against the contract's rules before a caller may use it.
package workoutplanner

// Goals the planner accepts.
const (
	GoalStrength       = "strength"
	GoalHypertrophy    = "hypertrophy"
	GoalEndurance      = "endurance"
	GoalWeightLoss     = "weight_loss"
	GoalGeneralFitness = "general_fitness"
)

// Goals lists every goal, in the order the docs give them.
var Goals = []string{GoalStrength, GoalHypertrophy, GoalEndurance, GoalWeightLoss, GoalGeneralFitness}

// Equipment the planner knows. EquipmentBodyweight is always available, so a
// request does not need to list it.
const (
	EquipmentTreadmill  = "treadmill"
	EquipmentBike       = "bike"
	EquipmentRower      = "rower"
	EquipmentChestPress = "chest_press"
	EquipmentLegPress   = "leg_press"
	EquipmentCable      = "cable"
	EquipmentDumbbell   = "dumbbell"
	EquipmentBarbell    = "barbell"
	EquipmentBodyweight = "bodyweight"
	EquipmentKettlebell = "kettlebell"
)

// Equipment lists every kind of equipment the contract names.
var Equipment = []string{
	EquipmentTreadmill, EquipmentBike, EquipmentRower, EquipmentChestPress, EquipmentLegPress,
	EquipmentCable, EquipmentDumbbell, EquipmentBarbell, EquipmentBodyweight, EquipmentKettlebell,
}

// CardioEquipment is the equipment the planner prescribes by time and
// distance rather than by repetitions.
var CardioEquipment = []string{EquipmentTreadmill, EquipmentBike, EquipmentRower}

// Profile values.
const (
	SexFemale      = "female"
	SexMale        = "male"
	SexOther       = "other"
	SexUnspecified = "unspecified"

	ExperienceBeginner     = "beginner"
	ExperienceIntermediate = "intermediate"
	ExperienceAdvanced     = "advanced"
)

// PlanRequest is the body of POST /v1/plans.
type PlanRequest struct {
	Goal           string   `json:"goal"`
	DaysPerWeek    int      `json:"days_per_week"`   // 1..7
	SessionMinutes int      `json:"session_minutes"` // 15..180
	Equipment      []string `json:"equipment"`
	Notes          string   `json:"notes,omitempty"` // at most 500 characters
	Profile        Profile  `json:"profile"`
	// History is the member's recent sets, best per exercise and day; the
	// planner bases working weights on it.
	History []HistoryEntry `json:"history,omitempty"`
	// Catalogue is the exercises the planner may use; it picks only from
	// these and only those whose equipment is available.
	Catalogue []CatalogueExercise `json:"catalogue"`
}

// Profile is the member's snapshot the plan is fitted to. Zero numbers mean
// unknown.
type Profile struct {
	Sex        string  `json:"sex,omitempty"`
	Age        int     `json:"age,omitempty"`       // 13..100 when known
	HeightCm   float64 `json:"height_cm,omitempty"` // 100..250 when known
	WeightKg   float64 `json:"weight_kg,omitempty"` // 30..300 when known
	Experience string  `json:"experience,omitempty"`
}

// HistoryEntry is the best set of one exercise on one day.
type HistoryEntry struct {
	ExerciseID   string  `json:"exercise_id"`
	Date         string  `json:"date"` // YYYY-MM-DD
	Sets         int     `json:"sets"`
	BestReps     int     `json:"best_reps"`
	BestWeightKg float64 `json:"best_weight_kg"`
}

// CatalogueExercise is one exercise the planner may prescribe.
type CatalogueExercise struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Equipment    string   `json:"equipment"`
	MuscleGroups []string `json:"muscle_groups"`
}

// Plan is the planner's 200 answer.
type Plan struct {
	PlanID string `json:"plan_id"` // "wp_" + hex
	Name   string `json:"name"`
	Model  string `json:"model"`
	Days   []Day  `json:"days"`
}

// Day is one training day of a plan.
type Day struct {
	DayIndex  int        `json:"day_index"`
	Title     string     `json:"title"`
	Exercises []Exercise `json:"exercises"`
}

// Exercise is one catalogue exercise prescribed on a day.
type Exercise struct {
	ExerciseID string `json:"exercise_id"`
	Sets       []Set  `json:"sets"`
}

// Set is one prescribed set: repetitions (with a weight) or a duration (with
// an optional distance), then a rest.
type Set struct {
	Reps            int     `json:"reps"`
	WeightKg        float64 `json:"weight_kg"`
	DurationSeconds int     `json:"duration_seconds"`
	DistanceM       float64 `json:"distance_m"`
	RestSeconds     int     `json:"rest_seconds"`
}
