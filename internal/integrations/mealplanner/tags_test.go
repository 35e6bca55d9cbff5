package mealplanner_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	mp "github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

func TestTags(t *testing.T) {
	for name, want := range map[string][]string{
		"Peanut butter":           {mp.TagPeanut},
		"almond milk":             {mp.TagTreeNut},
		"butternut squash soup":   nil,
		"grilled eggplant":        nil,
		"scrambled eggs":          {mp.TagEgg},
		"Greek yoghurt & honey":   {mp.TagDairy, mp.TagHoney},
		"corn tortilla":           nil,
		"flour tortilla":          {mp.TagGluten},
		"salmon teriyaki (soy)":   {mp.TagFish, mp.TagSoy},
		"shrimp pad thai, peanut": {mp.TagPeanut, mp.TagShellfish},
		"champignon risotto":      nil,
	} {
		if got := mp.Tags(name); !slices.Equal(got, want) {
			t.Errorf("Tags(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestForbidden(t *testing.T) {
	for _, c := range []struct {
		name, diet string
		exclusions []string
		want       string
	}{
		{"grilled chicken breast", mp.DietVegetarian, nil, mp.TagMeat},
		{"baked salmon", mp.DietPescatarian, nil, ""},
		{"greek yogurt", mp.DietVegan, nil, mp.TagDairy},
		{"greek yogurt", mp.DietOmnivore, []string{"dairy"}, "dairy"},
		{"roasted mushrooms", mp.DietOmnivore, []string{"Mushroom"}, "mushroom"},
		{"mushroom soup", mp.DietOmnivore, []string{"room"}, ""},
		{"apple", mp.DietKeto, nil, ""},
	} {
		if got := mp.Forbidden(c.name, mp.Tags(c.name), c.diet, c.exclusions); got != c.want {
			t.Errorf("Forbidden(%q, %s, %v) = %q, want %q", c.name, c.diet, c.exclusions, got, c.want)
		}
	}
}

// FuzzValidateMealPlan feeds arbitrary answers and exclusions to the
// validation, which must never panic.
func FuzzValidateMealPlan(f *testing.F) {
	f.Add([]byte(`{"meal_plan_id":"mp_1","days":[{"day_index":0,"kcal":2000,"meals":[{"meal_type":"lunch","items":[{"name":"rice","grams":100,"kcal":130,"carbs_g":28}]}]}]}`), "peanut")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, body []byte, exclusion string) {
		var p mp.MealPlan
		if json.Unmarshal(body, &p) != nil {
			return
		}
		req := mp.MealPlanRequest{Days: len(p.Days), KcalTarget: 2000, Diet: mp.DietVegan, Exclusions: []string{exclusion}}
		if err := mp.ValidateMealPlan(req, &p); err != nil && !errors.Is(err, mp.ErrInvalidResponse) {
			t.Fatalf("ValidateMealPlan = %v, want nil or ErrInvalidResponse", err)
		}
	})
}
