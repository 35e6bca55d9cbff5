package devstack

import (
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

	mp "github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

// MealPlanner simulates the outside meal planning service
// (POST /v1/meal-plans, docs/integrations.md). Its days meet the kcal target
// within 5%, aim for the protein target, keep to the diet and exclusions,
// and are the same for the same request.
type MealPlanner struct {
	*simulator
}

// simMealPlannerModel is the model name the simulator reports.
const simMealPlannerModel = "sim-mealplanner-1"

// StartMealPlanner starts the simulator on a free loopback port.
func StartMealPlanner(logger *slog.Logger) (*MealPlanner, error) {
	sim, err := startSimulator(mp.Name, logger, map[string]simHandler{
		"POST /v1/meal-plans": handleMealPlan,
	})
	if err != nil {
		return nil, err
	}
	return &MealPlanner{sim}, nil
}

func handleMealPlan(_ context.Context, body []byte, absurd bool) (any, *apiError) {
	var req mp.MealPlanRequest
	if e := decodeStrict(body, &req); e != nil {
		return nil, e
	}
	if err := req.Validate(); err != nil {
		return nil, invalidRequest("%s", fieldErrorDetail(err))
	}
	plan, err := planMeals(req)
	if err != nil {
		return nil, invalidRequest("%v", err)
	}
	if absurd {
		for i := range plan.Days {
			plan.Days[i].Kcal = req.KcalTarget * 25
			item := &plan.Days[i].Meals[0].Items[0]
			item.Grams, item.Kcal = 9000, 45000
		}
	}
	return plan, nil
}

// mealTemplates are the roles of a meal's items, by meal type; keto swaps
// starch and fruit for vegetables and fat.
var mealTemplates = map[bool]map[string][]foodRole{
	false: {
		mp.MealBreakfast: {roleStarch, roleProtein, roleFruit},
		mp.MealLunch:     {roleProtein, roleStarch, roleVeg, roleFat},
		mp.MealDinner:    {roleProtein, roleStarch, roleVeg, roleVeg},
		mp.MealSnack:     {roleFruit, roleFat},
	},
	true: {
		mp.MealBreakfast: {roleProtein, roleVeg, roleFat},
		mp.MealLunch:     {roleProtein, roleVeg, roleFat},
		mp.MealDinner:    {roleProtein, roleVeg, roleVeg, roleFat},
		mp.MealSnack:     {roleProtein, roleFat},
	},
}

// ketoFriendly keeps starchy, sweet and milky foods out of keto plans:
// vegetables with at most 6 g of carbohydrates per 100 g, and other foods
// that get at most 10% of their energy from carbohydrates.
func ketoFriendly(f food) bool {
	if f.role == roleVeg {
		return f.per100.CarbsG <= 6
	}
	return f.per100.CarbsG*4 <= mp.KetoMaxCarbsShare*f.per100.Kcal
}

// planMeals builds the plan for a valid request. The random source is
// seeded by the request, so the same request always gives the same plan.
func planMeals(req mp.MealPlanRequest) (*mp.MealPlan, error) {
	canonical, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	rng := seedFrom(canonical)
	sum := sha256.Sum256(canonical)
	keto := req.Diet == mp.DietKeto

	var allowed []food
	for _, f := range foods {
		if f.role == roleDish || mp.Forbidden(f.name, f.tags, req.Diet, req.Exclusions) != "" {
			continue
		}
		if keto && !ketoFriendly(f) {
			continue
		}
		allowed = append(allowed, f)
	}
	if len(allowed) == 0 {
		return nil, errors.New("exclusions: no food is left for the diet")
	}

	plan := &mp.MealPlan{MealPlanID: "mp_" + hex.EncodeToString(sum[:12]), Model: simMealPlannerModel}
	for i := range req.Days {
		day, err := planDay(rng, req, allowed, keto)
		if err != nil {
			return nil, err
		}
		day.DayIndex = i
		plan.Days = append(plan.Days, day)
	}
	return plan, nil
}

// planned is an item being planned: the food and its grams.
type planned struct {
	food  food
	grams float64
}

type plannedMeal struct {
	mealType string
	items    []planned
}

// planDay composes a day from the templates, then scales the portions to the
// kcal target (and towards the protein target when there is one).
func planDay(rng *rand.Rand, req mp.MealPlanRequest, allowed []food, keto bool) (mp.Day, error) {
	used := map[string]bool{}
	var meals []plannedMeal
	for _, mt := range mp.MealTypes {
		if m, ok := composeMeal(rng, mt, allowed, keto, used); ok {
			meals = append(meals, m)
		}
	}
	// Extra snacks keep portions sensible for a high target instead of
	// tripling every plate.
	for kcalOf(meals) < 0.6*req.KcalTarget && len(meals) < mp.MaxMealsPerDay {
		m, ok := composeMeal(rng, mp.MealSnack, allowed, keto, used)
		if !ok {
			break
		}
		meals = append(meals, m)
	}
	if len(meals) == 0 || kcalOf(meals) == 0 {
		return mp.Day{}, errors.New("exclusions: no meal can be made for the diet")
	}
	if keto {
		trimCarbs(meals)
	}

	// Scaling protein foods apart from the rest meets a protein target as
	// well as the kcal one; when that would distort the plate, or breaks a
	// rule after rounding, every portion is scaled alike.
	if req.ProteinG > 0 {
		if day, ok := scaledDay(req, meals, true); ok {
			return day, nil
		}
	}
	if day, ok := scaledDay(req, meals, false); ok {
		return day, nil
	}
	return mp.Day{}, fmt.Errorf("diet: no plan within %.0f%% of %g kcal fits diet %s and exclusions %v",
		mp.KcalTargetTolerance*100, req.KcalTarget, req.Diet, req.Exclusions)
}

// composeMeal picks a food for every role of the meal's template, avoiding
// foods already used that day while others remain.
func composeMeal(rng *rand.Rand, mealType string, allowed []food, keto bool, used map[string]bool) (plannedMeal, bool) {
	m := plannedMeal{mealType: mealType}
	for _, role := range mealTemplates[keto][mealType] {
		var fresh, fitting []food
		for _, f := range allowed {
			if f.role != role {
				continue
			}
			if slices.Contains(f.meals, mealType) {
				fitting = append(fitting, f)
				if !used[f.name] {
					fresh = append(fresh, f)
				}
			}
		}
		if len(fitting) == 0 {
			// A diet without the usual food for this meal takes one from
			// another meal rather than leaving the role empty.
			for _, f := range allowed {
				if f.role == role {
					fitting = append(fitting, f)
				}
			}
		}
		pool := fresh
		if len(pool) == 0 {
			pool = fitting
		}
		if len(pool) == 0 {
			continue
		}
		f := pool[rng.IntN(len(pool))]
		if slices.ContainsFunc(m.items, func(p planned) bool { return p.food.name == f.name }) {
			continue
		}
		used[f.name] = true
		m.items = append(m.items, planned{food: f, grams: f.portion})
	}
	return m, len(m.items) > 0
}

func kcalOf(meals []plannedMeal) float64 {
	var k float64
	for _, m := range meals {
		for _, it := range m.items {
			k += it.food.per100.Kcal * it.grams / 100
		}
	}
	return k
}

// trimCarbs halves vegetable portions, then doubles fat portions, until
// carbohydrates give at most 9% of the day's energy (keto allows 10%,
// rounding gets the rest).
func trimCarbs(meals []plannedMeal) {
	share := func() float64 {
		var carbs, kcal float64
		for _, m := range meals {
			for _, it := range m.items {
				carbs += it.food.per100.CarbsG * it.grams / 100
				kcal += it.food.per100.Kcal * it.grams / 100
			}
		}
		return carbs * 4 / kcal
	}
	for round := 0; round < 6 && share() > 0.09; round++ {
		for i := range meals {
			for j := range meals[i].items {
				it := &meals[i].items[j]
				switch {
				case round < 3 && it.food.role == roleVeg:
					it.grams = max(it.grams/2, 30)
				case round >= 3 && it.food.role == roleFat:
					it.grams *= 2
				}
			}
		}
	}
}

// scaledDay scales the portions to the targets, rounds them as the service
// answers, corrects the rounding on the largest item, and keeps the day only
// if it passes the client's own rules.
func scaledDay(req mp.MealPlanRequest, meals []plannedMeal, byProtein bool) (mp.Day, bool) {
	var kA, pA, kB, pB float64 // kcal and protein of protein foods (A) and the rest (B)
	for _, m := range meals {
		for _, it := range m.items {
			k, p := it.food.per100.Kcal*it.grams/100, it.food.per100.ProteinG*it.grams/100
			if it.food.role == roleProtein {
				kA, pA = kA+k, pA+p
			} else {
				kB, pB = kB+k, pB+p
			}
		}
	}
	K := req.KcalTarget
	a, b := K/(kA+kB), K/(kA+kB)
	if byProtein {
		det := kA*pB - kB*pA
		if math.Abs(det) < 1e-6 {
			return mp.Day{}, false
		}
		a, b = (K*pB-kB*req.ProteinG)/det, (kA*req.ProteinG-K*pA)/det
		if a < 0.4 || a > 3 || b < 0.4 || b > 3 {
			return mp.Day{}, false
		}
	}

	scaled := make([]plannedMeal, len(meals))
	var largest *planned
	for i, m := range meals {
		scaled[i] = plannedMeal{mealType: m.mealType, items: slices.Clone(m.items)}
		for j := range scaled[i].items {
			it := &scaled[i].items[j]
			f := b
			if it.food.role == roleProtein {
				f = a
			}
			it.grams = min(max(math.Round(it.grams*f), 1), 2000)
			if largest == nil || it.grams*it.food.per100.Kcal > largest.grams*largest.food.per100.Kcal {
				largest = it
			}
		}
	}
	// Rounding every portion to whole grams moves the total a little; the
	// largest item absorbs the difference.
	if residual := K - roundedKcal(scaled); largest != nil && largest.food.per100.Kcal > 0 {
		largest.grams = min(max(math.Round(largest.grams+residual*100/largest.food.per100.Kcal), 1), 2000)
	}

	day := mp.Day{}
	for _, m := range scaled {
		meal := mp.Meal{MealType: m.mealType, Name: mealName(m.items)}
		for _, it := range m.items {
			n := it.food.portionOf(it.grams)
			meal.Items = append(meal.Items, mp.Item{Name: it.food.name, Nutrients: n})
			day.Kcal += n.Kcal
			day.ProteinG += n.ProteinG
			day.CarbsG += n.CarbsG
			day.FatG += n.FatG
		}
		day.Meals = append(day.Meals, meal)
	}
	day.ProteinG, day.CarbsG, day.FatG = round1(day.ProteinG), round1(day.CarbsG), round1(day.FatG)

	one := req
	one.Days = 1
	if err := mp.ValidateMealPlan(one, &mp.MealPlan{MealPlanID: "mp_check", Days: []mp.Day{day}}); err != nil {
		return mp.Day{}, false
	}
	return day, true
}

func roundedKcal(meals []plannedMeal) float64 {
	var k float64
	for _, m := range meals {
		for _, it := range m.items {
			k += it.food.portionOf(it.grams).Kcal
		}
	}
	return k
}

// mealName names a meal after its first two foods, as a menu would.
func mealName(items []planned) string {
	if len(items) == 0 {
		return ""
	}
	name := strings.ToUpper(items[0].food.name[:1]) + items[0].food.name[1:]
	if len(items) > 1 {
		name += " with " + items[1].food.name
	}
	return name
}
