package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/pagination"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/jobs"
)

const (
	// mealUploadTTL is how long a presigned PUT URL of a meal photo works.
	mealUploadTTL = 10 * time.Minute
	// maxMealPhotoBytes is the largest meal photo (the contract's 10 MiB).
	maxMealPhotoBytes = 10 << 20
	// mealsListName ties page tokens to ListMeals.
	mealsListName = "meals"
	// eatenAtAhead is how far in the future eaten_at may be: a member in
	// another time zone may log tomorrow's breakfast by their calendar.
	eatenAtAhead = 24 * time.Hour
)

// earliestEatenAt is the oldest meal NXG accepts.
var earliestEatenAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// latestListTime bounds ListMeals when end_time is unset.
var latestListTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// mealPhotoExtensions name the stored object by its type, so an operator
// browsing the bucket can tell what it holds.
var mealPhotoExtensions = map[string]string{"image/jpeg": ".jpg", "image/png": ".png", "image/heic": ".heic"}

// Meal types and diets as stored (the CHECK constraints of
// 00007_nutrition.sql, and the meal planner's wire names).
var (
	mealTypeNames = map[nxgv1.MealType]string{
		nxgv1.MealType_MEAL_TYPE_BREAKFAST: mealplanner.MealBreakfast,
		nxgv1.MealType_MEAL_TYPE_LUNCH:     mealplanner.MealLunch,
		nxgv1.MealType_MEAL_TYPE_DINNER:    mealplanner.MealDinner,
		nxgv1.MealType_MEAL_TYPE_SNACK:     mealplanner.MealSnack,
	}
	mealTypeValues = invertNames(mealTypeNames)
	dietNames      = map[nxgv1.Diet]string{
		nxgv1.Diet_DIET_OMNIVORE:    mealplanner.DietOmnivore,
		nxgv1.Diet_DIET_VEGETARIAN:  mealplanner.DietVegetarian,
		nxgv1.Diet_DIET_VEGAN:       mealplanner.DietVegan,
		nxgv1.Diet_DIET_PESCATARIAN: mealplanner.DietPescatarian,
		nxgv1.Diet_DIET_KETO:        mealplanner.DietKeto,
	}
	dietValues = invertNames(dietNames)
	aiStatuses = map[string]nxgv1.AIStatus{
		"pending": nxgv1.AIStatus_AI_STATUS_PENDING,
		"ready":   nxgv1.AIStatus_AI_STATUS_READY,
		"failed":  nxgv1.AIStatus_AI_STATUS_FAILED,
	}
)

// nutritionService serves nxg.v1.NutritionService. Calls to the meal
// detector and the meal planner happen only in River jobs (jobs.MealAnalysis
// and jobs.MealPlan); every RPC here reads or writes our own stores and
// answers at once with the state it finds.
type nutritionService struct {
	nxgv1connect.UnimplementedNutritionServiceHandler
	pool    *pgxpool.Pool
	id      Identity
	mongo   *mongo.Database
	logger  *slog.Logger
	queries *dbsqlc.Queries
	now     func() time.Time
}

// NewNutritionService returns the NutritionService handler. mongo may be
// nil: meal plans are then never answered from the cache.
func NewNutritionService(pool *pgxpool.Pool, id Identity, mongo *mongo.Database, logger *slog.Logger) *nutritionService {
	return &nutritionService{pool: pool, id: id, mongo: mongo, logger: logger, queries: dbsqlc.New(), now: time.Now}
}

// caller is the signed-in person; devices keep no meals.
func (s *nutritionService) caller(ctx context.Context) (uuid.UUID, error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	if p.Role == token.RoleDevice {
		return uuid.Nil, apperr.PermissionDenied("devices keep no meals; sign in as a person")
	}
	return p.UserID, nil
}

// dataKey unwraps the caller's data key, which seals their meals' foods.
func (s *nutritionService) dataKey(ctx context.Context, q dbsqlc.DBTX, userID uuid.UUID) (*fieldcrypt.DataKey, error) {
	key, err := jobs.NutritionDataKey(ctx, q, s.id.MasterKeys, userID)
	if db.IsNotFound(err) {
		return nil, errAccountClosed
	}
	return key, err
}

// --- Photos and analyses ---

