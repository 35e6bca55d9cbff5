package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/internal/testkit/mongotest"
	"github.com/nxg-fitness/nxg/jobs"
)

// nutritionTestBundle is the API with MongoDB, the meal detector and meal
// planner simulators, and a River client working the ai queue's nutrition
// jobs, so requests go all the way to the simulators and back.
type nutritionTestBundle struct {
	*apiTestBundle
	detector *devstack.MealDetector
	planner  *devstack.MealPlanner
}

func setupNutrition(t *testing.T) *nutritionTestBundle {
	t.Helper()
	logger := testkit.Logger(t, slog.LevelError)
	detector, err := devstack.StartMealDetector(logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = detector.Close() })
	planner, err := devstack.StartMealPlanner(logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = planner.Close() })
	client := func(name, url, key string) *integrations.Client {
		c, err := integrations.New(integrations.Config{
			Name: name, BaseURL: url, APIKey: key, MaxAttempts: 2,
			BackoffInitial: time.Millisecond, BackoffMax: 2 * time.Millisecond, FailureThreshold: 100,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	b := setupAPI(t, func(o *Options) {
		o.Mongo = mongotest.New(t, o.Pool.Config().ConnString())
		workers := river.NewWorkers()
		river.AddWorker(workers, &jobs.MealAnalysisWorker{
			Pool: o.Pool, Storage: o.Identity.Storage, MasterKeys: o.Identity.MasterKeys, Logger: logger,
			Detector: mealdetector.New(client(mealdetector.Name, detector.URL(), detector.APIKey())),
		})
		river.AddWorker(workers, &jobs.MealPlanWorker{
			Pool: o.Pool, Mongo: o.Mongo, Logger: logger,
			Planner: mealplanner.New(client(mealplanner.Name, planner.URL(), planner.APIKey())),
		})
		rc, err := river.NewClient(riverpgxv5.New(o.Pool), &river.Config{
			Queues:            map[string]river.QueueConfig{jobs.QueueAI: {MaxWorkers: 4}},
			Workers:           workers,
			Logger:            logger,
			FetchCooldown:     5 * time.Millisecond,
			FetchPollInterval: 20 * time.Millisecond,
			TestOnly:          true,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := rc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			<-rc.Stopped()
		})
		o.Identity.River = rc
	})
	return &nutritionTestBundle{apiTestBundle: b, detector: detector, planner: planner}
}

func (b *nutritionTestBundle) nutritionClient(accessToken string) nxgv1connect.NutritionServiceClient {
	bearer := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+accessToken)
			return next(ctx, req)
		}
	})
	return nxgv1connect.NewNutritionServiceClient(http.DefaultClient, b.server.URL, connect.WithInterceptors(bearer))
}

// nutritionCode asserts err is a Connect error with code mentioning mention.
func nutritionCode(t *testing.T, err error, code connect.Code, mention string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || !strings.Contains(ce.Error(), mention) {
		t.Fatalf("error = %v, want %v mentioning %q", err, code, mention)
	}
}

