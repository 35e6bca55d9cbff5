package devstack_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/devstack"
	mp "github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

func requestMealPlan(t *testing.T, s *devstack.MealPlanner, key string, req mp.MealPlanRequest) (*mp.MealPlan, simAnswer) {
	t.Helper()
	a := callSim(t, http.MethodPost, s.URL()+"/v1/meal-plans", s.APIKey(), key, req)
	if a.status != http.StatusOK {
		return nil, a
	}
	var p mp.MealPlan
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("decode meal plan: %v: %s", err, a.body)
	}
	return &p, a
}

// TestMealPlanner checks that every plan meets the kcal target within 5%
// per day, adds up, and keeps the diet and exclusions.
func TestMealPlanner(t *testing.T) {
	s := startMealPlanner(t)

	t.Run("Rules", func(t *testing.T) {
		n := 0
		for _, diet := range mp.Diets {
			for _, kcal := range []float64{1000, 1650, 2200, 3400, 6000} {
				for _, exclusions := range [][]string{nil, {"peanut", "dairy"}, {"gluten", "soy", "tree_nut"}, {"egg", "fish", "mushroom"}} {
					n++
					req := mp.MealPlanRequest{Days: 3, KcalTarget: kcal, Diet: diet, Exclusions: exclusions}
					if n%3 == 0 {
						req.ProteinG = math.Round(kcal * 0.25 / 4)
					}
					p, a := requestMealPlan(t, s, fmt.Sprint("rules-", n), req)
					if p == nil {
						t.Fatalf("%+v: %d %s", req, a.status, a.body)
					}
					if err := mp.ValidateMealPlan(req, p); err != nil {
						t.Fatalf("%+v: %v", req, err)
					}
					for _, d := range p.Days {
						if math.Abs(d.Kcal-kcal) > 0.05*kcal {
							t.Fatalf("%+v: day %d has %v kcal", req, d.DayIndex, d.Kcal)
						}
						var sum float64
						for _, m := range d.Meals {
							for _, it := range m.Items {
								sum += it.Kcal
								tags := mp.Tags(it.Name)
								for _, x := range exclusions {
									if slices.Contains(tags, x) || strings.Contains(it.Name, x) {
										t.Fatalf("%+v: %q is excluded (%s)", req, it.Name, x)
									}
								}
								if diet == mp.DietVegan && (slices.Contains(tags, mp.TagDairy) || slices.Contains(tags, mp.TagMeat) || slices.Contains(tags, mp.TagEgg)) {
									t.Fatalf("vegan plan has %q", it.Name)
								}
							}
						}
						if math.Abs(sum-d.Kcal) > 0.01*sum {
							t.Fatalf("day kcal %v, items add up to %v", d.Kcal, sum)
						}
						if diet == mp.DietKeto && d.CarbsG*4 > 0.10*d.Kcal {
							t.Fatalf("keto day has %v g carbs in %v kcal", d.CarbsG, d.Kcal)
						}
					}
				}
			}
		}
	})

	t.Run("FourteenDaysVaried", func(t *testing.T) {
		req := mp.MealPlanRequest{Days: 14, KcalTarget: 2400, Diet: mp.DietPescatarian}
		p, a := requestMealPlan(t, s, "long", req)
		if p == nil || len(p.Days) != 14 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if err := mp.ValidateMealPlan(req, p); err != nil {
			t.Fatal(err)
		}
		dinners := map[string]bool{}
		for _, d := range p.Days {
			for _, m := range d.Meals {
				if m.MealType == mp.MealDinner {
					dinners[m.Name] = true
				}
			}
		}
		if len(dinners) < 5 {
			t.Fatalf("14 days have %d different dinners, want variety", len(dinners))
		}
	})

	t.Run("ProteinTarget", func(t *testing.T) {
		req := mp.MealPlanRequest{Days: 2, KcalTarget: 2200, ProteinG: 160, Diet: mp.DietOmnivore}
		p, a := requestMealPlan(t, s, "protein", req)
		if p == nil {
			t.Fatalf("%d %s", a.status, a.body)
		}
		for _, d := range p.Days {
			if math.Abs(d.ProteinG-160) > 0.15*160 {
				t.Errorf("day %d has %v g protein, want about 160", d.DayIndex, d.ProteinG)
			}
		}
	})

	t.Run("Deterministic", func(t *testing.T) {
		req := mp.MealPlanRequest{Days: 2, KcalTarget: 1900, Diet: mp.DietVegetarian}
		_, a1 := requestMealPlan(t, s, "det-1", req)
		_, a2 := requestMealPlan(t, s, "det-2", req)
		if a1.status != http.StatusOK || !bytes.Equal(a1.body, a2.body) {
			t.Fatalf("same request, different plans:\n%s\n%s", a1.body, a2.body)
		}
	})

	t.Run("InvalidRequest", func(t *testing.T) {
		for field, req := range map[string]mp.MealPlanRequest{
			"days":          {Days: 15, KcalTarget: 2000, Diet: "omnivore"},
			"kcal_target":   {Days: 1, KcalTarget: 900, Diet: "omnivore"},
			"protein_g":     {Days: 1, KcalTarget: 2000, ProteinG: -1, Diet: "omnivore"},
			"diet":          {Days: 1, KcalTarget: 2000, Diet: "carnivore"},
			"exclusions[1]": {Days: 1, KcalTarget: 2000, Diet: "omnivore", Exclusions: []string{"peanut", " "}},
		} {
			if err := req.Validate(); !errors.Is(err, mp.ErrInvalidRequest) || !strings.Contains(err.Error(), field) {
				t.Errorf("Validate with a bad %s = %v", field, err)
			}
			_, a := requestMealPlan(t, s, "bad-"+field, req)
			if a.status != http.StatusBadRequest || a.errorCode() != "invalid_request" || !strings.Contains(a.errorMessage(), field) {
				t.Errorf("bad %s: %d %s, want 400 naming the field", field, a.status, a.body)
			}
		}
	})

	t.Run("Absurd", func(t *testing.T) {
		s := startMealPlanner(t)
		s.SetKnobs(devstack.SimKnobs{Absurd: true})
		req := mp.MealPlanRequest{Days: 1, KcalTarget: 2000, Diet: mp.DietOmnivore}
		p, a := requestMealPlan(t, s, "absurd", req)
		if p == nil {
			t.Fatalf("%d %s", a.status, a.body)
		}
		var fe *mp.FieldError
		if err := mp.ValidateMealPlan(req, p); !errors.Is(err, mp.ErrInvalidResponse) || !errors.As(err, &fe) || !strings.HasSuffix(fe.Field, "grams") {
			t.Fatalf("ValidateMealPlan of an absurd plan = %v, want ErrInvalidResponse naming grams", err)
		}
	})
}