func (s *nutritionService) CreateMealPhotoUpload(ctx context.Context, req *connect.Request[nxgv1.CreateMealPhotoUploadRequest]) (*connect.Response[nxgv1.CreateMealPhotoUploadResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	ct := req.Msg.GetContentType()
	ext, ok := mealPhotoExtensions[ct]
	if !ok {
		return nil, apperr.InvalidArgument("content_type", "must be image/jpeg, image/png or image/heic")
	}
	size := req.Msg.GetSizeBytes()
	if size < 1 || size > maxMealPhotoBytes {
		return nil, apperr.InvalidArgument("size_bytes", "must be 1 to %d bytes", maxMealPhotoBytes)
	}
	id := uuid.Must(uuid.NewV7())
	// Under users/{id}/, so erasing the member deletes the photo with the
	// rest of their files (erasure.S3Prefix).
	key := "users/" + userID.String() + "/meal-photos/" + id.String() + ext
	expiresAt := s.now().Add(mealUploadTTL)
	// The URL signs the type, the length and server-side encryption: the
	// uploader sends Content-Length and the headers the response lists
	// (storage.UploadHeaders).
	url, err := s.id.Storage.PresignPut(ctx, key, ct, size, mealUploadTTL)
	if err != nil {
		return nil, fmt.Errorf("presign meal photo upload: %w", err)
	}
	if _, err := s.queries.MealUploadInsert(ctx, s.pool, dbsqlc.MealUploadInsertParams{
		ID: id, UserID: userID, ObjectKey: key, ContentType: ct, SizeBytes: size, ExpiresAt: expiresAt,
	}); err != nil {
		if isNutritionFKViolation(err) {
			return nil, errAccountClosed
		}
		return nil, fmt.Errorf("record meal photo upload: %w", err)
	}
	required := storage.UploadHeaders(ct)
	headers := make(map[string]string, len(required))
	for name := range required {
		headers[name] = required.Get(name)
	}
	return connect.NewResponse(&nxgv1.CreateMealPhotoUploadResponse{
		UploadId: id.String(), UploadUrl: url, ExpiresAt: timestamppb.New(expiresAt), UploadHeaders: headers,
	}), nil
}

func (s *nutritionService) AnalyzeMealPhoto(ctx context.Context, req *connect.Request[nxgv1.AnalyzeMealPhotoRequest]) (*connect.Response[nxgv1.AnalyzeMealPhotoResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	uploadID, err := uuid.Parse(req.Msg.GetUploadId())
	if err != nil {
		return nil, apperr.InvalidArgument("upload_id", "must be a UUID")
	}
	a, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.MealAnalysis, error) {
		if _, err := s.queries.MealUploadGet(ctx, tx, dbsqlc.MealUploadGetParams{ID: uploadID, UserID: userID}); db.IsNotFound(err) {
			return dbsqlc.MealAnalysis{}, apperr.NotFound("meal photo upload", uploadID.String())
		} else if err != nil {
			return dbsqlc.MealAnalysis{}, fmt.Errorf("read meal photo upload: %w", err)
		}
		a, err := s.queries.MealAnalysisInsert(ctx, tx, dbsqlc.MealAnalysisInsertParams{UserID: userID, UploadID: uploadID})
		if db.IsNotFound(err) {
			// Asked before: the same analysis, whatever its state.
			a, err = s.queries.MealAnalysisByUpload(ctx, tx, dbsqlc.MealAnalysisByUploadParams{UploadID: uploadID, UserID: userID})
			if err != nil {
				return a, fmt.Errorf("read meal analysis: %w", err)
			}
			return a, nil
		}
		if err != nil {
			return a, fmt.Errorf("create meal analysis: %w", err)
		}
		// The job commits with the row: an analysis never waits for a
		// job that was not queued.
		if _, err := s.id.River.InsertTx(ctx, tx, jobs.MealAnalysisArgs{AnalysisID: a.ID, UserID: userID}, nil); err != nil {
			return a, fmt.Errorf("queue meal analysis: %w", err)
		}
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.analysisToProto(ctx, a)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.AnalyzeMealPhotoResponse{AnalysisId: a.ID.String(), Analysis: out}), nil
}

func (s *nutritionService) GetMealAnalysis(ctx context.Context, req *connect.Request[nxgv1.GetMealAnalysisRequest]) (*connect.Response[nxgv1.GetMealAnalysisResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetAnalysisId())
	if err != nil {
		return nil, apperr.InvalidArgument("analysis_id", "must be a UUID")
	}
	a, err := s.queries.MealAnalysisGet(ctx, s.pool, dbsqlc.MealAnalysisGetParams{ID: id, UserID: userID})
	if db.IsNotFound(err) {
		return nil, apperr.NotFound("meal analysis", id.String())
	}
	if err != nil {
		return nil, fmt.Errorf("read meal analysis: %w", err)
	}
	out, err := s.analysisToProto(ctx, a)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetMealAnalysisResponse{Analysis: out}), nil
}

func (s *nutritionService) analysisToProto(ctx context.Context, a dbsqlc.MealAnalysis) (*nxgv1.MealAnalysis, error) {
	out := &nxgv1.MealAnalysis{
		Id: a.ID.String(), UploadId: a.UploadID.String(), Status: aiStatuses[a.Status],
		FailureReason: a.FailureReason, RequestedAt: timestamppb.New(a.RequestedAt), Totals: &nxgv1.Macros{},
	}
	if a.ReadyAt.Valid {
		out.ReadyAt = timestamppb.New(a.ReadyAt.Time)
	}
	if a.ItemsEnc == nil {
		return out, nil
	}
	key, err := s.dataKey(ctx, s.pool, a.UserID)
	if err != nil {
		return nil, err
	}
	items, err := jobs.OpenFoodItems(key, jobs.EncColAnalysisItems, a.ItemsEnc)
	if err != nil {
		return nil, fmt.Errorf("meal analysis %s: %w", a.ID, err)
	}
	out.Items, out.Totals = foodItemsToProto(items)
	return out, nil
}

// --- Meals ---