// uploadPhoto asks for an upload URL and PUTs photo there.
func uploadPhoto(t *testing.T, c nxgv1connect.NutritionServiceClient, contentType string, photo []byte) string {
	t.Helper()
	ctx := context.Background()
	res, err := c.CreateMealPhotoUpload(ctx, connect.NewRequest(&nxgv1.CreateMealPhotoUploadRequest{ContentType: contentType, SizeBytes: int64(len(photo))}))
	if err != nil {
		t.Fatalf("CreateMealPhotoUpload: %v", err)
	}
	if d := time.Until(res.Msg.GetExpiresAt().AsTime()); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("upload expires in %s, want about 10 minutes", d)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, res.Msg.GetUploadUrl(), bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	// The app sends what the response says, which must be what the
	// signature covers.
	if want := storage.UploadHeaders(contentType); len(res.Msg.GetUploadHeaders()) != len(want) {
		t.Fatalf("upload_headers = %v, want %v", res.Msg.GetUploadHeaders(), want)
	}
	for name, value := range res.Msg.GetUploadHeaders() {
		req.Header.Set(name, value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presigned PUT status %d", resp.StatusCode)
	}
	return res.Msg.GetUploadId()
}

func waitAnalysis(t *testing.T, c nxgv1connect.NutritionServiceClient, id string, done func(*nxgv1.MealAnalysis) bool) *nxgv1.MealAnalysis {
	t.Helper()
	var a *nxgv1.MealAnalysis
	waitUntil(t, "meal analysis "+id, func() bool {
		res, err := c.GetMealAnalysis(context.Background(), connect.NewRequest(&nxgv1.GetMealAnalysisRequest{AnalysisId: id}))
		if err != nil {
			t.Fatalf("GetMealAnalysis: %v", err)
		}
		a = res.Msg.GetAnalysis()
		return done(a)
	})
	return a
}

func waitMealPlan(t *testing.T, c nxgv1connect.NutritionServiceClient, id string, done func(*nxgv1.MealPlan) bool) *nxgv1.MealPlan {
	t.Helper()
	var p *nxgv1.MealPlan
	waitUntil(t, "meal plan "+id, func() bool {
		res, err := c.GetMealPlan(context.Background(), connect.NewRequest(&nxgv1.GetMealPlanRequest{MealPlanRequestId: id}))
		if err != nil {
			t.Fatalf("GetMealPlan: %v", err)
		}
		p = res.Msg.GetPlan()
		return done(p)
	})
	return p
}

func item(name string, kcal, protein, carbs, fat float64) *nxgv1.FoodItem {
	return &nxgv1.FoodItem{Name: name, Grams: 100, Kcal: kcal, ProteinG: protein, CarbsG: carbs, FatG: fat}
}

func TestNutritionService(t *testing.T) {
	ctx := context.Background()
	b := setupNutrition(t)
	userID, tok := b.newMember(t)
	c := b.nutritionClient(tok)
	_, otherTok := b.newMember(t)
	other := b.nutritionClient(otherTok)
	photo, err := devstack.FakeMealPhoto(mealdetector.ContentTypeJPEG, "dinner")
	if err != nil {
		t.Fatal(err)
	}

	var readyAnalysis *nxgv1.MealAnalysis
	t.Run("photo upload and analysis", func(t *testing.T) {
		uploadID := uploadPhoto(t, c, mealdetector.ContentTypeJPEG, photo)
		var key string
		if err := b.db.Pool.QueryRow(ctx, `SELECT object_key FROM meal_photo_uploads WHERE id = $1`, uploadID).Scan(&key); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "users/"+userID.String()+"/") {
			t.Fatalf("object key %q is not under the member's prefix, so erasure would miss it", key)
		}
		res, err := c.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: uploadID}))
		if err != nil {
			t.Fatalf("AnalyzeMealPhoto: %v", err)
		}
		if res.Msg.GetAnalysis().GetStatus() == nxgv1.AIStatus_AI_STATUS_FAILED {
			t.Fatalf("analysis = %v", res.Msg.GetAnalysis())
		}
		again, err := c.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: uploadID}))
		if err != nil || again.Msg.GetAnalysisId() != res.Msg.GetAnalysisId() {
			t.Fatalf("second AnalyzeMealPhoto = %v, %v; want the same analysis", again, err)
		}
		_, err = other.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: uploadID}))
		nutritionCode(t, err, connect.CodeNotFound, uploadID)

		readyAnalysis = waitAnalysis(t, c, res.Msg.GetAnalysisId(), func(a *nxgv1.MealAnalysis) bool { return a.GetStatus() != nxgv1.AIStatus_AI_STATUS_PENDING })
		if readyAnalysis.GetStatus() != nxgv1.AIStatus_AI_STATUS_READY || len(readyAnalysis.GetItems()) == 0 {
			t.Fatalf("analysis = %v, want ready with items", readyAnalysis)
		}
		var kcal float64
		for _, it := range readyAnalysis.GetItems() {
			kcal += it.GetKcal()
		}
		if math.Abs(kcal-readyAnalysis.GetTotals().GetKcal()) > 0.1 {
			t.Fatalf("totals %v do not sum the items (%g kcal)", readyAnalysis.GetTotals(), kcal)
		}
		reqs := b.detector.Requests()
		if len(reqs) != 1 || reqs[0].IdempotencyKey != "meal-analysis-"+res.Msg.GetAnalysisId() {
			t.Fatalf("detector saw %+v, want one call keyed by the analysis", reqs)
		}
	})

	t.Run("declared size differs from the upload", func(t *testing.T) {
		res, err := c.CreateMealPhotoUpload(ctx, connect.NewRequest(&nxgv1.CreateMealPhotoUploadRequest{ContentType: "image/png", SizeBytes: 1234}))
		if err != nil {
			t.Fatal(err)
		}
		// The signed URL refuses another type or size, so the object is put
		// with the server's own credentials, as a buggy client path would.
		var key string
		if err := b.db.Pool.QueryRow(ctx, `SELECT object_key FROM meal_photo_uploads WHERE id = $1`, res.Msg.GetUploadId()).Scan(&key); err != nil {
			t.Fatal(err)
		}
		if err := b.identity.Storage.Put(ctx, key, "image/jpeg", bytes.NewReader(photo), int64(len(photo))); err != nil {
			t.Fatal(err)
		}
		an, err := c.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: res.Msg.GetUploadId()}))
		if err != nil {
			t.Fatal(err)
		}
		a := waitAnalysis(t, c, an.Msg.GetAnalysisId(), func(a *nxgv1.MealAnalysis) bool { return a.GetStatus() != nxgv1.AIStatus_AI_STATUS_PENDING })
		if a.GetStatus() != nxgv1.AIStatus_AI_STATUS_FAILED || !strings.Contains(a.GetFailureReason(), "1234") {
			t.Fatalf("analysis = %v, want failed naming the declared size", a)
		}
	})

	t.Run("detector outage: pending with a reason, RPC fast", func(t *testing.T) {
		b.detector.SetKnobs(devstack.SimKnobs{Outage: true})
		t.Cleanup(func() { b.detector.SetKnobs(devstack.SimKnobs{}) })
		uploadID := uploadPhoto(t, c, mealdetector.ContentTypeJPEG, photo)
		start := time.Now()
		res, err := c.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: uploadID}))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("AnalyzeMealPhoto took %s during an outage", d)
		}
		a := waitAnalysis(t, c, res.Msg.GetAnalysisId(), func(a *nxgv1.MealAnalysis) bool { return a.GetFailureReason() != "" })
		if a.GetStatus() != nxgv1.AIStatus_AI_STATUS_PENDING {
			t.Fatalf("analysis during an outage = %v, want pending with a reason", a)
		}
	})

	t.Run("meals", func(t *testing.T) {
		base := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
		log := func(clientID string, at time.Time, items ...*nxgv1.FoodItem) *nxgv1.Meal {
			t.Helper()
			res, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
				EatenAt: timestamppb.New(at), MealType: nxgv1.MealType_MEAL_TYPE_LUNCH, Items: items, ClientMealId: clientID,
			}))
			if err != nil {
				t.Fatalf("LogMeal: %v", err)
			}
			return res.Msg.GetMeal()
		}
		first := log("m-1", base, item("rice", 130, 2.7, 28, 0.3), item("chicken", 165, 31, 0, 3.6))
		if first.GetTotals().GetKcal() != 295 || first.GetTotals().GetProteinG() != 33.7 {
			t.Fatalf("totals = %v", first.GetTotals())
		}
		if again := log("m-1", base.Add(time.Hour), item("other", 1, 0, 0, 0)); again.GetId() != first.GetId() || len(again.GetItems()) != 2 {
			t.Fatalf("retry with the same client_meal_id = %v, want the first meal", again)
		}
		// The foods are sealed at rest.
		var sealed []byte
		if err := b.db.Pool.QueryRow(ctx, `SELECT items_enc FROM meals WHERE id = $1`, first.GetId()).Scan(&sealed); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, []byte("chicken")) {
			t.Fatal("meal items are stored in the clear")
		}

		for _, tc := range []struct {
			at      time.Time
			mention string
		}{
			{time.Now().Add(25 * time.Hour), "eaten_at"},
			{time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), "eaten_at"},
		} {
			_, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{EatenAt: timestamppb.New(tc.at), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, Items: []*nxgv1.FoodItem{item("x", 1, 0, 0, 0)}}))
			nutritionCode(t, err, connect.CodeInvalidArgument, tc.mention)
		}
		// From an analysis: the caller's ready one only.
		fromAnalysis, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
			EatenAt: timestamppb.New(base.Add(time.Minute)), MealType: nxgv1.MealType_MEAL_TYPE_DINNER,
			Items: readyAnalysis.GetItems(), AnalysisId: readyAnalysis.GetId(),
		}))
		if err != nil || fromAnalysis.Msg.GetMeal().GetAnalysisId() != readyAnalysis.GetId() {
			t.Fatalf("LogMeal from an analysis = %v, %v", fromAnalysis, err)
		}
		_, err = other.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
			EatenAt: timestamppb.New(base), MealType: nxgv1.MealType_MEAL_TYPE_DINNER, Items: readyAnalysis.GetItems(), AnalysisId: readyAnalysis.GetId(),
		}))
		nutritionCode(t, err, connect.CodeNotFound, readyAnalysis.GetId())

		upd, err := c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{
			MealId: first.GetId(), MealType: nxgv1.MealType_MEAL_TYPE_BREAKFAST, Items: []*nxgv1.FoodItem{item("oats", 380, 13, 67, 7)},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"items", "meal_type"}},
		}))
		if err != nil {
			t.Fatalf("UpdateMeal: %v", err)
		}
		if m := upd.Msg.GetMeal(); m.GetMealType() != nxgv1.MealType_MEAL_TYPE_BREAKFAST || m.GetTotals().GetKcal() != 380 || !m.GetEatenAt().AsTime().Equal(base) {
			t.Fatalf("updated meal = %v", m)
		}
		_, err = c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: first.GetId(), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"totals"}}}))
		nutritionCode(t, err, connect.CodeInvalidArgument, "update_mask")
		_, err = other.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: first.GetId(), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"meal_type"}}}))
		nutritionCode(t, err, connect.CodeNotFound, first.GetId())

		// Paging newest first over five more meals, one hour apart.
		var want []string
		for i := 4; i >= 0; i-- {
			want = append(want, log("", base.Add(time.Duration(i+1)*time.Hour), item("apple", 52, 0.3, 14, 0.2)).GetId())
		}
		want = want[:4]
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			res, err := c.ListMeals(ctx, connect.NewRequest(&nxgv1.ListMealsRequest{
				StartTime: timestamppb.New(base.Add(90 * time.Minute)), PageSize: 3, PageToken: token,
			}))
			if err != nil {
				t.Fatalf("ListMeals: %v", err)
			}
			for _, m := range res.Msg.GetMeals() {
				got = append(got, m.GetId())
			}
			if token = res.Msg.GetNextPageToken(); token == "" || pages > 5 {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("listed %v, want %v (newest first, from start_time)", got, want)
		}

		for range 2 {
			if _, err := c.DeleteMeal(ctx, connect.NewRequest(&nxgv1.DeleteMealRequest{MealId: first.GetId()})); err != nil {
				t.Fatalf("DeleteMeal: %v", err)
			}
		}
		_, err = c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: first.GetId(), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"meal_type"}}}))
		nutritionCode(t, err, connect.CodeNotFound, first.GetId())
	})

	t.Run("targets from the profile", func(t *testing.T) {
		pc := b.profileClient(tok)
		_, err := c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_FromProfile{FromProfile: true}}))
		nutritionCode(t, err, connect.CodeFailedPrecondition, "sex, date_of_birth, height_cm, weight_kg (record body metrics), activity_level")

		dob := time.Now().UTC().AddDate(-30, 0, -10).Format(time.DateOnly)
		updateProfile(t, pc, &nxgv1.Profile{
			DateOfBirth: dob, Sex: nxgv1.Sex_SEX_MALE, HeightCm: 180,
			ActivityLevel: nxgv1.ActivityLevel_ACTIVITY_LEVEL_MODERATE, FitnessGoal: nxgv1.FitnessGoal_FITNESS_GOAL_BUILD_MUSCLE,
		}, "date_of_birth", "sex", "height_cm", "activity_level", "fitness_goal")
		_, err = c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_FromProfile{FromProfile: true}}))
		nutritionCode(t, err, connect.CodeFailedPrecondition, "weight_kg")
		for _, w := range []float64{95, 80} { // the latest counts
			if _, err := pc.RecordBodyMetrics(ctx, connect.NewRequest(&nxgv1.RecordBodyMetricsRequest{
				MeasuredAt: timestamppb.New(time.Now().Add(-time.Duration(w) * time.Minute)), WeightKg: &w,
			})); err != nil {
				t.Fatal(err)
			}
		}
		res, err := c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_FromProfile{FromProfile: true}}))
		if err != nil {
			t.Fatalf("SetMacroTargets: %v", err)
		}
		// BMR = 10·80 + 6.25·180 − 5·30 + 5 = 1780; × 1.55 (moderate) =
		// 2759; × 1.10 (build muscle) = 3034.9 → 3035 kcal. Protein 2.0 g/kg
		// = 160 g; fat 25% = 3035·0.25/9 = 84.3 → 84 g; carbs
		// (3035 − 4·160 − 9·84)/4 = 409.75 → 410 g.
		got := res.Msg.GetTargets()
		if got.GetKcal() != 3035 || got.GetProteinG() != 160 || got.GetFatG() != 84 || got.GetCarbsG() != 410 || !got.GetFromProfile() {
			t.Fatalf("targets = %v, want 3035 kcal, 160 g protein, 84 g fat, 410 g carbs", got)
		}
	})

	t.Run("daily totals across a time zone boundary", func(t *testing.T) {
		_, tok := b.newMember(t)
		c := b.nutritionClient(tok)
		updateProfile(t, b.profileClient(tok), &nxgv1.Profile{Timezone: "America/New_York"}, "timezone")
		// 2026-01-15 in New York (UTC−5) is 05:00Z on the 15th to 05:00Z on the 16th.
		for _, at := range []string{"2026-01-15T04:59:00Z", "2026-01-15T05:00:00Z", "2026-01-16T04:59:00Z", "2026-01-16T05:00:00Z"} {
			ts, _ := time.Parse(time.RFC3339, at)
			if _, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
				EatenAt: timestamppb.New(ts), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, Items: []*nxgv1.FoodItem{item(at, 100, 10, 5, 2)},
			})); err != nil {
				t.Fatal(err)
			}
		}
		day := func() *nxgv1.GetDailyNutritionResponse {
			res, err := c.GetDailyNutrition(ctx, connect.NewRequest(&nxgv1.GetDailyNutritionRequest{Date: "2026-01-15"}))
			if err != nil {
				t.Fatalf("GetDailyNutrition: %v", err)
			}
			return res.Msg
		}
		d := day()
		if d.GetTimeZone() != "America/New_York" || len(d.GetMeals()) != 2 ||
			d.GetMeals()[0].GetItems()[0].GetName() != "2026-01-15T05:00:00Z" || d.GetMeals()[1].GetItems()[0].GetName() != "2026-01-16T04:59:00Z" {
			t.Fatalf("day = %v, want the two meals inside New York's 15 January", d)
		}
		if d.GetTotals().GetKcal() != 200 || d.GetTotals().GetProteinG() != 20 || d.GetTargets() != nil || d.GetRemaining() != nil {
			t.Fatalf("totals %v, targets %v, remaining %v", d.GetTotals(), d.GetTargets(), d.GetRemaining())
		}
		if _, err := c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_Given{
			Given: &nxgv1.GivenMacroTargets{Kcal: 2000, ProteinG: 150, CarbsG: 200, FatG: 60},
		}})); err != nil {
			t.Fatal(err)
		}
		if r := day().GetRemaining(); r.GetKcal() != 1800 || r.GetProteinG() != 130 || r.GetCarbsG() != 190 || r.GetFatG() != 56 {
			t.Fatalf("remaining = %v", r)
		}
	})

	t.Run("meal plans", func(t *testing.T) {
		_, tok := b.newMember(t)
		c := b.nutritionClient(tok)
		ask := func(clientID string, days int32) *nxgv1.RequestMealPlanResponse {
			t.Helper()
			res, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{
				Days: days, Diet: nxgv1.Diet_DIET_VEGETARIAN, Exclusions: []string{"Peanut", "dairy"}, ClientRequestId: clientID,
			}))
			if err != nil {
				t.Fatalf("RequestMealPlan: %v", err)
			}
			return res.Msg
		}
		_, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{Days: 2}))
		nutritionCode(t, err, connect.CodeFailedPrecondition, "kcal_target")
		if _, err := c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_Given{
			Given: &nxgv1.GivenMacroTargets{Kcal: 2300, ProteinG: 140, CarbsG: 260, FatG: 75},
		}})); err != nil {
			t.Fatal(err)
		}
		before := len(b.planner.Requests())
		first := ask("plan-1", 3)
		if again := ask("plan-1", 3); again.GetMealPlanRequestId() != first.GetMealPlanRequestId() {
			t.Fatalf("retry with the same client_request_id gave %s, want %s", again.GetMealPlanRequestId(), first.GetMealPlanRequestId())
		}
		p := waitMealPlan(t, c, first.GetMealPlanRequestId(), func(p *nxgv1.MealPlan) bool { return p.GetStatus() != nxgv1.AIStatus_AI_STATUS_PENDING })
		if p.GetStatus() != nxgv1.AIStatus_AI_STATUS_READY || p.GetFromCache() || len(p.GetDays()) != 3 || p.GetKcalTarget() != 2300 {
			t.Fatalf("plan = %v", p)
		}
		for _, d := range p.GetDays() {
			if math.Abs(d.GetTotals().GetKcal()-2300)/2300 > 0.05 {
				t.Fatalf("day %d has %g kcal, want within 5%% of 2300", d.GetDayIndex(), d.GetTotals().GetKcal())
			}
		}
		reqs := b.planner.Requests()[before:]
		if len(reqs) != 1 || reqs[0].IdempotencyKey != "meal-plan-"+first.GetMealPlanRequestId() {
			t.Fatalf("planner saw %+v", reqs)
		}

		// The same request again, exclusions in another order and case: the
		// cache answers at once and the planner is not called.
		cached, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{
			Days: 3, Diet: nxgv1.Diet_DIET_VEGETARIAN, Exclusions: []string{"dairy", " peanut"}, ClientRequestId: "plan-2",
		}))
		if err != nil {
			t.Fatal(err)
		}
		if cp := cached.Msg.GetPlan(); cp.GetStatus() != nxgv1.AIStatus_AI_STATUS_READY || !cp.GetFromCache() || len(cp.GetDays()) != 3 ||
			cached.Msg.GetMealPlanRequestId() == first.GetMealPlanRequestId() {
			t.Fatalf("cached plan = %v", cached.Msg)
		}
		if n := len(b.planner.Requests()) - before; n != 1 {
			t.Fatalf("planner called %d times, want once (the second answer is cached)", n)
		}

		// Planner down: a different request is answered at once; the job
		// serves the member's latest plan marked stale while it retries.
		b.planner.SetKnobs(devstack.SimKnobs{Outage: true})
		t.Cleanup(func() { b.planner.SetKnobs(devstack.SimKnobs{}) })
		start := time.Now()
		down := ask("plan-3", 2)
		if time.Since(start) > time.Second || down.GetPlan().GetStatus() != nxgv1.AIStatus_AI_STATUS_PENDING {
			t.Fatalf("RequestMealPlan during an outage: %v after %s", down.GetPlan(), time.Since(start))
		}
		stale := waitMealPlan(t, c, down.GetMealPlanRequestId(), func(p *nxgv1.MealPlan) bool { return p.GetStale() })
		if stale.GetStatus() != nxgv1.AIStatus_AI_STATUS_READY || len(stale.GetDays()) != 3 || stale.GetFailureReason() == "" {
			t.Fatalf("stale plan = %v, want the earlier 3-day plan with a reason", stale)
		}
	})
}

