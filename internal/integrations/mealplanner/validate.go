package mealplanner

import (
	"fmt"
	"math"
	"slices"
	"strings"

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
// simulator in internal/devstack.
const (
	MinDays, MaxDays             = 1, 14
	MinKcalTarget, MaxKcalTarget = 1000, 6000
	MaxProteinG                  = 500
	MaxCarbsG                    = 1000
	MaxFatG                      = 400
	MaxExclusions                = 50
	MaxExclusionChars            = 50
	MaxMealsPerDay               = 8
	MaxItemsPerMeal              = 12

	// KcalTargetTolerance is how far a day's kcal may be from the target.
	KcalTargetTolerance = 0.05
	// TotalsTolerance is how far a day's totals may be from the sums of its
	// items (or TotalsToleranceAbs, whichever is larger), for rounding.
	TotalsTolerance    = 0.01
	TotalsToleranceAbs = 1.0
)

// Validate checks the request against the contract; the error names the
// field.
func (r MealPlanRequest) Validate() error {
	if r.Days < MinDays || r.Days > MaxDays {
		return badRequest("days", r.Days, fmt.Sprintf("%d..%d", MinDays, MaxDays))
	}
	if !(r.KcalTarget >= MinKcalTarget && r.KcalTarget <= MaxKcalTarget) {
		return badRequest("kcal_target", r.KcalTarget, fmt.Sprintf("%d..%d", MinKcalTarget, MaxKcalTarget))
	}
	for _, m := range []struct {
		name   string
		v, max float64
	}{{"protein_g", r.ProteinG, MaxProteinG}, {"carbs_g", r.CarbsG, MaxCarbsG}, {"fat_g", r.FatG, MaxFatG}} {
		if !(m.v >= 0 && m.v <= m.max) {
			return badRequest(m.name, m.v, fmt.Sprintf("0..%g (0 for no target)", m.max))
		}
	}
	if !slices.Contains(Diets, r.Diet) {
		return badRequest("diet", r.Diet, strings.Join(Diets, ", "))
	}
	if len(r.Exclusions) > MaxExclusions {
		return badRequest("exclusions", fmt.Sprintf("%d entries", len(r.Exclusions)), fmt.Sprintf("at most %d entries", MaxExclusions))
	}
	for i, x := range r.Exclusions {
		if t := strings.TrimSpace(x); t == "" || len(x) > MaxExclusionChars {
			return badRequest(fmt.Sprintf("exclusions[%d]", i), x, fmt.Sprintf("a tag or food word of 1..%d characters", MaxExclusionChars))
		}
	}
	return nil
}

// ValidateMealPlan checks a meal plan the planner answered for req against
// the contract's rules; the error wraps ErrInvalidResponse and names the
// first field that broke one.
func ValidateMealPlan(req MealPlanRequest, p *MealPlan) error {
	if p == nil {
		return badResponse("meal_plan", nil, "a meal plan object")
	}
	if !strings.HasPrefix(p.MealPlanID, "mp_") || len(p.MealPlanID) > 128 {
		return badResponse("meal_plan_id", p.MealPlanID, `"mp_" followed by an id, at most 128 characters`)
	}
	if len(p.Days) != req.Days {
		return badResponse("days", fmt.Sprintf("%d days", len(p.Days)), fmt.Sprintf("%d days", req.Days))
	}
	for i, d := range p.Days {
		if err := validateDay(fmt.Sprintf("days[%d]", i), i, req, d); err != nil {
			return err
		}
	}
	return nil
}

func validateDay(field string, index int, req MealPlanRequest, d Day) error {
	if d.DayIndex != index {
		return badResponse(field+".day_index", d.DayIndex, fmt.Sprint(index))
	}
	if n := len(d.Meals); n < 1 || n > MaxMealsPerDay {
		return badResponse(field+".meals", fmt.Sprintf("%d meals", n), fmt.Sprintf("1..%d meals", MaxMealsPerDay))
	}
	var kcal, protein, carbs, fat float64
	for j, m := range d.Meals {
		mf := fmt.Sprintf("%s.meals[%d]", field, j)
		if !slices.Contains(MealTypes, m.MealType) {
			return badResponse(mf+".meal_type", m.MealType, strings.Join(MealTypes, ", "))
		}
		if n := len(m.Items); n < 1 || n > MaxItemsPerMeal {
			return badResponse(mf+".items", fmt.Sprintf("%d items", n), fmt.Sprintf("1..%d items", MaxItemsPerMeal))
		}
		for k, it := range m.Items {
			itf := fmt.Sprintf("%s.items[%d]", mf, k)
			if strings.TrimSpace(it.Name) == "" || len(it.Name) > 200 {
				return badResponse(itf+".name", it.Name, "a food name of 1..200 characters")
			}
			if f, v, rule, ok := it.Check(); !ok {
				return badResponse(itf+"."+f, v, rule)
			}
			if why := Forbidden(it.Name, Tags(it.Name), req.Diet, req.Exclusions); why != "" {
				return badResponse(itf+".name", it.Name, fmt.Sprintf("no %s (diet %s, exclusions %v)", why, req.Diet, req.Exclusions))
			}
			kcal += it.Kcal
			protein += it.ProteinG
			carbs += it.CarbsG
			fat += it.FatG
		}
	}
	for _, t := range []struct {
		name      string
		got, want float64
	}{{"kcal", d.Kcal, kcal}, {"protein_g", d.ProteinG, protein}, {"carbs_g", d.CarbsG, carbs}, {"fat_g", d.FatG, fat}} {
		if math.IsNaN(t.got) || math.Abs(t.got-t.want) > max(TotalsTolerance*t.want, TotalsToleranceAbs) {
			return badResponse(field+"."+t.name, t.got, fmt.Sprintf("the sum of the day's items (%.1f) within %.0f%%", t.want, TotalsTolerance*100))
		}
	}
	if math.Abs(d.Kcal-req.KcalTarget) > KcalTargetTolerance*req.KcalTarget {
		return badResponse(field+".kcal", d.Kcal, fmt.Sprintf("within %.0f%% of kcal_target %g", KcalTargetTolerance*100, req.KcalTarget))
	}
	if req.Diet == DietKeto && carbs*4 > KetoMaxCarbsShare*kcal {
		return badResponse(field+".carbs_g", d.CarbsG, fmt.Sprintf("at most %.0f%% of the day's kcal from carbohydrates (keto)", KetoMaxCarbsShare*100))
	}
	return nil
}
