package devstack

import (
	"math"
	"slices"
	"testing"

	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

// TestFoodTable checks the table the detector and meal planner draw from:
// enough real foods, each consistent with the 4/4/9 energy factors at any
// portion the simulators serve, and tagged exactly as the client recognises
// the name, so a plan the simulator thinks keeps a diet also passes the
// client's check and the other way round.
func TestFoodTable(t *testing.T) {
	if len(foods) < 30 {
		t.Fatalf("food table has %d foods, want at least 30", len(foods))
	}
	seen := map[string]bool{}
	for _, f := range foods {
		if seen[f.name] {
			t.Errorf("%q is in the table twice", f.name)
		}
		seen[f.name] = true
		if got := mealplanner.Tags(f.name); !slices.Equal(got, slices.Sorted(slices.Values(f.tags))) {
			t.Errorf("%q: tags %v, but the client reads %v from the name", f.name, f.tags, got)
		}
		if f.portion <= 0 {
			t.Errorf("%q: portion %v", f.name, f.portion)
		}
		// The largest portion a service may answer: 2000 g or 5000 kcal.
		most := min(2000, math.Floor(mealdetector.MaxKcal*100/f.per100.Kcal))
		for _, grams := range []float64{1, 10, f.portion * 0.6, f.portion, f.portion * 1.4, most} {
			n := f.portionOf(grams)
			if field, v, rule, ok := n.Check(); !ok {
				t.Errorf("%q at %v g: %s = %v, want %s", f.name, grams, field, v, rule)
			}
		}
		if f.role != roleDish && len(f.meals) == 0 {
			t.Errorf("%q: no meal type, so the planner never serves it", f.name)
		}
	}
}
