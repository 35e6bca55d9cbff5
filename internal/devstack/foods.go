package devstack

import (
	"math"

	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
)

// food is one row of the simulators' food table: real foods with values per
// 100 g (USDA FoodData Central, rounded; carbohydrates are the available
// ones where fibre would otherwise put kcal out of line with the 4/4/9
// factors, as EU labels do).
type food struct {
	name string
	// per100 holds kcal and macros per 100 g; its Grams is 100.
	per100 mealdetector.Nutrients
	// tags are what diets and exclusions rule out; they equal
	// mealplanner.Tags(name), which a test checks, so the client can verify
	// a plan by the names alone.
	tags []string
	role foodRole
	// meals are the meal types the meal planner puts the food in.
	meals []string
	// portion is a typical serving in grams.
	portion float64
	// visible is false for foods a camera cannot see on a plate (oil,
	// honey), which the detector never reports.
	visible bool
}

// foodRole is the part a food plays in a meal the planner composes.
type foodRole int

const (
	roleProtein foodRole = iota
	roleStarch
	roleVeg
	roleFruit
	roleFat
	roleDish // a whole dish, only detected on plates
)

// Short names of the meal types for the table below.
const (
	atBreakfast = mealplanner.MealBreakfast
	atLunch     = mealplanner.MealLunch
	atDinner    = mealplanner.MealDinner
	atSnack     = mealplanner.MealSnack
)

func per100(kcal, protein, carbs, fat float64) mealdetector.Nutrients {
	return mealdetector.Nutrients{Grams: 100, Kcal: kcal, ProteinG: protein, CarbsG: carbs, FatG: fat}
}

func tagged(t ...string) []string { return t }

func servedAt(m ...string) []string { return m }

