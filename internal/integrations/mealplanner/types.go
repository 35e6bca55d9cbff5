// Package mealplanner is the typed client of the outside meal planning
// service (POST /v1/meal-plans). The wire contract is written down in
// docs/integrations.md; the types here are its JSON, and ValidateMealPlan
// checks every answer against the contract's rules before a caller may use
// it.
package mealplanner

import "github.com/nxg-fitness/nxg/internal/integrations/mealdetector"

// Diets the planner accepts.
const (
	DietOmnivore    = "omnivore"
	DietVegetarian  = "vegetarian"
	DietVegan       = "vegan"
	DietPescatarian = "pescatarian"
	DietKeto        = "keto"
)

// Diets lists every diet.
var Diets = []string{DietOmnivore, DietVegetarian, DietVegan, DietPescatarian, DietKeto}

// Meal types of a day.
const (
	MealBreakfast = "breakfast"
	MealLunch     = "lunch"
	MealDinner    = "dinner"
	MealSnack     = "snack"
)

// MealTypes lists every meal type in the order of a day.
var MealTypes = []string{MealBreakfast, MealLunch, MealDinner, MealSnack}

// MealPlanRequest is the body of POST /v1/meal-plans.
type MealPlanRequest struct {
	Days       int     `json:"days"`        // 1..14
	KcalTarget float64 `json:"kcal_target"` // 1000..6000 per day
	// Macro targets per day in grams; 0 means no target. The planner aims
	// for them but only the kcal target is binding.
	ProteinG float64 `json:"protein_g,omitempty"`
	CarbsG   float64 `json:"carbs_g,omitempty"`
	FatG     float64 `json:"fat_g,omitempty"`
	Diet     string  `json:"diet"`
	// Exclusions are food tags (see Tags) or words of food names the plan
	// must not contain, for example "peanut", "dairy", "mushroom".
	Exclusions []string `json:"exclusions,omitempty"`
}

// MealPlan is the planner's 200 answer.
type MealPlan struct {
	MealPlanID string `json:"meal_plan_id"` // "mp_" + hex
	Model      string `json:"model"`
	Days       []Day  `json:"days"`
}

// Day is one planned day with its totals, which equal the sums of its
// items.
type Day struct {
	DayIndex int     `json:"day_index"`
	Kcal     float64 `json:"kcal"`
	ProteinG float64 `json:"protein_g"`
	CarbsG   float64 `json:"carbs_g"`
	FatG     float64 `json:"fat_g"`
	Meals    []Meal  `json:"meals"`
}

// Meal is one meal of a day.
type Meal struct {
	MealType string `json:"meal_type"`
	Name     string `json:"name"`
	Items    []Item `json:"items"`
}

// Item is one food of a meal, with the same nutrient fields as a detected
// item.
type Item struct {
	Name string `json:"name"`
	mealdetector.Nutrients
}
