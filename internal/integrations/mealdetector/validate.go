package mealdetector

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
)

// ErrInvalidRequest is wrapped by every error DetectRequest.Validate returns.
var ErrInvalidRequest = errors.New("mealdetector: invalid request")

// ErrInvalidResponse is wrapped by every error ValidateDetection returns: the
// detector answered 200 with values that are absurd or inconsistent, so the
// answer must be rejected and recorded, never shown.
var ErrInvalidResponse = errors.New("mealdetector: invalid response")

// FieldError names the field that broke a rule and the value it had, so a
// caller can record why a request or detection was refused (errors.As).
type FieldError struct {
	Field string // JSON path, for example "items[2].kcal"
	Value any
	Rule  string // what the contract wants, for example "0..5000"
	kind  error  // ErrInvalidRequest or ErrInvalidResponse
}

func (e *FieldError) Error() string { return fmt.Sprintf("%v: %s", e.kind, e.Detail()) }

// Detail is the message without the package prefix, as a service writes it
// into its error body.
func (e *FieldError) Detail() string {
	v := fmt.Sprint(e.Value)
	if s, ok := e.Value.(string); ok {
		v = fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%s = %s: want %s", e.Field, v, e.Rule)
}

func (e *FieldError) Unwrap() error { return e.kind }

func badRequest(field string, value any, rule string) error {
	return &FieldError{Field: field, Value: value, Rule: rule, kind: ErrInvalidRequest}
}

func badResponse(field string, value any, rule string) error {
	return &FieldError{Field: field, Value: value, Rule: rule, kind: ErrInvalidResponse}
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