func TestComputeMacroTargets(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		in                        macroInput
		kcal, protein, fat, carbs float64
	}{
		// BMR = 600 + 1031.25 − 125 − 161 = 1345.25; × 1.375 = 1849.72;
		// × 0.80 = 1479.78 → 1480. Protein 2.2·60 = 132; fat
		// 1480·0.25/9 = 41.1 → 41; carbs (1480 − 528 − 369)/4 = 145.75 → 146.
		{"female losing weight", macroInput{"female", 25, 165, 60, "light", "lose_weight"}, 1480, 132, 41, 146},
		// BMR = 700 + 1062.5 − 200 − 78 = 1484.5; × 1.2 = 1781.4 → 1781.
		// Protein 1.8·70 = 126; fat 1781·0.30/9 = 59.4 → 59; carbs
		// (1781 − 504 − 531)/4 = 186.5 → 187.
		{"other sex, general fitness", macroInput{"prefer_not_to_say", 40, 170, 70, "sedentary", "general_fitness"}, 1781, 126, 59, 187},
		// BMR = 900 + 1187.5 − 175 + 5 = 1917.5; × 1.9 = 3643.25; × 1.05 =
		// 3825.41 → 3825. Protein 2.0·90 = 180; fat 3825·0.30/9 = 127.5 →
		// 128; carbs (3825 − 720 − 1152)/4 = 488.25 → 488.
		{"male, strength, very active", macroInput{"male", 35, 190, 90, "very_active", "increase_strength"}, 3825, 180, 128, 488},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := computeMacroTargets(tc.in)
			if got.Kcal != tc.kcal || got.ProteinG != tc.protein || got.FatG != tc.fat || got.CarbsG != tc.carbs {
				t.Fatalf("got %g kcal, %g protein, %g fat, %g carbs; want %g, %g, %g, %g",
					got.Kcal, got.ProteinG, got.FatG, got.CarbsG, tc.kcal, tc.protein, tc.fat, tc.carbs)
			}
		})
	}
}