// foods is the table. Keep names recognisable to mealplanner.Tags: a food
// with a tag must say so in its name ("greek yogurt" is dairy by "yogurt").
var foods = []food{
	// Protein.
	{"grilled chicken breast", per100(165, 31, 0, 3.6), tagged(mealplanner.TagMeat), roleProtein, servedAt(atLunch, atDinner), 150, true},
	{"roast turkey breast", per100(135, 30, 0, 1), tagged(mealplanner.TagMeat), roleProtein, servedAt(atLunch, atDinner), 120, true},
	{"lean beef steak", per100(190, 27, 0, 9), tagged(mealplanner.TagMeat), roleProtein, servedAt(atDinner), 170, true},
	{"pork tenderloin", per100(143, 26, 0, 3.5), tagged(mealplanner.TagMeat), roleProtein, servedAt(atDinner), 150, true},
	{"beef burger patty", per100(250, 26, 0, 16), tagged(mealplanner.TagMeat), roleProtein, servedAt(atLunch, atDinner), 120, true},
	{"baked salmon", per100(206, 22, 0, 13), tagged(mealplanner.TagFish), roleProtein, servedAt(atLunch, atDinner), 140, true},
	{"canned tuna in water", per100(116, 26, 0, 1), tagged(mealplanner.TagFish), roleProtein, servedAt(atLunch), 100, true},
	{"baked cod", per100(105, 23, 0, 0.9), tagged(mealplanner.TagFish), roleProtein, servedAt(atDinner), 160, true},
	{"grilled shrimp", per100(99, 24, 0.2, 0.3), tagged(mealplanner.TagShellfish), roleProtein, servedAt(atLunch, atDinner), 120, true},
	{"boiled eggs", per100(155, 13, 1.1, 11), tagged(mealplanner.TagEgg), roleProtein, servedAt(atBreakfast, atLunch, atSnack), 100, true},
	{"fried egg", per100(196, 13.6, 0.8, 15), tagged(mealplanner.TagEgg), roleProtein, servedAt(atBreakfast), 50, true},
	{"firm tofu", per100(144, 17, 2, 9), tagged(mealplanner.TagSoy), roleProtein, servedAt(atBreakfast, atLunch, atDinner), 150, true},
	{"tempeh", per100(192, 20, 7.6, 11), tagged(mealplanner.TagSoy), roleProtein, servedAt(atLunch, atDinner), 120, true},
	{"edamame", per100(121, 12, 5, 5.2), tagged(mealplanner.TagSoy), roleProtein, servedAt(atLunch, atSnack), 100, true},
	{"cooked lentils", per100(116, 9, 20, 0.4), nil, roleProtein, servedAt(atLunch, atDinner), 180, true},
	{"cooked chickpeas", per100(164, 8.9, 27.4, 2.6), nil, roleProtein, servedAt(atLunch, atDinner), 160, true},
	{"black beans", per100(132, 8.9, 23.7, 0.5), nil, roleProtein, servedAt(atLunch, atDinner), 160, true},
	{"greek yogurt", per100(73, 10, 3.9, 2), tagged(mealplanner.TagDairy), roleProtein, servedAt(atBreakfast, atSnack), 170, true},
	{"cottage cheese", per100(98, 11, 3.4, 4.3), tagged(mealplanner.TagDairy), roleProtein, servedAt(atBreakfast, atSnack), 150, true},
	{"cheddar cheese", per100(403, 25, 1.3, 33), tagged(mealplanner.TagDairy), roleFat, servedAt(atLunch, atSnack), 30, true},
	{"feta cheese", per100(264, 14, 4, 21), tagged(mealplanner.TagDairy), roleFat, servedAt(atLunch), 40, true},
	{"mozzarella", per100(280, 28, 3.1, 17), tagged(mealplanner.TagDairy), roleFat, servedAt(atLunch, atDinner), 60, true},
	{"semi-skimmed milk", per100(50, 3.4, 4.8, 1.9), tagged(mealplanner.TagDairy), roleFat, servedAt(atBreakfast), 200, true},
	{"soy milk", per100(54, 3.3, 6.3, 1.8), tagged(mealplanner.TagSoy), roleFat, servedAt(atBreakfast), 200, true},

	// Starch.
	{"rolled oats", per100(379, 13, 66, 6.5), nil, roleStarch, servedAt(atBreakfast), 60, true},
	{"granola", per100(471, 10, 64, 20), tagged(mealplanner.TagGluten), roleStarch, servedAt(atBreakfast), 50, true},
	{"wholemeal bread", per100(247, 13, 41, 3.4), tagged(mealplanner.TagGluten), roleStarch, servedAt(atBreakfast, atLunch), 80, true},
	{"sourdough bread", per100(266, 10.8, 51, 2.4), tagged(mealplanner.TagGluten), roleStarch, servedAt(atBreakfast, atLunch), 80, true},
	{"corn tortilla", per100(218, 5.7, 44.6, 2.9), nil, roleStarch, servedAt(atLunch), 60, true},
	{"cooked brown rice", per100(123, 2.7, 25.6, 1), nil, roleStarch, servedAt(atLunch, atDinner), 180, true},
	{"cooked white rice", per100(130, 2.7, 28, 0.3), nil, roleStarch, servedAt(atLunch, atDinner), 180, true},
	{"cooked quinoa", per100(120, 4.4, 21.3, 1.9), nil, roleStarch, servedAt(atLunch, atDinner), 180, true},
	{"whole wheat pasta", per100(149, 5.8, 30, 1.7), tagged(mealplanner.TagGluten), roleStarch, servedAt(atLunch, atDinner), 200, true},
	{"baked sweet potato", per100(90, 2, 20.7, 0.2), nil, roleStarch, servedAt(atLunch, atDinner), 200, true},
	{"boiled potatoes", per100(87, 1.9, 20, 0.1), nil, roleStarch, servedAt(atDinner), 200, true},

	// Vegetables.
	{"steamed broccoli", per100(35, 2.4, 5.6, 0.4), nil, roleVeg, servedAt(atLunch, atDinner), 120, true},
	{"mixed salad greens", per100(17, 1.2, 2.9, 0.2), nil, roleVeg, servedAt(atLunch, atDinner), 80, true},
	{"roasted bell peppers", per100(31, 1, 6, 0.3), nil, roleVeg, servedAt(atLunch, atDinner), 100, true},
	{"steamed spinach", per100(23, 2.9, 1.4, 0.4), nil, roleVeg, servedAt(atBreakfast, atLunch, atDinner), 100, true},
	{"roasted carrots", per100(41, 0.9, 9.6, 0.2), nil, roleVeg, servedAt(atLunch, atDinner), 100, true},
	{"green beans", per100(31, 1.8, 5.4, 0.2), nil, roleVeg, servedAt(atLunch, atDinner), 100, true},
	{"roasted mushrooms", per100(22, 3.1, 1.5, 0.3), nil, roleVeg, servedAt(atBreakfast, atDinner), 100, true},
	{"cherry tomatoes", per100(18, 0.9, 3.2, 0.2), nil, roleVeg, servedAt(atBreakfast, atLunch), 100, true},

	// Fruit.
	{"banana", per100(89, 1.1, 20.2, 0.3), nil, roleFruit, servedAt(atBreakfast, atSnack), 120, true},
	{"apple", per100(52, 0.3, 11.4, 0.2), nil, roleFruit, servedAt(atSnack), 180, true},
	{"blueberries", per100(57, 0.7, 12.1, 0.3), nil, roleFruit, servedAt(atBreakfast, atSnack), 100, true},
	{"orange", per100(47, 0.9, 10.5, 0.1), nil, roleFruit, servedAt(atSnack), 150, true},
	{"strawberries", per100(32, 0.7, 6.5, 0.3), nil, roleFruit, servedAt(atBreakfast, atSnack), 150, true},

	// Fat.
	{"avocado", per100(160, 2, 1.8, 14.7), nil, roleFat, servedAt(atBreakfast, atLunch, atDinner), 70, true},
	{"olive oil", per100(884, 0, 0, 100), nil, roleFat, servedAt(atLunch, atDinner), 10, false},
	{"butter", per100(717, 0.9, 0.1, 81), tagged(mealplanner.TagDairy), roleFat, servedAt(atBreakfast), 10, false},
	{"almonds", per100(579, 21, 9.1, 49.9), tagged(mealplanner.TagTreeNut), roleFat, servedAt(atSnack), 30, true},
	{"walnuts", per100(654, 15, 7, 65), tagged(mealplanner.TagTreeNut), roleFat, servedAt(atBreakfast, atSnack), 30, true},
	{"peanut butter", per100(588, 25, 14, 50), tagged(mealplanner.TagPeanut), roleFat, servedAt(atBreakfast, atSnack), 30, true},
	{"hummus", per100(166, 7.9, 14.3, 9.6), tagged(mealplanner.TagSesame), roleFat, servedAt(atLunch, atSnack), 60, true},
	{"dark chocolate", per100(598, 7.8, 35, 43), nil, roleFat, servedAt(atSnack), 20, true},
	{"honey", per100(304, 0.3, 82, 0), tagged(mealplanner.TagHoney), roleFat, servedAt(atBreakfast), 15, false},

	// Dishes the detector sees on plates.
	{"cheese pizza", per100(266, 11, 33, 10), tagged(mealplanner.TagDairy, mealplanner.TagGluten), roleDish, nil, 250, true},
	{"spaghetti with beef bolognese", per100(132, 7, 15, 5), tagged(mealplanner.TagGluten, mealplanner.TagMeat), roleDish, nil, 350, true},
	{"french fries", per100(312, 3.4, 41, 15), nil, roleDish, nil, 150, true},
}

// portionOf returns the nutrients of grams of f, rounded as the services
// answer: whole grams and kcal, macros to 0.1 g.
func (f food) portionOf(grams float64) mealdetector.Nutrients {
	grams = math.Round(grams)
	k := grams / 100
	return mealdetector.Nutrients{
		Grams:    grams,
		Kcal:     math.Round(f.per100.Kcal * k),
		ProteinG: round1(f.per100.ProteinG * k),
		CarbsG:   round1(f.per100.CarbsG * k),
		FatG:     round1(f.per100.FatG * k),
	}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
