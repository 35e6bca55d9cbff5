// Package mealdetector is the typed client of the outside meal photo
// detection service (POST /v1/detections). The wire contract is written down
// in docs/integrations.md; the types here are its JSON, and ValidateDetection
// checks every answer against the contract's rules before a caller may use it.
package mealdetector

// Content types the detector reads.
const (
	ContentTypeJPEG = "image/jpeg"
	ContentTypePNG  = "image/png"
	ContentTypeHEIC = "image/heic"
)

// ContentTypes lists every content type the detector reads.
var ContentTypes = []string{ContentTypeJPEG, ContentTypePNG, ContentTypeHEIC}

// MaxImageBytes is the largest image the detector downloads (10 MiB).
const MaxImageBytes = 10 << 20

// DetectRequest is the body of POST /v1/detections.
type DetectRequest struct {
	// ImageURL is a presigned GET URL the service downloads the photo from.
	ImageURL    string `json:"image_url"`
	ContentType string `json:"content_type"`
	SizeBytes   int64  `json:"size_bytes"` // 1..MaxImageBytes
}

// Detection is the detector's 200 answer.
type Detection struct {
	DetectionID string `json:"detection_id"` // "md_" + hex
	Model       string `json:"model"`
	Items       []Item `json:"items"` // 0..20
}

// Item is one food found on the plate.
type Item struct {
	Name string `json:"name"`
	Nutrients
	Confidence float64 `json:"confidence"` // 0..1
}

// Nutrients is a portion of food: its weight, energy and macronutrients.
// The meal planner's items carry the same fields, so both services share
// this type and its rules (Nutrients.Check).
type Nutrients struct {
	Grams    float64 `json:"grams"`
	Kcal     float64 `json:"kcal"`
	ProteinG float64 `json:"protein_g"`
	CarbsG   float64 `json:"carbs_g"`
	FatG     float64 `json:"fat_g"`
}
