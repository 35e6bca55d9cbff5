package mealdetector

import (
	"fmt"
	"math"
	"net/url"
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
	MaxItems     = 20
	MinGrams     = 1
	MaxGrams     = 2000
	MaxKcal      = 5000
	MaxURLLength = 4096

	// Energy per gram of protein, carbohydrate and fat (Atwater factors).
	KcalPerGramProtein = 4
	KcalPerGramCarbs   = 4
	KcalPerGramFat     = 9
	// An item's kcal may differ from its macros' energy by KcalTolerance of
	// that energy or by KcalToleranceAbs, whichever is larger: fibre, alcohol
	// and rounding make real foods deviate a little, never a lot.
	KcalTolerance    = 0.15
	KcalToleranceAbs = 10
)

// Validate checks the request against the contract; the error names the
// field.
func (r DetectRequest) Validate() error {
	if len(r.ImageURL) > MaxURLLength {
		return badRequest("image_url", fmt.Sprintf("%d characters", len(r.ImageURL)), fmt.Sprintf("at most %d characters", MaxURLLength))
	}
	u, err := url.Parse(r.ImageURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest("image_url", r.ImageURL, "an absolute http or https URL")
	}
	if !slices.Contains(ContentTypes, r.ContentType) {
		return badRequest("content_type", r.ContentType, strings.Join(ContentTypes, ", "))
	}
	if r.SizeBytes < 1 || r.SizeBytes > MaxImageBytes {
		return badRequest("size_bytes", r.SizeBytes, fmt.Sprintf("1..%d", MaxImageBytes))
	}
	return nil
}

// AtwaterKcal is the energy of the macronutrients.
func (n Nutrients) AtwaterKcal() float64 {
	return KcalPerGramProtein*n.ProteinG + KcalPerGramCarbs*n.CarbsG + KcalPerGramFat*n.FatG
}

// Check returns the first rule of a portion that n breaks: the field's name
// (relative: "grams", "kcal", "protein_g", ...), its value and the rule, or
// ok. Every number is finite; grams 1..2000; kcal 0..5000; each macro 0..grams
// and their sum at most grams; kcal consistent with the macros within
// KcalTolerance (or KcalToleranceAbs).
func (n Nutrients) Check() (field string, value any, rule string, ok bool) {
	for _, f := range []struct {
		name string
		v    float64
	}{{"grams", n.Grams}, {"kcal", n.Kcal}, {"protein_g", n.ProteinG}, {"carbs_g", n.CarbsG}, {"fat_g", n.FatG}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return f.name, f.v, "a finite number", false
		}
	}
	if n.Grams < MinGrams || n.Grams > MaxGrams {
		return "grams", n.Grams, fmt.Sprintf("%d..%d", MinGrams, MaxGrams), false
	}
	if n.Kcal < 0 || n.Kcal > MaxKcal {
		return "kcal", n.Kcal, fmt.Sprintf("0..%d", MaxKcal), false
	}
	for _, m := range []struct {
		name string
		v    float64
	}{{"protein_g", n.ProteinG}, {"carbs_g", n.CarbsG}, {"fat_g", n.FatG}} {
		if m.v < 0 || m.v > n.Grams {
			return m.name, m.v, fmt.Sprintf("0..grams (%g)", n.Grams), false
		}
	}
	// Half a gram of slack covers each macro rounded to one decimal.
	if sum := n.ProteinG + n.CarbsG + n.FatG; sum > n.Grams+0.5 {
		return "protein_g+carbs_g+fat_g", sum, fmt.Sprintf("at most grams (%g)", n.Grams), false
	}
	atwater := n.AtwaterKcal()
	if math.Abs(n.Kcal-atwater) > max(KcalTolerance*atwater, KcalToleranceAbs) {
		return "kcal", n.Kcal, fmt.Sprintf("within %.0f%% or %d kcal of the macros' %.0f kcal (4/4/9 per gram)",
			KcalTolerance*100, KcalToleranceAbs, atwater), false
	}
	return "", nil, "", true
}

// ValidateDetection checks a detection against the contract's rules; the
// error wraps ErrInvalidResponse and names the first field that broke one.
func ValidateDetection(d *Detection) error {
	if d == nil {
		return badResponse("detection", nil, "a detection object")
	}
	if !strings.HasPrefix(d.DetectionID, "md_") || len(d.DetectionID) > 128 {
		return badResponse("detection_id", d.DetectionID, `"md_" followed by an id, at most 128 characters`)
	}
	if len(d.Items) > MaxItems {
		return badResponse("items", fmt.Sprintf("%d items", len(d.Items)), fmt.Sprintf("at most %d items", MaxItems))
	}
	for i, it := range d.Items {
		field := fmt.Sprintf("items[%d]", i)
		if name := strings.TrimSpace(it.Name); name == "" || len(it.Name) > 200 {
			return badResponse(field+".name", it.Name, "a food name of 1..200 characters")
		}
		if f, v, rule, ok := it.Check(); !ok {
			return badResponse(field+"."+f, v, rule)
		}
		if !(it.Confidence >= 0 && it.Confidence <= 1) {
			return badResponse(field+".confidence", it.Confidence, "0..1")
		}
	}
	return nil
}