func (s *nutritionService) LogMeal(ctx context.Context, req *connect.Request[nxgv1.LogMealRequest]) (*connect.Response[nxgv1.LogMealResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	eatenAt, err := s.checkEatenAt(msg.GetEatenAt())
	if err != nil {
		return nil, err
	}
	mealType, ok := mealTypeNames[msg.GetMealType()]
	if !ok {
		return nil, apperr.InvalidArgument("meal_type", "must be breakfast, lunch, dinner or snack")
	}
	items, err := foodItemsFromProto(msg.GetItems())
	if err != nil {
		return nil, err
	}
	var analysisID uuid.NullUUID
	if msg.GetAnalysisId() != "" {
		id, err := uuid.Parse(msg.GetAnalysisId())
		if err != nil {
			return nil, apperr.InvalidArgument("analysis_id", "must be a UUID")
		}
		analysisID = uuid.NullUUID{UUID: id, Valid: true}
	}
	clientID := msg.GetClientMealId()

	meal, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Meal, error) {
		if clientID != "" {
			m, err := s.queries.MealByClientID(ctx, tx, dbsqlc.MealByClientIDParams{UserID: userID, ClientMealID: clientID})
			if err == nil {
				return m, nil // a retry: the first meal
			}
			if !db.IsNotFound(err) {
				return m, fmt.Errorf("read meal by client id: %w", err)
			}
		}
		if analysisID.Valid {
			a, err := s.queries.MealAnalysisGet(ctx, tx, dbsqlc.MealAnalysisGetParams{ID: analysisID.UUID, UserID: userID})
			if db.IsNotFound(err) {
				return dbsqlc.Meal{}, apperr.NotFound("meal analysis", analysisID.UUID.String())
			}
			if err != nil {
				return dbsqlc.Meal{}, fmt.Errorf("read meal analysis: %w", err)
			}
			if a.Status != "ready" {
				return dbsqlc.Meal{}, apperr.FailedPrecondition("analysis_id: meal analysis %s is %s, not ready", a.ID, a.Status)
			}
		}
		key, err := s.dataKey(ctx, tx, userID)
		if err != nil {
			return dbsqlc.Meal{}, err
		}
		sealed, err := jobs.SealFoodItems(key, jobs.EncColMealItems, items)
		if err != nil {
			return dbsqlc.Meal{}, err
		}
		m, err := s.queries.MealInsert(ctx, tx, dbsqlc.MealInsertParams{
			UserID: userID, ClientMealID: clientID, EatenAt: eatenAt, MealType: mealType, ItemsEnc: sealed, AnalysisID: analysisID,
		})
		if db.IsNotFound(err) {
			// A concurrent retry with the same client_meal_id won.
			m, err = s.queries.MealByClientID(ctx, tx, dbsqlc.MealByClientIDParams{UserID: userID, ClientMealID: clientID})
		}
		if err != nil {
			return m, fmt.Errorf("record meal: %w", err)
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.mealToProto(ctx, nil, meal)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.LogMealResponse{Meal: out}), nil
}

var (
	mealMaskPaths       = []string{"eaten_at", "meal_type", "items"}
	mealOutputOnlyPaths = []string{"id", "totals", "analysis_id", "created_at", "updated_at"}
)

func (s *nutritionService) UpdateMeal(ctx context.Context, req *connect.Request[nxgv1.UpdateMealRequest]) (*connect.Response[nxgv1.UpdateMealResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	id, err := uuid.Parse(msg.GetMealId())
	if err != nil {
		return nil, apperr.InvalidArgument("meal_id", "must be a UUID")
	}
	paths, err := maskPaths(msg.GetUpdateMask().GetPaths(), mealMaskPaths, mealOutputOnlyPaths)
	if err != nil {
		return nil, err
	}
	var (
		eatenAt  time.Time
		mealType string
		items    []jobs.FoodItem
	)
	for _, p := range paths {
		switch p {
		case "eaten_at":
			if eatenAt, err = s.checkEatenAt(msg.GetEatenAt()); err != nil {
				return nil, err
			}
		case "meal_type":
			var ok bool
			if mealType, ok = mealTypeNames[msg.GetMealType()]; !ok {
				return nil, apperr.InvalidArgument("meal_type", "must be breakfast, lunch, dinner or snack")
			}
		case "items":
			if items, err = foodItemsFromProto(msg.GetItems()); err != nil {
				return nil, err
			}
		}
	}
	var key *fieldcrypt.DataKey
	meal, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Meal, error) {
		m, err := s.queries.MealGetForUpdate(ctx, tx, dbsqlc.MealGetForUpdateParams{ID: id, UserID: userID})
		if db.IsNotFound(err) {
			return m, apperr.NotFound("meal", id.String())
		}
		if err != nil {
			return m, fmt.Errorf("read meal: %w", err)
		}
		next := dbsqlc.MealUpdateParams{ID: id, UserID: userID, EatenAt: m.EatenAt, MealType: m.MealType, ItemsEnc: m.ItemsEnc}
		if !eatenAt.IsZero() {
			next.EatenAt = eatenAt
		}
		if mealType != "" {
			next.MealType = mealType
		}
		if items != nil {
			if key, err = s.dataKey(ctx, tx, userID); err != nil {
				return m, err
			}
			if next.ItemsEnc, err = jobs.SealFoodItems(key, jobs.EncColMealItems, items); err != nil {
				return m, err
			}
		}
		m, err = s.queries.MealUpdate(ctx, tx, next)
		if err != nil {
			return m, fmt.Errorf("update meal: %w", err)
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.mealToProto(ctx, key, meal)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.UpdateMealResponse{Meal: out}), nil
}

func (s *nutritionService) DeleteMeal(ctx context.Context, req *connect.Request[nxgv1.DeleteMealRequest]) (*connect.Response[nxgv1.DeleteMealResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetMealId())
	if err != nil {
		return nil, apperr.InvalidArgument("meal_id", "must be a UUID")
	}
	// Deleting a meal that is gone (or never was the caller's) changes
	// nothing, which is what the caller wanted.
	if err := s.queries.MealDelete(ctx, s.pool, dbsqlc.MealDeleteParams{ID: id, UserID: userID}); err != nil {
		return nil, fmt.Errorf("delete meal: %w", err)
	}
	return connect.NewResponse(&nxgv1.DeleteMealResponse{}), nil
}

func (s *nutritionService) ListMeals(ctx context.Context, req *connect.Request[nxgv1.ListMealsRequest]) (*connect.Response[nxgv1.ListMealsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	var cursor pagination.TimeCursor
	after, err := pagination.Decode(mealsListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.MealsListParams{UserID: userID, Since: earliestEatenAt.AddDate(-1, 0, 0), Until: latestListTime, RowLimit: size + 1}
	if ts := msg.GetStartTime(); ts != nil {
		if ts.CheckValid() != nil {
			return nil, apperr.InvalidArgument("start_time", "is not a valid timestamp")
		}
		params.Since = ts.AsTime()
	}
	if ts := msg.GetEndTime(); ts != nil {
		if ts.CheckValid() != nil {
			return nil, apperr.InvalidArgument("end_time", "is not a valid timestamp")
		}
		params.Until = ts.AsTime()
	}
	if !params.Until.After(params.Since) {
		return nil, apperr.InvalidArgument("end_time", "must be after start_time")
	}
	if after {
		params.BeforeTime = pgtype.Timestamptz{Time: cursor.Time, Valid: true}
		params.BeforeID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	rows, err := s.queries.MealsList(ctx, s.pool, params)
	if err != nil {
		return nil, fmt.Errorf("list meals: %w", err)
	}
	resp := &nxgv1.ListMealsResponse{}
	rows, resp.NextPageToken = pagination.Page(mealsListName, rows, size, func(last dbsqlc.Meal) any {
		return pagination.TimeCursor{Time: last.EatenAt, ID: last.ID}
	})
	if resp.Meals, err = s.mealsToProto(ctx, userID, rows); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// checkEatenAt applies the contract's bounds on when a meal was eaten.
func (s *nutritionService) checkEatenAt(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil || ts.CheckValid() != nil {
		return time.Time{}, apperr.InvalidArgument("eaten_at", "is required and must be a valid timestamp")
	}
	t := ts.AsTime()
	if t.Before(earliestEatenAt) {
		return time.Time{}, apperr.InvalidArgument("eaten_at", "must not be before 2000-01-01")
	}
	if t.After(s.now().Add(eatenAtAhead)) {
		return time.Time{}, apperr.InvalidArgument("eaten_at", "must not be more than 24 hours in the future")
	}
	return t, nil
}

func (s *nutritionService) mealsToProto(ctx context.Context, userID uuid.UUID, rows []dbsqlc.Meal) ([]*nxgv1.Meal, error) {
	out := make([]*nxgv1.Meal, len(rows))
	if len(rows) == 0 {
		return out, nil
	}
	key, err := s.dataKey(ctx, s.pool, userID)
	if err != nil {
		return nil, err
	}
	for i, r := range rows {
		if out[i], err = s.mealToProto(ctx, key, r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// mealToProto opens a meal's foods; key may be nil and is then unwrapped.
func (s *nutritionService) mealToProto(ctx context.Context, key *fieldcrypt.DataKey, m dbsqlc.Meal) (*nxgv1.Meal, error) {
	if key == nil {
		var err error
		if key, err = s.dataKey(ctx, s.pool, m.UserID); err != nil {
			return nil, err
		}
	}
	items, err := jobs.OpenFoodItems(key, jobs.EncColMealItems, m.ItemsEnc)
	if err != nil {
		return nil, fmt.Errorf("meal %s: %w", m.ID, err)
	}
	out := &nxgv1.Meal{
		Id: m.ID.String(), EatenAt: timestamppb.New(m.EatenAt), MealType: mealTypeValues[m.MealType],
		CreatedAt: timestamppb.New(m.CreatedAt), UpdatedAt: timestamppb.New(m.UpdatedAt),
	}
	if m.AnalysisID.Valid {
		out.AnalysisId = m.AnalysisID.UUID.String()
	}
	out.Items, out.Totals = foodItemsToProto(items)
	return out, nil
}

// foodItemsFromProto checks the items of a meal; the contract's rules are
// repeated because the handler must not rely on the interceptor for what
// it stores.
func foodItemsFromProto(in []*nxgv1.FoodItem) ([]jobs.FoodItem, error) {
	if len(in) < 1 || len(in) > 50 {
		return nil, apperr.InvalidArgument("items", "must list 1 to 50 foods")
	}
	out := make([]jobs.FoodItem, len(in))
	for i, it := range in {
		field := func(name string) string { return fmt.Sprintf("items[%d].%s", i, name) }
		name := strings.TrimSpace(it.GetName())
		if n := len([]rune(name)); n < 1 || n > 200 {
			return nil, apperr.InvalidArgument(field("name"), "must be 1 to 200 characters")
		}
		for _, c := range []struct {
			name   string
			v      float64
			lo, hi float64
			open   bool
		}{
			{"grams", it.GetGrams(), 0, 5000, true},
			{"kcal", it.GetKcal(), 0, 10000, false},
			{"protein_g", it.GetProteinG(), 0, 1000, false},
			{"carbs_g", it.GetCarbsG(), 0, 1000, false},
			{"fat_g", it.GetFatG(), 0, 1000, false},
			{"confidence", it.GetConfidence(), 0, 1, false},
		} {
			if math.IsNaN(c.v) || c.v < c.lo || c.v > c.hi || (c.open && c.v == c.lo) {
				return nil, apperr.InvalidArgument(field(c.name), "must be %g to %g", c.lo, c.hi)
			}
		}
		out[i] = jobs.FoodItem{Name: name, Grams: it.GetGrams(), Kcal: it.GetKcal(), ProteinG: it.GetProteinG(),
			CarbsG: it.GetCarbsG(), FatG: it.GetFatG(), Confidence: it.GetConfidence()}
	}
	return out, nil
}

func foodItemsToProto(items []jobs.FoodItem) ([]*nxgv1.FoodItem, *nxgv1.Macros) {
	out := make([]*nxgv1.FoodItem, len(items))
	totals := &nxgv1.Macros{}
	for i, it := range items {
		out[i] = &nxgv1.FoodItem{Name: it.Name, Grams: it.Grams, Kcal: it.Kcal, ProteinG: it.ProteinG,
			CarbsG: it.CarbsG, FatG: it.FatG, Confidence: it.Confidence}
		addMacros(totals, it.Kcal, it.ProteinG, it.CarbsG, it.FatG)
	}
	return out, roundMacros(totals)
}

func addMacros(m *nxgv1.Macros, kcal, protein, carbs, fat float64) {
	m.Kcal += kcal
	m.ProteinG += protein
	m.CarbsG += carbs
	m.FatG += fat
}

// roundMacros rounds sums to a tenth, so float noise does not show.
func roundMacros(m *nxgv1.Macros) *nxgv1.Macros {
	r := func(v float64) float64 { return math.Round(v*10) / 10 }
	return &nxgv1.Macros{Kcal: r(m.Kcal), ProteinG: r(m.ProteinG), CarbsG: r(m.CarbsG), FatG: r(m.FatG)}
}

// --- Targets and daily totals ---

func (s *nutritionService) SetMacroTargets(ctx context.Context, req *connect.Request[nxgv1.SetMacroTargetsRequest]) (*connect.Response[nxgv1.SetMacroTargetsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	var params dbsqlc.MacroTargetsUpsertParams
	switch t := req.Msg.GetTargets().(type) {
	case *nxgv1.SetMacroTargetsRequest_Given:
		g := t.Given
		for _, c := range []struct {
			name   string
			v      float64
			lo, hi float64
		}{
			{"given.kcal", g.GetKcal(), 800, 8000},
			{"given.protein_g", g.GetProteinG(), 0, 1000},
			{"given.carbs_g", g.GetCarbsG(), 0, 1000},
			{"given.fat_g", g.GetFatG(), 0, 1000},
		} {
			if math.IsNaN(c.v) || c.v < c.lo || c.v > c.hi {
				return nil, apperr.InvalidArgument(c.name, "must be %g to %g", c.lo, c.hi)
			}
		}
		params = dbsqlc.MacroTargetsUpsertParams{Kcal: g.GetKcal(), ProteinG: g.GetProteinG(), CarbsG: g.GetCarbsG(), FatG: g.GetFatG()}
	case *nxgv1.SetMacroTargetsRequest_FromProfile:
		if !t.FromProfile {
			return nil, apperr.InvalidArgument("from_profile", "must be true")
		}
		in, err := s.macroInputs(ctx, userID)
		if err != nil {
			return nil, err
		}
		m := computeMacroTargets(in)
		params = dbsqlc.MacroTargetsUpsertParams{Kcal: m.Kcal, ProteinG: m.ProteinG, CarbsG: m.CarbsG, FatG: m.FatG, FromProfile: true}
	default:
		return nil, apperr.InvalidArgument("targets", "give either given or from_profile")
	}
	params.UserID = userID
	row, err := s.queries.MacroTargetsUpsert(ctx, s.pool, params)
	if isNutritionFKViolation(err) {
		return nil, errAccountClosed
	}
	if err != nil {
		return nil, fmt.Errorf("store macro targets: %w", err)
	}
	return connect.NewResponse(&nxgv1.SetMacroTargetsResponse{Targets: macroTargetsToProto(row)}), nil
}

// macroInput is what the targets are computed from.
type macroInput struct {
	Sex           string // "male", "female", or anything else for the mean
	AgeYears      int
	HeightCM      float64
	WeightKg      float64
	ActivityLevel string
	FitnessGoal   string
}

// macroInputs reads the profile fields and the latest weight, and names
// every missing one.
func (s *nutritionService) macroInputs(ctx context.Context, userID uuid.UUID) (macroInput, error) {
	return db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (macroInput, error) {
		var in macroInput
		key, err := s.dataKey(ctx, tx, userID)
		if err != nil {
			return in, err
		}
		p, err := s.queries.ProfileGet(ctx, tx, userID)
		if err != nil && !db.IsNotFound(err) {
			return in, fmt.Errorf("read profile: %w", err)
		}
		open := func(column string, b []byte) (string, error) {
			v, err := key.OpenString(column, b)
			if err != nil {
				return "", fmt.Errorf("decrypt %s of user %s: %w", column, userID, err)
			}
			return v, nil
		}
		var missing []string
		if in.Sex, err = open(encColSex, p.SexEnc); err != nil {
			return in, err
		}
		if in.Sex == "" {
			missing = append(missing, "sex")
		}
		dob, err := open(encColDateOfBirth, p.DateOfBirthEnc)
		if err != nil {
			return in, err
		}
		if dob == "" {
			missing = append(missing, "date_of_birth")
		} else {
			born, err := time.Parse(time.DateOnly, dob)
			if err != nil {
				return in, fmt.Errorf("stored date_of_birth of user %s: %w", userID, err)
			}
			in.AgeYears = ageOn(born, s.now())
		}
		height, err := open(encColHeightCM, p.HeightCmEnc)
		if err != nil {
			return in, err
		}
		if height == "" {
			missing = append(missing, "height_cm")
		} else if in.HeightCM, err = strconv.ParseFloat(height, 64); err != nil {
			return in, fmt.Errorf("stored height_cm of user %s: %w", userID, err)
		}
		weightEnc, err := s.queries.NutritionLatestWeight(ctx, tx, userID)
		switch {
		case db.IsNotFound(err):
			missing = append(missing, "weight_kg (record body metrics)")
		case err != nil:
			return in, fmt.Errorf("read latest weight: %w", err)
		default:
			b, err := key.Open(encColWeightKg, weightEnc)
			if err != nil {
				return in, fmt.Errorf("decrypt weight of user %s: %w", userID, err)
			}
			if in.WeightKg, err = strconv.ParseFloat(string(b), 64); err != nil {
				return in, fmt.Errorf("stored weight of user %s: %w", userID, err)
			}
		}
		in.ActivityLevel, in.FitnessGoal = p.ActivityLevel, p.FitnessGoal
		if in.ActivityLevel == "" {
			missing = append(missing, "activity_level")
		}
		if len(missing) > 0 {
			return in, apperr.FailedPrecondition("targets cannot be computed from the profile: it lacks %s", strings.Join(missing, ", "))
		}
		return in, nil
	})
}

// ageOn is the age in whole years of someone born on born, at now (UTC).
func ageOn(born, now time.Time) int {
	now = now.UTC()
	age := now.Year() - born.Year()
	if now.Month() < born.Month() || (now.Month() == born.Month() && now.Day() < born.Day()) {
		age--
	}
	return age
}

// Activity factors multiply the BMR into daily energy expenditure.
var activityFactors = map[string]float64{
	"sedentary": 1.2, "light": 1.375, "moderate": 1.55, "active": 1.725, "very_active": 1.9,
}

// goalRules adjust energy and set protein per kg of body weight and fat's
// share of energy for a fitness goal ("" is general fitness).
var goalRules = map[string]struct{ kcalFactor, proteinPerKg, fatShare float64 }{
	"lose_weight":       {0.80, 2.2, 0.25},
	"build_muscle":      {1.10, 2.0, 0.25},
	"increase_strength": {1.05, 2.0, 0.30},
	"improve_endurance": {1.00, 1.8, 0.30},
	"general_fitness":   {1.00, 1.8, 0.30},
	"":                  {1.00, 1.8, 0.30},
}

// computeMacroTargets is the from_profile rule:
//
//	BMR  = 10·kg + 6.25·cm − 5·age + s  (Mifflin-St Jeor; s = +5 male,
//	       −161 female, −78 for other or prefer-not-to-say: the mean)
//	kcal = round(BMR × activity factor × goal factor)
//	       activity: sedentary 1.2, light 1.375, moderate 1.55,
//	       active 1.725, very active 1.9
//	       goal: lose weight 0.80, build muscle 1.10, strength 1.05,
//	       endurance and general 1.00
//	protein_g = round(kg × g/kg): lose weight 2.2, muscle and strength
//	       2.0, endurance and general 1.8
//	fat_g = round(kcal × share / 9): share 25% to lose weight or build
//	       muscle (room for protein and carbohydrate), 30% otherwise
//	carbs_g = round((kcal − 4·protein_g − 9·fat_g) / 4), at least 0: the
//	       rest of the energy, from the rounded grams, so the macros add
//	       up to kcal within rounding.
func computeMacroTargets(in macroInput) dbsqlc.MacroTargetsUpsertParams {
	s := -78.0
	switch in.Sex {
	case "male":
		s = 5
	case "female":
		s = -161
	}
	bmr := 10*in.WeightKg + 6.25*in.HeightCM - 5*float64(in.AgeYears) + s
	goal, ok := goalRules[in.FitnessGoal]
	if !ok {
		goal = goalRules[""]
	}
	kcal := math.Round(bmr * activityFactors[in.ActivityLevel] * goal.kcalFactor)
	protein := math.Round(in.WeightKg * goal.proteinPerKg)
	fat := math.Round(kcal * goal.fatShare / 9)
	carbs := math.Max(0, math.Round((kcal-4*protein-9*fat)/4))
	return dbsqlc.MacroTargetsUpsertParams{Kcal: kcal, ProteinG: protein, CarbsG: carbs, FatG: fat}
}

func macroTargetsToProto(t dbsqlc.MacroTarget) *nxgv1.MacroTargets {
	return &nxgv1.MacroTargets{Kcal: t.Kcal, ProteinG: t.ProteinG, CarbsG: t.CarbsG, FatG: t.FatG,
		FromProfile: t.FromProfile, UpdatedAt: timestamppb.New(t.UpdatedAt)}
}

func (s *nutritionService) GetDailyNutrition(ctx context.Context, req *connect.Request[nxgv1.GetDailyNutritionRequest]) (*connect.Response[nxgv1.GetDailyNutritionResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	type day struct {
		zone    string
		meals   []dbsqlc.Meal
		targets *dbsqlc.MacroTarget
	}
	d, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (day, error) {
		var d day
		p, err := s.queries.ProfileGet(ctx, tx, userID)
		if err != nil && !db.IsNotFound(err) {
			return d, fmt.Errorf("read profile: %w", err)
		}
		d.zone = p.Timezone
		if d.zone == "" {
			d.zone = "UTC"
		}
		loc, err := time.LoadLocation(d.zone)
		if err != nil {
			return d, fmt.Errorf("profile time zone %q: %w", d.zone, err)
		}
		start, err := time.ParseInLocation(time.DateOnly, req.Msg.GetDate(), loc)
		if err != nil {
			return d, apperr.InvalidArgument("date", "must be a calendar date, YYYY-MM-DD")
		}
		// AddDate keeps the wall clock, so a day of a DST change is 23 or 25 hours.
		end := start.AddDate(0, 0, 1)
		if d.meals, err = s.queries.MealsBetween(ctx, tx, dbsqlc.MealsBetweenParams{UserID: userID, Since: start, Until: end}); err != nil {
			return d, fmt.Errorf("read the day's meals: %w", err)
		}
		t, err := s.queries.MacroTargetsGet(ctx, tx, userID)
		if err == nil {
			d.targets = &t
		} else if !db.IsNotFound(err) {
			return d, fmt.Errorf("read macro targets: %w", err)
		}
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &nxgv1.GetDailyNutritionResponse{Date: req.Msg.GetDate(), TimeZone: d.zone}
	if resp.Meals, err = s.mealsToProto(ctx, userID, d.meals); err != nil {
		return nil, err
	}
	totals := &nxgv1.Macros{}
	for _, m := range resp.Meals {
		addMacros(totals, m.Totals.Kcal, m.Totals.ProteinG, m.Totals.CarbsG, m.Totals.FatG)
	}
	resp.Totals = roundMacros(totals)
	if d.targets != nil {
		resp.Targets = macroTargetsToProto(*d.targets)
		resp.Remaining = roundMacros(&nxgv1.Macros{
			Kcal: d.targets.Kcal - totals.Kcal, ProteinG: d.targets.ProteinG - totals.ProteinG,
			CarbsG: d.targets.CarbsG - totals.CarbsG, FatG: d.targets.FatG - totals.FatG,
		})
	}
	return connect.NewResponse(resp), nil
}

// --- Meal plans ---

// mealPlanCacheRequest is the normalised request a cached plan answers:
// every field the planner is given, with exclusions trimmed, lowercased,
// deduplicated and sorted, so requests that mean the same share an answer.
type mealPlanCacheRequest struct {
	Version    int      `json:"v"`
	UserID     string   `json:"user"`
	Days       int32    `json:"days"`
	KcalTarget float64  `json:"kcal"`
	ProteinG   float64  `json:"protein_g"`
	CarbsG     float64  `json:"carbs_g"`
	FatG       float64  `json:"fat_g"`
	Diet       string   `json:"diet"`
	Exclusions []string `json:"exclusions"`
}

func (s *nutritionService) RequestMealPlan(ctx context.Context, req *connect.Request[nxgv1.RequestMealPlanRequest]) (*connect.Response[nxgv1.RequestMealPlanResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	if msg.GetDays() < mealplanner.MinDays || msg.GetDays() > mealplanner.MaxDays {
		return nil, apperr.InvalidArgument("days", "must be %d to %d", mealplanner.MinDays, mealplanner.MaxDays)
	}
	diet := mealplanner.DietOmnivore
	if msg.GetDiet() != nxgv1.Diet_DIET_UNSPECIFIED {
		var ok bool
		if diet, ok = dietNames[msg.GetDiet()]; !ok {
			return nil, apperr.InvalidArgument("diet", "is not a known diet")
		}
	}
	exclusions := make([]string, 0, len(msg.GetExclusions()))
	for i, x := range msg.GetExclusions() {
		x = strings.ToLower(strings.TrimSpace(x))
		if n := len([]rune(x)); n < 1 || n > 40 {
			return nil, apperr.InvalidArgument(fmt.Sprintf("exclusions[%d]", i), "must be 1 to 40 characters")
		}
		exclusions = append(exclusions, x)
	}
	slices.Sort(exclusions)
	exclusions = slices.Compact(exclusions)
	if len(exclusions) > 20 {
		return nil, apperr.InvalidArgument("exclusions", "must list at most 20 foods")
	}
	clientID := msg.GetClientRequestId()
	if clientID != "" {
		r, err := s.queries.MealPlanRequestByClientID(ctx, s.pool, dbsqlc.MealPlanRequestByClientIDParams{UserID: userID, ClientRequestID: clientID})
		if err == nil {
			return s.mealPlanResponse(r)
		}
		if !db.IsNotFound(err) {
			return nil, fmt.Errorf("read meal plan request: %w", err)
		}
	}

	cr := mealPlanCacheRequest{Version: 1, UserID: userID.String(), Days: msg.GetDays(), KcalTarget: msg.GetKcalTarget(), Diet: diet, Exclusions: exclusions}
	if cr.KcalTarget == 0 {
		t, err := s.queries.MacroTargetsGet(ctx, s.pool, userID)
		if db.IsNotFound(err) {
			return nil, apperr.FailedPrecondition("kcal_target is 0, which takes your macro targets, but none are set: set them (SetMacroTargets) or give kcal_target")
		}
		if err != nil {
			return nil, fmt.Errorf("read macro targets: %w", err)
		}
		if t.Kcal < mealplanner.MinKcalTarget || t.Kcal > mealplanner.MaxKcalTarget {
			return nil, apperr.FailedPrecondition("kcal_target is 0, but your target of %g kcal is outside the %d to %d the meal planner accepts: give kcal_target",
				t.Kcal, mealplanner.MinKcalTarget, mealplanner.MaxKcalTarget)
		}
		// Macro targets the planner cannot take are left to it (0).
		within := func(v, limit float64) float64 {
			if v > limit {
				return 0
			}
			return v
		}
		cr.KcalTarget = t.Kcal
		cr.ProteinG = within(t.ProteinG, mealplanner.MaxProteinG)
		cr.CarbsG = within(t.CarbsG, mealplanner.MaxCarbsG)
		cr.FatG = within(t.FatG, mealplanner.MaxFatG)
	}
	if cr.KcalTarget < mealplanner.MinKcalTarget || cr.KcalTarget > mealplanner.MaxKcalTarget {
		return nil, apperr.InvalidArgument("kcal_target", "must be 0 (from targets) or %d to %d", mealplanner.MinKcalTarget, mealplanner.MaxKcalTarget)
	}
	cacheKey, err := aicache.Key(cr)
	if err != nil {
		return nil, fmt.Errorf("meal plan cache key: %w", err)
	}
	insert := dbsqlc.MealPlanRequestInsertParams{
		UserID: userID, ClientRequestID: clientID, Days: cr.Days, KcalTarget: cr.KcalTarget,
		ProteinG: cr.ProteinG, CarbsG: cr.CarbsG, FatG: cr.FatG, Diet: diet, Exclusions: exclusions,
		CacheKey: cacheKey, Status: "pending",
	}
	// An identical request within the cache's expiry is answered at once
	// from MongoDB, our own store; the planner is not called.
	if s.mongo != nil {
		entry, hit, err := aicache.New(s.mongo, jobs.MealPlanCollection).Get(ctx, cacheKey)
		if err != nil {
			// The cache only saves a call: without it the job asks the planner.
			s.logger.WarnContext(ctx, "meal plan cache unavailable", "err", err)
		}
		if hit {
			insert.Status, insert.FromCache, insert.Plan = "ready", true, entry.Body
			insert.ReadyAt = pgtype.Timestamptz{Time: s.now(), Valid: true}
		}
	}
	r, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.MealPlanRequest, error) {
		r, err := s.queries.MealPlanRequestInsert(ctx, tx, insert)
		if db.IsNotFound(err) {
			// A concurrent retry with the same client_request_id won.
			r, err = s.queries.MealPlanRequestByClientID(ctx, tx, dbsqlc.MealPlanRequestByClientIDParams{UserID: userID, ClientRequestID: clientID})
			if err != nil {
				return r, fmt.Errorf("read meal plan request: %w", err)
			}
			return r, nil
		}
		if isNutritionFKViolation(err) {
			return r, errAccountClosed
		}
		if err != nil {
			return r, fmt.Errorf("record meal plan request: %w", err)
		}
		if r.Status == "pending" {
			if _, err := s.id.River.InsertTx(ctx, tx, jobs.MealPlanArgs{RequestID: r.ID, UserID: userID}, nil); err != nil {
				return r, fmt.Errorf("queue meal plan: %w", err)
			}
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return s.mealPlanResponse(r)
}

func (s *nutritionService) mealPlanResponse(r dbsqlc.MealPlanRequest) (*connect.Response[nxgv1.RequestMealPlanResponse], error) {
	plan, err := mealPlanToProto(r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.RequestMealPlanResponse{MealPlanRequestId: r.ID.String(), Plan: plan}), nil
}

func (s *nutritionService) GetMealPlan(ctx context.Context, req *connect.Request[nxgv1.GetMealPlanRequest]) (*connect.Response[nxgv1.GetMealPlanResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetMealPlanRequestId())
	if err != nil {
		return nil, apperr.InvalidArgument("meal_plan_request_id", "must be a UUID")
	}
	r, err := s.queries.MealPlanRequestGet(ctx, s.pool, dbsqlc.MealPlanRequestGetParams{ID: id, UserID: userID})
	if db.IsNotFound(err) {
		return nil, apperr.NotFound("meal plan request", id.String())
	}
	if err != nil {
		return nil, fmt.Errorf("read meal plan request: %w", err)
	}
	plan, err := mealPlanToProto(r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetMealPlanResponse{Plan: plan}), nil
}

// mealPlanToProto shows a request. A pending request that holds the
// member's earlier plan (the planner is unreachable) shows as ready and
// stale, with the reason: the member has a plan to use while the job
// retries. A failed one keeps such a plan, still marked stale.
func mealPlanToProto(r dbsqlc.MealPlanRequest) (*nxgv1.MealPlan, error) {
	out := &nxgv1.MealPlan{
		Id: r.ID.String(), Status: aiStatuses[r.Status], FailureReason: r.FailureReason, Stale: r.Stale,
		KcalTarget: r.KcalTarget, Diet: dietValues[r.Diet], Exclusions: r.Exclusions,
		RequestedAt: timestamppb.New(r.RequestedAt), FromCache: r.FromCache,
	}
	if r.Status == "pending" && r.Stale {
		out.Status = nxgv1.AIStatus_AI_STATUS_READY
	}
	if r.ReadyAt.Valid {
		out.ReadyAt = timestamppb.New(r.ReadyAt.Time)
	}
	if r.Plan == nil {
		return out, nil
	}
	var p mealplanner.MealPlan
	if err := json.Unmarshal(r.Plan, &p); err != nil {
		return nil, fmt.Errorf("stored meal plan %s: %w", r.ID, err)
	}
	for _, d := range p.Days {
		day := &nxgv1.MealPlanDay{DayIndex: int32(d.DayIndex)}
		dayTotals := &nxgv1.Macros{}
		for _, m := range d.Meals {
			pm := &nxgv1.PlannedMeal{MealType: mealTypeValues[m.MealType], Name: m.Name}
			totals := &nxgv1.Macros{}
			for _, it := range m.Items {
				pm.Items = append(pm.Items, &nxgv1.FoodItem{Name: it.Name, Grams: it.Grams, Kcal: it.Kcal,
					ProteinG: it.ProteinG, CarbsG: it.CarbsG, FatG: it.FatG})
				addMacros(totals, it.Kcal, it.ProteinG, it.CarbsG, it.FatG)
			}
			addMacros(dayTotals, totals.Kcal, totals.ProteinG, totals.CarbsG, totals.FatG)
			pm.Totals = roundMacros(totals)
			day.Meals = append(day.Meals, pm)
		}
		day.Totals = roundMacros(dayTotals)
		out.Days = append(out.Days, day)
	}
	return out, nil
}

// isNutritionFKViolation says an insert named a user that is gone: the
// account was erased while the request ran.
func isNutritionFKViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503" // foreign_key_violation
}
