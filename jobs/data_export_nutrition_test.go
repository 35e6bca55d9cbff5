package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"

	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/jobs"
)

// seedNutrition gives u a meal photo in S3 with its analysis, a meal,
// targets, a meal plan request and a cached meal plan in MongoDB, and
// returns the photo's key.
func (b *gdprBundle) seedNutrition(t *testing.T, u seededUser) string {
	t.Helper()
	ctx := context.Background()
	key, err := b.keys.Unwrap(u.ID.String(), u.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	upload := uuid.Must(uuid.NewV7())
	photoKey := "users/" + u.ID.String() + "/meal-photos/" + upload.String() + ".jpg"
	if err := b.store.Put(ctx, photoKey, "image/jpeg", bytes.NewReader([]byte("jpeg")), 4); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO meal_photo_uploads (id, user_id, object_key, content_type, size_bytes, expires_at) VALUES ($1, $2, $3, 'image/jpeg', 4, now())`, upload, u.ID, photoKey)
	analysisItems, err := jobs.SealFoodItems(key, jobs.EncColAnalysisItems, []jobs.FoodItem{{Name: "detected lentil curry", Grams: 300, Kcal: 350}})
	if err != nil {
		t.Fatal(err)
	}
	var analysis uuid.UUID
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO meal_analyses (user_id, upload_id, status, items_enc, ready_at) VALUES ($1, $2, 'ready', $3, now()) RETURNING id`,
		u.ID, upload, analysisItems).Scan(&analysis); err != nil {
		t.Fatal(err)
	}
	mealItems, err := jobs.SealFoodItems(key, jobs.EncColMealItems, []jobs.FoodItem{{Name: "logged lentil curry", Grams: 300, Kcal: 350}})
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO meals (user_id, eaten_at, meal_type, items_enc, analysis_id) VALUES ($1, now(), 'dinner', $2, $3)`, u.ID, mealItems, analysis)
	b.exec(t, `INSERT INTO macro_targets (user_id, kcal, protein_g, carbs_g, fat_g) VALUES ($1, 2100, 140, 230, 70)`, u.ID)
	b.exec(t, `INSERT INTO meal_plan_requests (user_id, days, kcal_target, diet, cache_key, status, plan) VALUES ($1, 1, 2100, 'vegan', $2, 'ready', '{"meal_plan_id":"mp_1","days":[]}')`, u.ID, "k-"+u.ID.String())
	if b.mongo != nil {
		if _, err := aicache.New(b.mongo, jobs.MealPlanCollection).Put(ctx, "k-"+u.ID.String(), u.ID.String(), map[string]string{"meal_plan_id": "mp_1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	return photoKey
}

func TestNutritionGDPR(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupGDPR(t, true)
	u, other := b.seedUser(t, "nora"), b.seedUser(t, "otto")
	photo := b.seedNutrition(t, u)
	otherPhoto := b.seedNutrition(t, other)

	if _, err := workExport(t, b, b.exportWorker(time.Now().UTC()), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil); err != nil {
		t.Fatalf("export: %v", err)
	}
	var a struct {
		Nutrition struct {
			PhotoUploads []struct {
				ObjectKey string `json:"object_key"`
			} `json:"photo_uploads"`
			Analyses     []struct{ Items []jobs.FoodItem } `json:"analyses"`
			Meals        []struct{ Items []jobs.FoodItem } `json:"meals"`
			MacroTargets *struct{ Kcal float64 }           `json:"macro_targets"`
			MealPlans    []struct{ Diet string }           `json:"meal_plans"`
		} `json:"nutrition"`
	}
	raw := download(t, b, jobs.ExportObjectKey(u.ID, u.PendingExport))
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	n := a.Nutrition
	if len(n.PhotoUploads) != 1 || n.PhotoUploads[0].ObjectKey != photo ||
		len(n.Analyses) != 1 || n.Analyses[0].Items[0].Name != "detected lentil curry" ||
		len(n.Meals) != 1 || n.Meals[0].Items[0].Name != "logged lentil curry" ||
		n.MacroTargets == nil || n.MacroTargets.Kcal != 2100 || len(n.MealPlans) != 1 || n.MealPlans[0].Diet != "vegan" {
		t.Fatalf("nutrition export = %+v", n)
	}
	if strings.Contains(string(raw), other.ID.String()) {
		t.Fatal("the archive holds the other member's nutrition data")
	}

	b.closeAccount(t, u.ID)
	worker := rivertest.NewWorker(t, riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)},
		&jobs.AccountErasureWorker{DB: b.tdb.Pool, Erasure: b.erasureRegistry()})
	tx, err := b.tdb.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := worker.Work(ctx, t, tx, jobs.AccountErasureArgs{UserID: u.ID}, nil)
	if err != nil || res.EventKind != river.EventKindJobCompleted {
		t.Fatalf("erasure: %v, %+v", err, res)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"meal_photo_uploads", "meal_analyses", "meals", "macro_targets", "meal_plan_requests"} {
		var mine, theirs int
		if err := b.tdb.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE user_id = $1), count(*) FILTER (WHERE user_id = $2) FROM `+table, u.ID, other.ID).Scan(&mine, &theirs); err != nil {
			t.Fatal(err)
		}
		if mine != 0 || theirs != 1 {
			t.Fatalf("%s after erasure: %d rows of the erased member, %d of the other; want 0 and 1", table, mine, theirs)
		}
	}
	keys := b.bucketKeys(t)
	if slices.Contains(keys, photo) || !slices.Contains(keys, otherPhoto) {
		t.Fatalf("bucket after erasure = %v, want the erased member's photo gone and the other's kept", keys)
	}
	cache := aicache.New(b.mongo, jobs.MealPlanCollection)
	if _, found, err := cache.Latest(ctx, u.ID.String()); err != nil || found {
		t.Fatalf("cached meal plan of the erased member: found %v, %v", found, err)
	}
	if _, found, err := cache.Latest(ctx, other.ID.String()); err != nil || !found {
		t.Fatalf("cached meal plan of the other member: found %v, %v", found, err)
	}
}