// TestMealPlanValidation checks the client's rules on hand-made plans the
// simulator would never send.
func TestMealPlanValidation(t *testing.T) {
	item := func(name string, grams, kcal, p, c, f float64) mp.Item {
		it := mp.Item{Name: name}
		it.Grams, it.Kcal, it.ProteinG, it.CarbsG, it.FatG = grams, kcal, p, c, f
		return it
	}
	day := func(items ...mp.Item) mp.Day {
		d := mp.Day{Meals: []mp.Meal{{MealType: mp.MealLunch, Name: "Lunch", Items: items}}}
		for _, it := range items {
			d.Kcal += it.Kcal
			d.ProteinG += it.ProteinG
			d.CarbsG += it.CarbsG
			d.FatG += it.FatG
		}
		return d
	}
	good := day(item("grilled chicken breast", 600, 990, 186, 0, 21.6), item("cooked white rice", 780, 1014, 21.1, 218.4, 2.3))
	req := mp.MealPlanRequest{Days: 1, KcalTarget: 2000, Diet: mp.DietOmnivore}
	if err := mp.ValidateMealPlan(req, &mp.MealPlan{MealPlanID: "mp_1", Days: []mp.Day{good}}); err != nil {
		t.Fatalf("a good plan: %v", err)
	}
	for name, c := range map[string]struct {
		req   mp.MealPlanRequest
		day   mp.Day
		field string
	}{
		"VegetarianChicken": {mp.MealPlanRequest{Days: 1, KcalTarget: 2000, Diet: mp.DietVegetarian}, good, "items[0].name"},
		"ExcludedWord":      {mp.MealPlanRequest{Days: 1, KcalTarget: 2000, Diet: mp.DietOmnivore, Exclusions: []string{"rice"}}, good, "items[1].name"},
		"OffTarget":         {mp.MealPlanRequest{Days: 1, KcalTarget: 2500, Diet: mp.DietOmnivore}, good, "days[0].kcal"},
		"Totals":            {req, func() mp.Day { d := good; d.ProteinG += 20; return d }(), "days[0].protein_g"},
		"KcalVsMacros":      {req, day(item("grilled chicken breast", 600, 1990, 186, 0, 21.6), item("cooked white rice", 10, 13, 0.3, 2.8, 0)), "items[0].kcal"},
		"MacroOverGrams":    {req, day(item("grilled chicken breast", 100, 1990, 400, 0, 21.6), item("cooked white rice", 10, 13, 0.3, 2.8, 0)), "items[0].protein_g"},
	} {
		err := mp.ValidateMealPlan(c.req, &mp.MealPlan{MealPlanID: "mp_1", Days: []mp.Day{c.day}})
		if !errors.Is(err, mp.ErrInvalidResponse) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v, want ErrInvalidResponse naming %s", name, err, c.field)
		}
	}
}
