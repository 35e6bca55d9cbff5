package mealdetector_test

import (
	"encoding/json"
	"errors"
	"testing"

	md "github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
)

// FuzzValidateDetection feeds arbitrary answers to the validation, which
// must never panic and must either accept or name ErrInvalidResponse.
func FuzzValidateDetection(f *testing.F) {
	f.Add([]byte(`{"detection_id":"md_1","model":"m","items":[{"name":"apple","grams":150,"kcal":78,"protein_g":0.5,"carbs_g":17,"fat_g":0.3,"confidence":0.9}]}`))
	f.Add([]byte(`{"detection_id":"md_1","items":[{"name":"x","grams":1e308,"kcal":-1}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var d md.Detection
		if json.Unmarshal(body, &d) != nil {
			return
		}
		if err := md.ValidateDetection(&d); err != nil && !errors.Is(err, md.ErrInvalidResponse) {
			t.Fatalf("ValidateDetection = %v, want nil or ErrInvalidResponse", err)
		}
	})
}