func TestNutritionReadsAndOwnership(t *testing.T) {
	ctx := context.Background()
	b := setupNutrition(t)
	_, tok := b.newMember(t)
	c := b.nutritionClient(tok)
	_, otherTok := b.newMember(t)
	other := b.nutritionClient(otherTok)

	// Unknown and malformed ids: not_found and invalid_argument naming the field.
	_, err := c.GetMealAnalysis(ctx, connect.NewRequest(&nxgv1.GetMealAnalysisRequest{AnalysisId: "01900000-0000-7000-8000-000000000000"}))
	nutritionCode(t, err, connect.CodeNotFound, "meal analysis")
	_, err = c.GetMealAnalysis(ctx, connect.NewRequest(&nxgv1.GetMealAnalysisRequest{AnalysisId: "nope"}))
	nutritionCode(t, err, connect.CodeInvalidArgument, "analysis_id")
	_, err = c.GetMealPlan(ctx, connect.NewRequest(&nxgv1.GetMealPlanRequest{MealPlanRequestId: "01900000-0000-7000-8000-000000000000"}))
	nutritionCode(t, err, connect.CodeNotFound, "meal plan request")
	_, err = c.DeleteMeal(ctx, connect.NewRequest(&nxgv1.DeleteMealRequest{MealId: "nope"}))
	nutritionCode(t, err, connect.CodeInvalidArgument, "meal_id")

	// A meal plan is its member's alone.
	plan, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{Days: 1, KcalTarget: 2000}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.GetMealPlan(ctx, connect.NewRequest(&nxgv1.GetMealPlanRequest{MealPlanRequestId: plan.Msg.GetMealPlanRequestId()}))
	nutritionCode(t, err, connect.CodeNotFound, plan.Msg.GetMealPlanRequestId())
	if got, err := c.GetMealPlan(ctx, connect.NewRequest(&nxgv1.GetMealPlanRequest{MealPlanRequestId: plan.Msg.GetMealPlanRequestId()})); err != nil ||
		got.Msg.GetPlan().GetId() != plan.Msg.GetMealPlanRequestId() || got.Msg.GetPlan().GetKcalTarget() != 2000 {
		t.Fatalf("GetMealPlan = %v, %v", got, err)
	}

	// Deleting: another member's delete leaves the meal alone; the owner's
	// removes it, and deleting again is not an error.
	meal, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
		EatenAt: timestamppb.New(time.Now().Add(-time.Hour)), MealType: nxgv1.MealType_MEAL_TYPE_SNACK,
		Items: []*nxgv1.FoodItem{item("apple", 95, 0.5, 25, 0.3)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := meal.Msg.GetMeal().GetId()
	count := func() int {
		res, err := c.ListMeals(ctx, connect.NewRequest(&nxgv1.ListMealsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Msg.GetMeals())
	}
	if _, err := other.DeleteMeal(ctx, connect.NewRequest(&nxgv1.DeleteMealRequest{MealId: id})); err != nil {
		t.Fatalf("another member's delete: %v", err)
	}
	if n := count(); n != 1 {
		t.Fatalf("after another member's delete, %d meals; want the meal kept", n)
	}
	for range 2 {
		if _, err := c.DeleteMeal(ctx, connect.NewRequest(&nxgv1.DeleteMealRequest{MealId: id})); err != nil {
			t.Fatalf("DeleteMeal: %v", err)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("after deleting, %d meals; want none", n)
	}
	_, err = c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: id, MealType: nxgv1.MealType_MEAL_TYPE_LUNCH,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"meal_type"}}}))
	nutritionCode(t, err, connect.CodeNotFound, id)
}

