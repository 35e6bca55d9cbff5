package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// The nutrition part of the GDPR export: photo uploads (the photos stay in
// S3 under the member's prefix; the archive lists them), the detector's
// analyses, meals with their foods decrypted, targets and meal plan
// requests with the plans they got. Cached plans in MongoDB are copies of
// the plans listed here, so they add nothing to the archive.
type (
	exportNutrition struct {
		PhotoUploads []exportMealUpload   `json:"photo_uploads"`
		Analyses     []exportMealAnalysis `json:"analyses"`
		Meals        []exportMeal         `json:"meals"`
		MacroTargets *exportMacroTargets  `json:"macro_targets"`
		MealPlans    []exportMealPlan     `json:"meal_plans"`
	}
	exportMealUpload struct {
		ID          uuid.UUID `json:"id"`
		ObjectKey   string    `json:"object_key"`
		ContentType string    `json:"content_type"`
		SizeBytes   int64     `json:"size_bytes"`
		CreatedAt   time.Time `json:"created_at"`
	}
	exportMealAnalysis struct {
		ID            uuid.UUID  `json:"id"`
		UploadID      uuid.UUID  `json:"upload_id"`
		Status        string     `json:"status"`
		FailureReason string     `json:"failure_reason,omitempty"`
		Items         []FoodItem `json:"items"`
		RequestedAt   time.Time  `json:"requested_at"`
		ReadyAt       *time.Time `json:"ready_at,omitempty"`
	}
	exportMeal struct {
		ID           uuid.UUID  `json:"id"`
		ClientMealID string     `json:"client_meal_id,omitempty"`
		EatenAt      time.Time  `json:"eaten_at"`
		MealType     string     `json:"meal_type"`
		Items        []FoodItem `json:"items"`
		AnalysisID   *uuid.UUID `json:"analysis_id,omitempty"`
		CreatedAt    time.Time  `json:"created_at"`
		UpdatedAt    time.Time  `json:"updated_at"`
	}
	exportMacroTargets struct {
		Kcal        float64   `json:"kcal"`
		ProteinG    float64   `json:"protein_g"`
		CarbsG      float64   `json:"carbs_g"`
		FatG        float64   `json:"fat_g"`
		FromProfile bool      `json:"from_profile"`
		UpdatedAt   time.Time `json:"updated_at"`
	}
	exportMealPlan struct {
		ID            uuid.UUID       `json:"id"`
		Days          int32           `json:"days"`
		KcalTarget    float64         `json:"kcal_target"`
		Diet          string          `json:"diet"`
		Exclusions    []string        `json:"exclusions"`
		Status        string          `json:"status"`
		FailureReason string          `json:"failure_reason,omitempty"`
		Stale         bool            `json:"stale"`
		Plan          json.RawMessage `json:"plan,omitempty"`
		RequestedAt   time.Time       `json:"requested_at"`
	}
)

// readNutrition adds the member's nutrition data to the archive.
func readNutrition(ctx context.Context, tx pgx.Tx, dk *fieldcrypt.DataKey, userID uuid.UUID, a *exportArchive) error {
	n := exportNutrition{
		PhotoUploads: []exportMealUpload{}, Analyses: []exportMealAnalysis{},
		Meals: []exportMeal{}, MealPlans: []exportMealPlan{},
	}
	uploads, err := mealQueries.MealUploadsForUser(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read meal photo uploads: %w", err)
	}
	for _, u := range uploads {
		n.PhotoUploads = append(n.PhotoUploads, exportMealUpload{ID: u.ID, ObjectKey: u.ObjectKey, ContentType: u.ContentType, SizeBytes: u.SizeBytes, CreatedAt: u.CreatedAt})
	}
	analyses, err := mealQueries.MealAnalysesForUser(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read meal analyses: %w", err)
	}
	for _, r := range analyses {
		items, err := OpenFoodItems(dk, EncColAnalysisItems, r.ItemsEnc)
		if err != nil {
			return fmt.Errorf("meal analysis %s: %w", r.ID, err)
		}
		e := exportMealAnalysis{ID: r.ID, UploadID: r.UploadID, Status: r.Status, FailureReason: r.FailureReason, Items: items, RequestedAt: r.RequestedAt}
		if r.ReadyAt.Valid {
			e.ReadyAt = &r.ReadyAt.Time
		}
		n.Analyses = append(n.Analyses, e)
	}
	meals, err := mealQueries.MealsForUser(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read meals: %w", err)
	}
	for _, m := range meals {
		items, err := OpenFoodItems(dk, EncColMealItems, m.ItemsEnc)
		if err != nil {
			return fmt.Errorf("meal %s: %w", m.ID, err)
		}
		e := exportMeal{ID: m.ID, ClientMealID: m.ClientMealID, EatenAt: m.EatenAt, MealType: m.MealType, Items: items, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
		if m.AnalysisID.Valid {
			e.AnalysisID = &m.AnalysisID.UUID
		}
		n.Meals = append(n.Meals, e)
	}
	t, err := mealQueries.MacroTargetsGet(ctx, tx, userID)
	switch {
	case err == nil:
		n.MacroTargets = &exportMacroTargets{Kcal: t.Kcal, ProteinG: t.ProteinG, CarbsG: t.CarbsG, FatG: t.FatG, FromProfile: t.FromProfile, UpdatedAt: t.UpdatedAt}
	case !db.IsNotFound(err):
		return fmt.Errorf("read macro targets: %w", err)
	}
	plans, err := mealQueries.MealPlanRequestsForUser(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read meal plan requests: %w", err)
	}
	for _, p := range plans {
		n.MealPlans = append(n.MealPlans, exportMealPlan{
			ID: p.ID, Days: p.Days, KcalTarget: p.KcalTarget, Diet: p.Diet, Exclusions: p.Exclusions,
			Status: p.Status, FailureReason: p.FailureReason, Stale: p.Stale, Plan: p.Plan, RequestedAt: p.RequestedAt,
		})
	}
	a.Nutrition = n
	return nil
}
