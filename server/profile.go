package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/pagination"
	"github.com/nxg-fitness/nxg/internal/requestid"
	"github.com/nxg-fitness/nxg/jobs"
)

// Audit actions of the ProfileService. Details name fields, never values.
const (
	actionProfileUpdated      = "profile.updated"
	actionPrivacyUpdated      = "privacy.updated"
	actionGDPRExportRequested = "gdpr.export_requested"
	actionGDPRAccountDeleted  = "gdpr.account_deleted"
)

// The columns whose values are encrypted under the user's data key. The
// column name is part of each ciphertext's associated data, so these names
// are a storage format: whatever else reads the columns (the export job)
// must open them with exactly the same names, and renaming one makes its
// stored values unreadable.
const (
	encColDateOfBirth         = "date_of_birth_enc"
	encColSex                 = "sex_enc"
	encColHeightCM            = "height_cm_enc"
	encColPhone               = "phone_enc"
	encColWeightKg            = "weight_kg_enc"
	encColBodyFatPercent      = "body_fat_percent_enc"
	encColMuscleMassKg        = "muscle_mass_kg_enc"
	encColRestingHeartRateBPM = "resting_heart_rate_bpm_enc"
)

const (
	// exportURLTTL is how long a download URL of an export archive works.
	exportURLTTL = 15 * time.Minute
	// bodyMetricsListName ties page tokens to ListBodyMetrics.
	bodyMetricsListName = "body_metrics"
	// measuredAtSkew is the clock skew allowed for measured_at, as in the
	// contract's rule.
	measuredAtSkew = 5 * time.Minute
	// minMemberAge and maxMemberAge bound the age a date of birth may give.
	minMemberAge, maxMemberAge = 13, 120
)

// The lower_snake names the database stores for each enum (the CHECK
// constraints of 00003_identity.sql); UNSPECIFIED is "" (not given).
var (
	sexNames = map[nxgv1.Sex]string{
		nxgv1.Sex_SEX_UNSPECIFIED:       "",
		nxgv1.Sex_SEX_FEMALE:            "female",
		nxgv1.Sex_SEX_MALE:              "male",
		nxgv1.Sex_SEX_OTHER:             "other",
		nxgv1.Sex_SEX_PREFER_NOT_TO_SAY: "prefer_not_to_say",
	}
	fitnessGoalNames = map[nxgv1.FitnessGoal]string{
		nxgv1.FitnessGoal_FITNESS_GOAL_UNSPECIFIED:       "",
		nxgv1.FitnessGoal_FITNESS_GOAL_LOSE_WEIGHT:       "lose_weight",
		nxgv1.FitnessGoal_FITNESS_GOAL_BUILD_MUSCLE:      "build_muscle",
		nxgv1.FitnessGoal_FITNESS_GOAL_INCREASE_STRENGTH: "increase_strength",
		nxgv1.FitnessGoal_FITNESS_GOAL_IMPROVE_ENDURANCE: "improve_endurance",
		nxgv1.FitnessGoal_FITNESS_GOAL_GENERAL_FITNESS:   "general_fitness",
	}
	activityLevelNames = map[nxgv1.ActivityLevel]string{
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_UNSPECIFIED: "",
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_SEDENTARY:   "sedentary",
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_LIGHT:       "light",
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_MODERATE:    "moderate",
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_ACTIVE:      "active",
		nxgv1.ActivityLevel_ACTIVITY_LEVEL_VERY_ACTIVE: "very_active",
	}
	unitSystemNames = map[nxgv1.UnitSystem]string{
		nxgv1.UnitSystem_UNIT_SYSTEM_UNSPECIFIED: "",
		nxgv1.UnitSystem_UNIT_SYSTEM_METRIC:      "metric",
		nxgv1.UnitSystem_UNIT_SYSTEM_IMPERIAL:    "imperial",
	}

	sexValues           = invertNames(sexNames)
	fitnessGoalValues   = invertNames(fitnessGoalNames)
	activityLevelValues = invertNames(activityLevelNames)
	unitSystemValues    = invertNames(unitSystemNames)
)

