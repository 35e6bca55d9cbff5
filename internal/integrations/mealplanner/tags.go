package mealplanner

import (
	"slices"
	"strings"
	"unicode"
)

// Food tags: what a diet or an exclusion rules out.
const (
	TagMeat      = "meat"
	TagFish      = "fish"
	TagShellfish = "shellfish"
	TagDairy     = "dairy"
	TagEgg       = "egg"
	TagPeanut    = "peanut"
	TagTreeNut   = "tree_nut"
	TagGluten    = "gluten"
	TagSoy       = "soy"
	TagSesame    = "sesame"
	TagHoney     = "honey"
)

// tagWords recognises a tag in a food's name. The planner's answer names
// foods but does not tag them, so this is how the client checks an answer
// against the diet and exclusions. A word matches the start of a word of the
// name ("egg" matches "eggs", not "veggie"), and "except" phrases are removed
// first, so "peanut butter" is not dairy and "eggplant" is not egg.
var tagWords = []struct {
	tag    string
	words  []string
	except []string
}{
	{TagMeat, []string{"chicken", "turkey", "beef", "pork", "ham", "bacon", "lamb", "steak", "sausage", "salami", "prosciutto", "mince", "veal", "duck"}, []string{"hamburger bun"}},
	{TagFish, []string{"salmon", "tuna", "cod", "mackerel", "sardine", "trout", "fish", "anchov", "haddock", "tilapia"}, nil},
	{TagShellfish, []string{"shrimp", "prawn", "crab", "lobster", "mussel", "oyster", "scallop"}, nil},
	{TagDairy, []string{"milk", "cheese", "yogurt", "yoghurt", "butter", "cream", "whey", "feta", "mozzarella", "parmesan", "skyr", "ricotta", "kefir", "halloumi"},
		[]string{"peanut butter", "almond butter", "cashew butter", "butternut", "almond milk", "soy milk", "oat milk", "coconut milk", "soy yogurt", "coconut yogurt", "cocoa butter"}},
	{TagEgg, []string{"egg", "omelette", "frittata", "mayonnaise"}, []string{"eggplant"}},
	{TagPeanut, []string{"peanut"}, nil},
	{TagTreeNut, []string{"almond", "walnut", "cashew", "pecan", "hazelnut", "pistachio", "macadamia", "brazil nut"}, nil},
	{TagGluten, []string{"wheat", "bread", "pasta", "spaghetti", "couscous", "barley", "rye", "bulgur", "seitan", "tortilla", "noodle", "bagel", "pita", "granola", "pizza"},
		[]string{"corn tortilla", "rice noodle", "gluten-free"}},
	{TagSoy, []string{"soy", "tofu", "tempeh", "edamame", "miso"}, nil},
	{TagSesame, []string{"sesame", "tahini", "hummus"}, nil},
	{TagHoney, []string{"honey"}, nil},
}

// Tags returns the tags a food's name reveals, sorted.
func Tags(name string) []string {
	name = normalize(name)
	var tags []string
	for _, tw := range tagWords {
		n := name
		for _, e := range tw.except {
			n = strings.ReplaceAll(n, " "+e+" ", " ")
		}
		for _, w := range tw.words {
			if hasWordPrefix(n, w) {
				tags = append(tags, tw.tag)
				break
			}
		}
	}
	slices.Sort(tags)
	return tags
}

// normalize lowercases s, turns everything but letters into spaces and
// pads it with spaces, so words can be found by " "+word.
func normalize(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) {
			return unicode.ToLower(r)
		}
		return ' '
	}, s)
	return " " + strings.Join(strings.Fields(s), " ") + " "
}

// hasWordPrefix reports whether a word (or phrase) of the normalized name
// starts with w.
func hasWordPrefix(normalized, w string) bool {
	w = strings.TrimSpace(normalize(w))
	return w != "" && strings.Contains(normalized, " "+w)
}

// DietExcludes returns the tags a diet rules out. Keto rules out no tag; it
// limits a day's carbohydrates instead (KetoMaxCarbsShare).
func DietExcludes(diet string) []string {
	switch diet {
	case DietVegetarian:
		return []string{TagMeat, TagFish, TagShellfish}
	case DietVegan:
		return []string{TagMeat, TagFish, TagShellfish, TagDairy, TagEgg, TagHoney}
	case DietPescatarian:
		return []string{TagMeat}
	}
	return nil
}

// KetoMaxCarbsShare is the largest share of a keto day's energy that may
// come from carbohydrates.
const KetoMaxCarbsShare = 0.10

// Forbidden reports why a food may not appear in a plan for diet and
// exclusions: the tag or excluded word it matched, or "" when it may.
// An exclusion matches a tag of the food or a word in its name.
func Forbidden(name string, tags []string, diet string, exclusions []string) string {
	for _, t := range DietExcludes(diet) {
		if slices.Contains(tags, t) {
			return t
		}
	}
	n := normalize(name)
	for _, x := range exclusions {
		x = strings.ToLower(strings.TrimSpace(x))
		if x == "" {
			continue
		}
		if slices.Contains(tags, x) || hasWordPrefix(n, x) {
			return x
		}
	}
	return ""
}