func TestNutritionRefusesBadInputNamingTheField(t *testing.T) {
	ctx := context.Background()
	b := setupNutrition(t)
	_, tok := b.newMember(t)
	c := b.nutritionClient(tok)
	meal, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{
		EatenAt: timestamppb.New(time.Now().Add(-time.Hour)), MealType: nxgv1.MealType_MEAL_TYPE_LUNCH,
		Items: []*nxgv1.FoodItem{item("rice", 130, 2.7, 28, 0.3)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	mealID := meal.Msg.GetMeal().GetId()
	food := []*nxgv1.FoodItem{item("rice", 130, 2.7, 28, 0.3)}
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"photo type", func() error {
			_, err := c.CreateMealPhotoUpload(ctx, connect.NewRequest(&nxgv1.CreateMealPhotoUploadRequest{ContentType: "image/gif", SizeBytes: 10}))
			return err
		}, "content_type"},
		{"photo size", func() error {
			_, err := c.CreateMealPhotoUpload(ctx, connect.NewRequest(&nxgv1.CreateMealPhotoUploadRequest{ContentType: "image/png", SizeBytes: 11 << 20}))
			return err
		}, "size_bytes"},
		{"upload id", func() error {
			_, err := c.AnalyzeMealPhoto(ctx, connect.NewRequest(&nxgv1.AnalyzeMealPhotoRequest{UploadId: "photo-1"}))
			return err
		}, "upload_id"},
		{"eaten in the future", func() error {
			_, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{EatenAt: timestamppb.New(time.Now().Add(72 * time.Hour)), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, Items: food}))
			return err
		}, "eaten_at"},
		{"eaten before 2000", func() error {
			_, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{EatenAt: timestamppb.New(time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)), MealType: nxgv1.MealType_MEAL_TYPE_SNACK, Items: food}))
			return err
		}, "eaten_at"},
		{"no items", func() error {
			_, err := c.LogMeal(ctx, connect.NewRequest(&nxgv1.LogMealRequest{EatenAt: timestamppb.Now(), MealType: nxgv1.MealType_MEAL_TYPE_SNACK}))
			return err
		}, "items"},
		{"unknown mask path", func() error {
			_, err := c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: mealID, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"calories"}}}))
			return err
		}, "update_mask"},
		{"items emptied", func() error {
			_, err := c.UpdateMeal(ctx, connect.NewRequest(&nxgv1.UpdateMealRequest{MealId: mealID, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"items"}}}))
			return err
		}, "items"},
		{"time range", func() error {
			now := time.Now()
			_, err := c.ListMeals(ctx, connect.NewRequest(&nxgv1.ListMealsRequest{StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(-time.Hour))}))
			return err
		}, "end_time"},
		{"page token", func() error {
			_, err := c.ListMeals(ctx, connect.NewRequest(&nxgv1.ListMealsRequest{PageToken: "not-a-token"}))
			return err
		}, "page_token"},
		{"target kcal", func() error {
			_, err := c.SetMacroTargets(ctx, connect.NewRequest(&nxgv1.SetMacroTargetsRequest{Targets: &nxgv1.SetMacroTargetsRequest_Given{Given: &nxgv1.GivenMacroTargets{Kcal: 100}}}))
			return err
		}, "kcal"},
		{"day", func() error {
			_, err := c.GetDailyNutrition(ctx, connect.NewRequest(&nxgv1.GetDailyNutritionRequest{Date: "2026-13-45"}))
			return err
		}, "date"},
		{"meal plan kcal", func() error {
			_, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{Days: 3, KcalTarget: 500}))
			return err
		}, "kcal_target"},
		{"meal plan days", func() error {
			_, err := c.RequestMealPlan(ctx, connect.NewRequest(&nxgv1.RequestMealPlanRequest{Days: 30, KcalTarget: 2000}))
			return err
		}, "days"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nutritionCode(t, tc.call(), connect.CodeInvalidArgument, tc.field)
		})
	}
}