func invertNames[E comparable](m map[E]string) map[string]E {
	out := make(map[string]E, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// enumName is the stored name of v, or an invalid-argument error naming
// field for a value the contract does not define (request validation
// refuses those first).
func enumName[E comparable](names map[E]string, v E, field string) (string, error) {
	name, ok := names[v]
	if !ok {
		return "", apperr.InvalidArgument(field, "is not a defined value")
	}
	return name, nil
}

// enumValue is the enum of a stored name. An unknown name can only come
// from a schema or code mismatch, so it is a fault, not a client error.
func enumValue[E comparable](values map[string]E, name, column string) (E, error) {
	v, ok := values[name]
	if !ok {
		var zero E
		return zero, fmt.Errorf("stored %s %q is not a known value", column, name)
	}
	return v, nil
}

// Field mask paths of UpdateProfile, in the order of the Profile message;
// the audit details list changed fields in this order.
var (
	profileMaskPaths = []string{
		"display_name", "date_of_birth", "sex", "height_cm", "fitness_goal",
		"activity_level", "unit_system", "timezone", "home_branch_id", "phone",
	}
	profileOutputOnly = []string{"user_id", "email", "updated_at"}

	privacyMaskPaths  = []string{"appear_on_leaderboards", "share_analytics", "marketing_notifications"}
	privacyOutputOnly = []string{"updated_at"}
)

var (
	// errAccountClosed answers a caller whose token outlived their account:
	// DeleteAccount revokes every session, but should that fail the
	// account is still treated as signed out here.
	errAccountClosed = apperr.Unauthenticated("the account has been closed")
	// errWrongPassword is DeleteAccount's answer to a wrong password.
	errWrongPassword = &apperr.Error{Code: apperr.CodePermissionDenied, Field: "password", Message: "is incorrect"}
)

// profileService serves nxg.v1.ProfileService: the signed-in user's own
// profile, body metrics, privacy settings, export and erasure. Every RPC
// acts on the caller's own data only; staff reading members' data is a
// different service with its own authorisation and audit.
type profileService struct {
	pool    *pgxpool.Pool
	id      Identity
	logger  *slog.Logger
	queries *dbsqlc.Queries
	// now is the clock for date-of-birth, range and expiry checks.
	now func() time.Time
}

// NewProfileService returns the ProfileService handler over pool.
func NewProfileService(pool *pgxpool.Pool, id Identity, logger *slog.Logger) nxgv1connect.ProfileServiceHandler {
	return &profileService{pool: pool, id: id, logger: logger, queries: dbsqlc.New(), now: time.Now}
}

// caller returns the signed-in user. Device tokens carry a device id as
// their subject, not a person, so they have no profile to act on.
func (s *profileService) caller(ctx context.Context) (uuid.UUID, error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return uuid.Nil, err
	}
	if p.Role == token.RoleDevice {
		return uuid.Nil, apperr.PermissionDenied("devices have no profile; sign in as a person")
	}
	return p.UserID, nil
}

// user reads the caller's live account.
func (s *profileService) user(ctx context.Context, tx pgx.Tx, userID uuid.UUID) (dbsqlc.User, error) {
	u, err := s.queries.UserGet(ctx, tx, userID)
	if db.IsNotFound(err) {
		return u, errAccountClosed
	}
	if err != nil {
		return u, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// dataKey unwraps the user's data key. A failure is a fault: the key was
// destroyed, tampered with, or its master key left the ring.
func (s *profileService) dataKey(u dbsqlc.User) (*fieldcrypt.DataKey, error) {
	key, err := s.id.MasterKeys.Unwrap(u.ID.String(), u.DataKey)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key of user %s: %w", u.ID, err)
	}
	return key, nil
}

// event is the audit row of an action the caller took on their own account.
func (s *profileService) event(ctx context.Context, userID uuid.UUID, action string, result audit.Result, details map[string]string) audit.Event {
	return requestEvent(ctx, audit.Event{
		ActorID:    userID,
		Action:     action,
		TargetType: "user",
		TargetID:   userID.String(),
		Result:     result,
		Details:    details,
	})
}

// --- Profile ---

// profileState is what a profile response is built from.
type profileState struct {
	user    dbsqlc.User
	profile dbsqlc.Profile
	// stored is false when the user never had a profile row.
	stored bool
}

func (s *profileService) GetProfile(ctx context.Context, _ *connect.Request[nxgv1.GetProfileRequest]) (*connect.Response[nxgv1.GetProfileResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (profileState, error) {
		u, err := s.user(ctx, tx, userID)
		if err != nil {
			return profileState{}, err
		}
		p, err := s.queries.ProfileGet(ctx, tx, userID)
		if db.IsNotFound(err) {
			return profileState{user: u, profile: dbsqlc.Profile{UserID: userID}}, nil
		}
		if err != nil {
			return profileState{}, fmt.Errorf("get profile: %w", err)
		}
		return profileState{user: u, profile: p, stored: true}, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.profileToProto(st, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetProfileResponse{Profile: out}), nil
}

func (s *profileService) UpdateProfile(ctx context.Context, req *connect.Request[nxgv1.UpdateProfileRequest]) (*connect.Response[nxgv1.UpdateProfileResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.Msg.GetProfile()
	paths, err := maskPaths(req.Msg.GetUpdateMask().GetPaths(), profileMaskPaths, profileOutputOnly)
	if err != nil {
		return nil, err
	}
	named := make(map[string]bool, len(paths))
	for _, p := range paths {
		named[p] = true
	}
	ch, err := s.checkProfileUpdate(in, named)
	if err != nil {
		return nil, err
	}

	// Read, merge and write in one transaction with the account row locked,
	// so two concurrent updates of different fields both survive.
	var key *fieldcrypt.DataKey
	st, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (profileState, error) {
		u, err := s.queries.ProfileOwnerGetForUpdate(ctx, tx, userID)
		if db.IsNotFound(err) {
			return profileState{}, errAccountClosed
		}
		if err != nil {
			return profileState{}, fmt.Errorf("lock user: %w", err)
		}
		cur, err := s.queries.ProfileGetForUpdate(ctx, tx, userID)
		if db.IsNotFound(err) {
			cur = dbsqlc.Profile{UserID: userID}
		} else if err != nil {
			return profileState{}, fmt.Errorf("get profile: %w", err)
		}
		if named["date_of_birth"] || named["sex"] || named["height_cm"] || named["phone"] {
			if key, err = s.dataKey(u); err != nil {
				return profileState{}, err
			}
		}

		next := dbsqlc.ProfileUpsertParams{
			UserID:         userID,
			DateOfBirthEnc: cur.DateOfBirthEnc,
			SexEnc:         cur.SexEnc,
			HeightCmEnc:    cur.HeightCmEnc,
			PhoneEnc:       cur.PhoneEnc,
			FitnessGoal:    cur.FitnessGoal,
			ActivityLevel:  cur.ActivityLevel,
			UnitSystem:     cur.UnitSystem,
			Timezone:       cur.Timezone,
			HomeBranchID:   cur.HomeBranchID,
		}
		// Sensitive values are sealed only when named: the others keep
		// their stored ciphertext untouched.
		seal := func(dst *[]byte, column, value string) error {
			b, err := key.SealString(column, value)
			if err != nil {
				return fmt.Errorf("encrypt %s: %w", column, err)
			}
			*dst = b
			return nil
		}
		for _, p := range paths {
			var err error
			switch p {
			case "display_name":
				err = s.queries.UserSetDisplayName(ctx, tx, dbsqlc.UserSetDisplayNameParams{ID: userID, DisplayName: ch.displayName})
				u.DisplayName = ch.displayName
			case "date_of_birth":
				err = seal(&next.DateOfBirthEnc, encColDateOfBirth, ch.dateOfBirth)
			case "sex":
				err = seal(&next.SexEnc, encColSex, ch.sex)
			case "height_cm":
				err = seal(&next.HeightCmEnc, encColHeightCM, ch.heightCM)
			case "phone":
				err = seal(&next.PhoneEnc, encColPhone, ch.phone)
			case "fitness_goal":
				next.FitnessGoal = ch.fitnessGoal
			case "activity_level":
				next.ActivityLevel = ch.activityLevel
			case "unit_system":
				next.UnitSystem = ch.unitSystem
			case "timezone":
				next.Timezone = ch.timezone
			case "home_branch_id":
				next.HomeBranchID = ch.homeBranch
				if ch.homeBranch.Valid {
					_, err = s.queries.ProfileHomeBranchCheck(ctx, tx, ch.homeBranch.UUID)
					if db.IsNotFound(err) {
						return profileState{}, apperr.InvalidArgument("profile.home_branch_id", "no such branch")
					}
				}
			}
			if err != nil {
				return profileState{}, fmt.Errorf("update %s: %w", p, err)
			}
		}
		// The row is written even when only display_name changed, so that
		// updated_at says when the profile as a whole last changed.
		row, err := s.queries.ProfileUpsert(ctx, tx, next)
		if err != nil {
			return profileState{}, fmt.Errorf("write profile: %w", err)
		}
		ev := s.event(ctx, userID, actionProfileUpdated, audit.ResultSuccess,
			map[string]string{"fields": strings.Join(paths, ",")})
		if err := s.id.Audit.Record(ctx, tx, ev); err != nil {
			return profileState{}, err
		}
		return profileState{user: u, profile: row, stored: true}, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.profileToProto(st, key)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.UpdateProfileResponse{Profile: out}), nil
}

// profileChange holds the checked, storable new values of an update.
type profileChange struct {
	displayName, dateOfBirth, sex, heightCM, phone   string
	fitnessGoal, activityLevel, unitSystem, timezone string
	homeBranch                                       uuid.NullUUID
}

// checkProfileUpdate validates the named fields beyond the contract's
// rules (which request validation has applied) and turns them into the
// values to store. Whether home_branch_id exists is checked in the
// transaction.
func (s *profileService) checkProfileUpdate(in *nxgv1.Profile, named map[string]bool) (profileChange, error) {
	var ch profileChange
	var err error
	if named["display_name"] {
		ch.displayName = strings.TrimSpace(in.GetDisplayName())
		if ch.displayName == "" {
			return ch, apperr.InvalidArgument("profile.display_name", "cannot be cleared")
		}
		if strings.IndexFunc(ch.displayName, unicode.IsControl) >= 0 {
			return ch, apperr.InvalidArgument("profile.display_name", "must not contain control characters")
		}
	}
	if named["date_of_birth"] && in.GetDateOfBirth() != "" {
		if err := checkDateOfBirth(in.GetDateOfBirth(), s.now()); err != nil {
			return ch, err
		}
		ch.dateOfBirth = in.GetDateOfBirth()
	}
	if named["sex"] {
		if ch.sex, err = enumName(sexNames, in.GetSex(), "profile.sex"); err != nil {
			return ch, err
		}
	}
	if named["height_cm"] && in.GetHeightCm() != 0 {
		h := in.GetHeightCm()
		if math.IsNaN(h) || h < 50 || h > 280 {
			return ch, apperr.InvalidArgument("profile.height_cm", "must be between 50 and 280")
		}
		ch.heightCM = strconv.FormatFloat(h, 'g', -1, 64)
	}
	if named["phone"] {
		// The contract's pattern (E.164) has been checked.
		ch.phone = in.GetPhone()
	}
	if named["fitness_goal"] {
		if ch.fitnessGoal, err = enumName(fitnessGoalNames, in.GetFitnessGoal(), "profile.fitness_goal"); err != nil {
			return ch, err
		}
	}
	if named["activity_level"] {
		if ch.activityLevel, err = enumName(activityLevelNames, in.GetActivityLevel(), "profile.activity_level"); err != nil {
			return ch, err
		}
	}
	if named["unit_system"] {
		if ch.unitSystem, err = enumName(unitSystemNames, in.GetUnitSystem(), "profile.unit_system"); err != nil {
			return ch, err
		}
	}
	if named["timezone"] && in.GetTimezone() != "" {
		tz := in.GetTimezone()
		// "Local" would be the server's zone, whatever that is.
		if _, err := time.LoadLocation(tz); err != nil || tz == "Local" {
			return ch, apperr.InvalidArgument("profile.timezone", "is not an IANA time zone name such as Europe/London")
		}
		ch.timezone = tz
	}
	if named["home_branch_id"] && in.GetHomeBranchId() != "" {
		id, err := uuid.Parse(in.GetHomeBranchId())
		if err != nil {
			return ch, apperr.InvalidArgument("profile.home_branch_id", "must be a UUID")
		}
		ch.homeBranch = uuid.NullUUID{UUID: id, Valid: true}
	}
	return ch, nil
}

// checkDateOfBirth checks that s is a real calendar day (the contract's
// pattern lets 2023-02-30 through) giving an age from 13 to 120 on now's
// UTC date. Someone ahead of UTC may meet the 13 a few hours late.
func checkDateOfBirth(s string, now time.Time) error {
	const field = "profile.date_of_birth"
	dob, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return apperr.InvalidArgument(field, "is not a calendar date (YYYY-MM-DD)")
	}
	y, m, d := now.UTC().Date()
	today := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	switch {
	case dob.After(today):
		return apperr.InvalidArgument(field, "must not be in the future")
	case dob.AddDate(minMemberAge, 0, 0).After(today):
		return apperr.InvalidArgument(field, "members must be at least %d years old", minMemberAge)
	case !dob.AddDate(maxMemberAge+1, 0, 0).After(today):
		return apperr.InvalidArgument(field, "gives an age over %d years", maxMemberAge)
	}
	return nil
}

// maskPaths checks an update mask against the updatable paths and returns
// the named ones once each, in the order of allowed.
func maskPaths(paths, allowed, outputOnly []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, apperr.InvalidArgument("update_mask", "must name at least one field")
	}
	named := make(map[string]bool, len(paths))
	for _, p := range paths {
		switch {
		case slices.Contains(allowed, p):
			named[p] = true
		case slices.Contains(outputOnly, p):
			return nil, apperr.InvalidArgument("update_mask", "%q is output only and cannot be updated", p)
		default:
			return nil, apperr.InvalidArgument("update_mask", "unknown field %q; the fields are %s",
				truncateForMessage(p, 64), strings.Join(allowed, ", "))
		}
	}
	out := make([]string, 0, len(named))
	for _, p := range allowed {
		if named[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// truncateForMessage keeps an echoed client value short in an error.
func truncateForMessage(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// profileToProto decrypts a profile. key may be nil; it is unwrapped when
// an encrypted column holds a value.
func (s *profileService) profileToProto(st profileState, key *fieldcrypt.DataKey) (*nxgv1.Profile, error) {
	p := st.profile
	out := &nxgv1.Profile{
		UserId:      st.user.ID.String(),
		Email:       st.user.Email,
		DisplayName: st.user.DisplayName,
		Timezone:    p.Timezone,
	}
	var err error
	if out.FitnessGoal, err = enumValue(fitnessGoalValues, p.FitnessGoal, "fitness_goal"); err != nil {
		return nil, err
	}
	if out.ActivityLevel, err = enumValue(activityLevelValues, p.ActivityLevel, "activity_level"); err != nil {
		return nil, err
	}
	if out.UnitSystem, err = enumValue(unitSystemValues, p.UnitSystem, "unit_system"); err != nil {
		return nil, err
	}
	if p.HomeBranchID.Valid {
		out.HomeBranchId = p.HomeBranchID.UUID.String()
	}
	if st.stored {
		out.UpdatedAt = timestamppb.New(p.UpdatedAt)
	}

	if len(p.DateOfBirthEnc)+len(p.SexEnc)+len(p.HeightCmEnc)+len(p.PhoneEnc) == 0 {
		return out, nil
	}
	if key == nil {
		if key, err = s.dataKey(st.user); err != nil {
			return nil, err
		}
	}
	open := func(column string, b []byte) (string, error) {
		v, err := key.OpenString(column, b)
		if err != nil {
			return "", fmt.Errorf("decrypt %s of user %s: %w", column, st.user.ID, err)
		}
		return v, nil
	}
	if out.DateOfBirth, err = open(encColDateOfBirth, p.DateOfBirthEnc); err != nil {
		return nil, err
	}
	if out.Phone, err = open(encColPhone, p.PhoneEnc); err != nil {
		return nil, err
	}
	sex, err := open(encColSex, p.SexEnc)
	if err != nil {
		return nil, err
	}
	if out.Sex, err = enumValue(sexValues, sex, "sex"); err != nil {
		return nil, err
	}
	height, err := open(encColHeightCM, p.HeightCmEnc)
	if err != nil {
		return nil, err
	}
	if height != "" {
		if out.HeightCm, err = strconv.ParseFloat(height, 64); err != nil {
			return nil, fmt.Errorf("stored height_cm of user %s: %w", st.user.ID, err)
		}
	}
	return out, nil
}

// --- Body metrics ---

func (s *profileService) RecordBodyMetrics(ctx context.Context, req *connect.Request[nxgv1.RecordBodyMetricsRequest]) (*connect.Response[nxgv1.RecordBodyMetricsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	// The contract's rules check these too; they are repeated here because
	// the handler must not depend on the interceptor for what it stores.
	ts := msg.GetMeasuredAt()
	if ts == nil || ts.CheckValid() != nil {
		return nil, apperr.InvalidArgument("measured_at", "is required and must be a valid timestamp")
	}
	measuredAt := ts.AsTime()
	if measuredAt.After(s.now().Add(measuredAtSkew)) {
		return nil, apperr.InvalidArgument("measured_at", "must not be in the future")
	}
	values := []struct {
		v      *float64
		column string
		field  string
		lo, hi float64
	}{
		{msg.WeightKg, encColWeightKg, "weight_kg", 20, 400},
		{msg.BodyFatPercent, encColBodyFatPercent, "body_fat_percent", 2, 75},
		{msg.MuscleMassKg, encColMuscleMassKg, "muscle_mass_kg", 5, 200},
		{msg.RestingHeartRateBpm, encColRestingHeartRateBPM, "resting_heart_rate_bpm", 25, 220},
	}
	given := 0
	for _, v := range values {
		if v.v == nil {
			continue
		}
		given++
		if math.IsNaN(*v.v) || *v.v < v.lo || *v.v > v.hi {
			return nil, apperr.InvalidArgument(v.field, "must be between %g and %g", v.lo, v.hi)
		}
	}
	if given == 0 {
		return nil, apperr.InvalidArgument("", "at least one of weight_kg, body_fat_percent, muscle_mass_kg, resting_heart_rate_bpm is required")
	}

	type recorded struct {
		row dbsqlc.BodyMetric
		key *fieldcrypt.DataKey
	}
	rec, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (recorded, error) {
		u, err := s.user(ctx, tx, userID)
		if err != nil {
			return recorded{}, err
		}
		key, err := s.dataKey(u)
		if err != nil {
			return recorded{}, err
		}
		sealed := make([][]byte, len(values))
		for i, v := range values {
			if v.v == nil {
				continue
			}
			if sealed[i], err = key.Seal(v.column, []byte(strconv.FormatFloat(*v.v, 'g', -1, 64))); err != nil {
				return recorded{}, fmt.Errorf("encrypt %s: %w", v.column, err)
			}
		}
		row, err := s.queries.BodyMetricsInsert(ctx, tx, dbsqlc.BodyMetricsInsertParams{
			UserID:                 userID,
			MeasuredAt:             measuredAt,
			WeightKgEnc:            sealed[0],
			BodyFatPercentEnc:      sealed[1],
			MuscleMassKgEnc:        sealed[2],
			RestingHeartRateBpmEnc: sealed[3],
		})
		if err != nil {
			return recorded{}, fmt.Errorf("insert body metrics: %w", err)
		}
		return recorded{row: row, key: key}, nil
	})
	if err != nil {
		return nil, err
	}
	out, err := bodyMetricsToProto(rec.row, rec.key)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.RecordBodyMetricsResponse{Metrics: out}), nil
}

func (s *profileService) ListBodyMetrics(ctx context.Context, req *connect.Request[nxgv1.ListBodyMetricsRequest]) (*connect.Response[nxgv1.ListBodyMetricsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	var cursor pagination.TimeCursor
	after, err := pagination.Decode(bodyMetricsListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.BodyMetricsListParams{UserID: userID, Until: s.now(), RowLimit: size + 1}
	if ts := msg.GetSince(); ts != nil {
		if ts.CheckValid() != nil {
			return nil, apperr.InvalidArgument("since", "is not a valid timestamp")
		}
		params.Since = ts.AsTime()
	}
	if ts := msg.GetUntil(); ts != nil {
		if ts.CheckValid() != nil {
			return nil, apperr.InvalidArgument("until", "is not a valid timestamp")
		}
		params.Until = ts.AsTime()
		if msg.GetSince() != nil && !params.Until.After(params.Since) {
			return nil, apperr.InvalidArgument("until", "must be after since")
		}
	}
	if after {
		params.BeforeTime = pgtype.Timestamptz{Time: cursor.Time, Valid: true}
		params.BeforeID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}

	type page struct {
		user dbsqlc.User
		rows []dbsqlc.BodyMetric
	}
	p, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (page, error) {
		u, err := s.user(ctx, tx, userID)
		if err != nil {
			return page{}, err
		}
		rows, err := s.queries.BodyMetricsList(ctx, tx, params)
		if err != nil {
			return page{}, fmt.Errorf("list body metrics: %w", err)
		}
		return page{user: u, rows: rows}, nil
	})
	if err != nil {
		return nil, err
	}

	resp := &nxgv1.ListBodyMetricsResponse{Metrics: []*nxgv1.BodyMetrics{}}
	rows := p.rows
	rows, resp.NextPageToken = pagination.Page(bodyMetricsListName, rows, size, func(last dbsqlc.BodyMetric) any {
		return pagination.TimeCursor{Time: last.MeasuredAt, ID: last.ID}
	})
	if len(rows) == 0 {
		return connect.NewResponse(resp), nil
	}
	key, err := s.dataKey(p.user)
	if err != nil {
		return nil, err
	}
	resp.Metrics = make([]*nxgv1.BodyMetrics, len(rows))
	for i, r := range rows {
		if resp.Metrics[i], err = bodyMetricsToProto(r, key); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(resp), nil
}

func bodyMetricsToProto(r dbsqlc.BodyMetric, key *fieldcrypt.DataKey) (*nxgv1.BodyMetrics, error) {
	out := &nxgv1.BodyMetrics{Id: r.ID.String(), MeasuredAt: timestamppb.New(r.MeasuredAt)}
	for _, f := range []struct {
		dst    **float64
		column string
		enc    []byte
	}{
		{&out.WeightKg, encColWeightKg, r.WeightKgEnc},
		{&out.BodyFatPercent, encColBodyFatPercent, r.BodyFatPercentEnc},
		{&out.MuscleMassKg, encColMuscleMassKg, r.MuscleMassKgEnc},
		{&out.RestingHeartRateBpm, encColRestingHeartRateBPM, r.RestingHeartRateBpmEnc},
	} {
		if f.enc == nil {
			continue
		}
		b, err := key.Open(f.column, f.enc)
		if err != nil {
			return nil, fmt.Errorf("decrypt %s of body metrics %s: %w", f.column, r.ID, err)
		}
		v, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return nil, fmt.Errorf("stored %s of body metrics %s: %w", f.column, r.ID, err)
		}
		*f.dst = &v
	}
	return out, nil
}

// --- Privacy settings ---

func (s *profileService) GetPrivacySettings(ctx context.Context, _ *connect.Request[nxgv1.GetPrivacySettingsRequest]) (*connect.Response[nxgv1.GetPrivacySettingsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.PrivacySettings, error) {
		if _, err := s.user(ctx, tx, userID); err != nil {
			return nil, err
		}
		row, err := s.queries.PrivacyGet(ctx, tx, userID)
		if db.IsNotFound(err) {
			// Never set: everything is off (privacy by default).
			return &nxgv1.PrivacySettings{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get privacy settings: %w", err)
		}
		return privacyToProto(row), nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetPrivacySettingsResponse{Settings: out}), nil
}

func (s *profileService) UpdatePrivacySettings(ctx context.Context, req *connect.Request[nxgv1.UpdatePrivacySettingsRequest]) (*connect.Response[nxgv1.UpdatePrivacySettingsResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	paths, err := maskPaths(req.Msg.GetUpdateMask().GetPaths(), privacyMaskPaths, privacyOutputOnly)
	if err != nil {
		return nil, err
	}
	in := req.Msg.GetSettings()
	out, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.PrivacySettings, error) {
		if _, err := s.queries.ProfileOwnerGetForUpdate(ctx, tx, userID); db.IsNotFound(err) {
			return nil, errAccountClosed
		} else if err != nil {
			return nil, fmt.Errorf("lock user: %w", err)
		}
		cur, err := s.queries.PrivacyGetForUpdate(ctx, tx, userID)
		if err != nil && !db.IsNotFound(err) {
			return nil, fmt.Errorf("get privacy settings: %w", err)
		}
		next := dbsqlc.PrivacyUpsertParams{
			UserID:                 userID,
			AppearOnLeaderboards:   cur.AppearOnLeaderboards,
			ShareAnalytics:         cur.ShareAnalytics,
			MarketingNotifications: cur.MarketingNotifications,
		}
		for _, p := range paths {
			switch p {
			case "appear_on_leaderboards":
				next.AppearOnLeaderboards = in.GetAppearOnLeaderboards()
			case "share_analytics":
				next.ShareAnalytics = in.GetShareAnalytics()
			case "marketing_notifications":
				next.MarketingNotifications = in.GetMarketingNotifications()
			}
		}
		row, err := s.queries.PrivacyUpsert(ctx, tx, next)
		if err != nil {
			return nil, fmt.Errorf("write privacy settings: %w", err)
		}
		ev := s.event(ctx, userID, actionPrivacyUpdated, audit.ResultSuccess,
			map[string]string{"fields": strings.Join(paths, ",")})
		if err := s.id.Audit.Record(ctx, tx, ev); err != nil {
			return nil, err
		}
		return privacyToProto(row), nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.UpdatePrivacySettingsResponse{Settings: out}), nil
}

func privacyToProto(r dbsqlc.PrivacySetting) *nxgv1.PrivacySettings {
	return &nxgv1.PrivacySettings{
		AppearOnLeaderboards:   r.AppearOnLeaderboards,
		ShareAnalytics:         r.ShareAnalytics,
		MarketingNotifications: r.MarketingNotifications,
		UpdatedAt:              timestamppb.New(r.UpdatedAt),
	}
}

// --- GDPR: export and erasure ---

func (s *profileService) ExportMyData(ctx context.Context, _ *connect.Request[nxgv1.ExportMyDataRequest]) (*connect.Response[nxgv1.ExportMyDataResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	exportID, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (uuid.UUID, error) {
		if _, err := s.user(ctx, tx, userID); err != nil {
			return uuid.Nil, err
		}
		// At most one export is pending per user (a unique index): asking
		// again while one is built returns that one.
		created := true
		row, err := s.queries.DataExportCreate(ctx, tx, userID)
		if db.IsNotFound(err) {
			created = false
			row, err = s.queries.DataExportPending(ctx, tx, userID)
			if db.IsNotFound(err) {
				// The pending export finished between the two statements.
				return uuid.Nil, &apperr.Error{Code: apperr.CodeAborted, Message: "an export finished meanwhile; ask again"}
			}
		}
		if err != nil {
			return uuid.Nil, fmt.Errorf("create data export: %w", err)
		}
		// The job is inserted for a pending export too: its args are unique
		// per export, so River drops the duplicate while the first job
		// lives, and re-creates one that was lost (discarded).
		if _, err := s.id.River.InsertTx(ctx, tx, jobs.DataExportArgs{ExportID: row.ID, UserID: userID}, nil); err != nil {
			return uuid.Nil, fmt.Errorf("insert data export job: %w", err)
		}
		ev := s.event(ctx, userID, actionGDPRExportRequested, audit.ResultSuccess, map[string]string{
			"export_id": row.ID.String(),
			"new":       strconv.FormatBool(created),
		})
		if err := s.id.Audit.Record(ctx, tx, ev); err != nil {
			return uuid.Nil, err
		}
		return row.ID, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.ExportMyDataResponse{ExportId: exportID.String()}), nil
}

func (s *profileService) GetDataExport(ctx context.Context, req *connect.Request[nxgv1.GetDataExportRequest]) (*connect.Response[nxgv1.GetDataExportResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	exportID, err := uuid.Parse(req.Msg.GetExportId())
	if err != nil {
		return nil, apperr.InvalidArgument("export_id", "must be a UUID")
	}
	row, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.DataExport, error) {
		if _, err := s.user(ctx, tx, userID); err != nil {
			return dbsqlc.DataExport{}, err
		}
		// Another user's export is not found, exactly like a missing one.
		row, err := s.queries.DataExportGet(ctx, tx, dbsqlc.DataExportGetParams{ID: exportID, UserID: userID})
		if db.IsNotFound(err) {
			return row, apperr.NotFound("data export", exportID.String())
		}
		if err != nil {
			return row, fmt.Errorf("get data export: %w", err)
		}
		return row, nil
	})
	if err != nil {
		return nil, err
	}

	resp := &nxgv1.GetDataExportResponse{
		ExportId:  row.ID.String(),
		CreatedAt: timestamppb.New(row.CreatedAt),
	}
	if row.ExpiresAt.Valid {
		resp.ExpiresAt = timestamppb.New(row.ExpiresAt.Time)
	}
	switch row.Status {
	case "pending":
		resp.Status = nxgv1.ExportStatus_EXPORT_STATUS_PENDING
	case "failed":
		resp.Status = nxgv1.ExportStatus_EXPORT_STATUS_FAILED
		resp.FailureReason = row.FailureReason
	case "expired":
		resp.Status = nxgv1.ExportStatus_EXPORT_STATUS_EXPIRED
	case "ready":
		if !row.ExpiresAt.Valid || !row.ObjectKey.Valid {
			return nil, fmt.Errorf("data export %s is ready without an object or expiry", row.ID)
		}
		// The retention job marks expired archives periodically; until it
		// runs, a ready archive past its expiry is already expired here.
		ttl := min(exportURLTTL, row.ExpiresAt.Time.Sub(s.now()))
		if ttl < time.Second {
			resp.Status = nxgv1.ExportStatus_EXPORT_STATUS_EXPIRED
			break
		}
		// Defence in depth: never sign a URL for an object outside the
		// caller's own prefix, whatever the row says.
		if !strings.HasPrefix(row.ObjectKey.String, "users/"+userID.String()+"/") {
			return nil, fmt.Errorf("data export %s has object key outside its user's prefix", row.ID)
		}
		url, err := s.id.Storage.PresignGet(ctx, row.ObjectKey.String, ttl)
		if err != nil {
			return nil, fmt.Errorf("presign data export %s: %w", row.ID, err)
		}
		resp.Status = nxgv1.ExportStatus_EXPORT_STATUS_READY
		resp.DownloadUrl = url
	default:
		return nil, fmt.Errorf("data export %s has unknown status %q", row.ID, row.Status)
	}
	return connect.NewResponse(resp), nil
}

func (s *profileService) DeleteAccount(ctx context.Context, req *connect.Request[nxgv1.DeleteAccountRequest]) (*connect.Response[nxgv1.DeleteAccountResponse], error) {
	userID, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	u, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.User, error) {
		return s.user(ctx, tx, userID)
	})
	if err != nil {
		return nil, err
	}

	// A stolen access token must not become a password oracle: failures
	// here count against the same per-account and per-IP budget as failed
	// sign-ins (it is the same secret), and the check fails closed.
	ip := clientinfo.From(ctx).IP
	if err := s.id.LoginLimiter.Allow(ctx, u.Email, ip); err != nil {
		if _, ok := apperr.As(err); ok {
			return nil, err
		}
		return nil, apperr.Unavailable(time.Second, err, "cannot check the password right now; retry shortly")
	}
	// The password is checked outside any transaction: hashing takes tens
	// of milliseconds and holds no database resources.
	ok, err := s.id.Passwords.Verify(ctx, req.Msg.GetPassword(), u.PasswordHash)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := s.id.LoginLimiter.Fail(ctx, u.Email, ip); err != nil {
			s.logger.WarnContext(ctx, "record failed password check", "request_id", requestid.From(ctx), "error", err)
		}
		// The refusal is audited in its own transaction, since the RPC fails.
		if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			return s.id.Audit.Record(ctx, tx, s.event(ctx, userID, actionGDPRAccountDeleted, audit.ResultDenied,
				map[string]string{"reason": "wrong_password"}))
		}); err != nil {
			return nil, fmt.Errorf("audit refused account deletion: %w", err)
		}
		return nil, errWrongPassword
	}

	// Closing the account, queueing its erasure and the audit row commit
	// together: a closed account always gets erased, and never without
	// its audit row.
	err = db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := s.queries.UserMarkDeleted(ctx, tx, userID)
		if err != nil {
			return fmt.Errorf("mark user deleted: %w", err)
		}
		if n == 0 {
			// A concurrent DeleteAccount won.
			return errAccountClosed
		}
		if _, err := s.id.River.InsertTx(ctx, tx, jobs.AccountErasureArgs{UserID: userID}, nil); err != nil {
			return fmt.Errorf("insert account erasure job: %w", err)
		}
		return s.id.Audit.Record(ctx, tx, s.event(ctx, userID, actionGDPRAccountDeleted, audit.ResultSuccess, nil))
	})
	if err != nil {
		return nil, err
	}

	// Sessions are revoked only after the commit. Revoking first would, if
	// the transaction then failed, sign the user out everywhere while the
	// account stayed open: harmless but confusing. After the commit the
	// account is closed whatever happens next; should Redis fail here, the
	// erasure job revokes the sessions again (belt and braces), and until
	// then every handler of this service refuses a closed account. The
	// revocation runs even if the client has gone, hence WithoutCancel.
	if _, err := s.id.Sessions.RevokeAll(context.WithoutCancel(ctx), userID.String(), ""); err != nil {
		s.logger.ErrorContext(ctx, "revoke sessions of deleted account; the erasure job will retry",
			"request_id", requestid.From(ctx), "user_id", userID.String(), "error", err)
	}
	// Live streams of the account end now, on every server process.
	notifyRevoked(context.WithoutCancel(ctx), s.pool, s.logger, userID)
	return connect.NewResponse(&nxgv1.DeleteAccountResponse{}), nil
}
