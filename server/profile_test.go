package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// profileTestPassword is the password of every member newMember makes.
const profileTestPassword = "correct horse battery staple 42"

// newMember creates a member directly in the database, with a data key
// wrapped for them and a real password hash, and signs them in: a live
// session and an access token for it. It does not go through AuthService,
// so these tests depend on nothing but the stores.
func (b *apiTestBundle) newMember(t testing.TB) (userID uuid.UUID, accessToken string) {
	t.Helper()
	ctx := context.Background()
	userID = uuid.Must(uuid.NewV7())
	_, wrapped, err := b.identity.MasterKeys.NewDataKey(userID.String())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := b.identity.Passwords.Hash(ctx, profileTestPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Pool.Exec(ctx,
		`INSERT INTO users (id, email, password_hash, display_name, role, data_key) VALUES ($1, $2, $3, 'Test Member', 'member', $4)`,
		userID, "member-"+userID.String()+"@profile.test", hash, wrapped,
	); err != nil {
		t.Fatal(err)
	}
	return userID, b.signIn(t, userID, token.RoleMember)
}

// signIn starts another session of subject and returns its access token.
func (b *apiTestBundle) signIn(t testing.TB, subject uuid.UUID, role token.Role) string {
	t.Helper()
	sess, _, err := b.identity.Sessions.Create(context.Background(), subject.String(), string(role), "profile test", "192.0.2.20", "profile-test/1.0")
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	if role == token.RoleDevice {
		// A device token always says what the device is; a kiosk of some
		// branch is enough for tests that only need a device caller.
		tok, _, err = b.identity.Tokens.IssueDevice(subject.String(), sess.ID,
			token.DeviceClaims{BranchID: uuid.Must(uuid.NewV7()).String(), Kind: "kiosk"})
	} else {
		tok, _, err = b.identity.Tokens.Issue(subject.String(), sess.ID, role)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// profileClient is a ProfileService client sending accessToken ("" sends
// none) as a bearer token.
func (b *apiTestBundle) profileClient(accessToken string, opts ...connect.ClientOption) nxgv1connect.ProfileServiceClient {
	return b.profileClientOver(http.DefaultClient, accessToken, opts...)
}

func (b *apiTestBundle) profileClientOver(hc connect.HTTPClient, accessToken string, opts ...connect.ClientOption) nxgv1connect.ProfileServiceClient {
	bearer := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if accessToken != "" {
				req.Header().Set("Authorization", "Bearer "+accessToken)
			}
			return next(ctx, req)
		}
	})
	return nxgv1connect.NewProfileServiceClient(hc, b.server.URL, append(opts, connect.WithInterceptors(bearer))...)
}

// profileTestCode asserts err is a Connect error with code whose message
// contains mention.
func profileTestCode(t testing.TB, err error, code connect.Code, mention string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want %v mentioning %q", code, mention)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err.Error(), mention)
	}
}

func profileUpdate(p *nxgv1.Profile, paths ...string) *connect.Request[nxgv1.UpdateProfileRequest] {
	return connect.NewRequest(&nxgv1.UpdateProfileRequest{Profile: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
}

func getProfile(t testing.TB, c nxgv1connect.ProfileServiceClient) *nxgv1.Profile {
	t.Helper()
	res, err := c.GetProfile(context.Background(), connect.NewRequest(&nxgv1.GetProfileRequest{}))
	if err != nil {
		t.Fatalf("GetProfile: %v", err)
	}
	return res.Msg.GetProfile()
}

func updateProfile(t testing.TB, c nxgv1connect.ProfileServiceClient, p *nxgv1.Profile, paths ...string) *nxgv1.Profile {
	t.Helper()
	res, err := c.UpdateProfile(context.Background(), profileUpdate(p, paths...))
	if err != nil {
		t.Fatalf("UpdateProfile(%v): %v", paths, err)
	}
	return res.Msg.GetProfile()
}

// requireProfile compares profiles without updated_at.
func requireProfile(t testing.TB, got, want *nxgv1.Profile) {
	t.Helper()
	g, w := proto.CloneOf(got), proto.CloneOf(want)
	g.UpdatedAt, w.UpdatedAt = nil, nil
	if !proto.Equal(g, w) {
		t.Fatalf("profile =\n  %v\nwant\n  %v", g, w)
	}
}

// fullProfile sets every updatable field.
func fullProfile(branchID string) *nxgv1.Profile {
	return &nxgv1.Profile{
		DisplayName:   "Ada Lovelace",
		DateOfBirth:   "1990-04-12",
		Sex:           nxgv1.Sex_SEX_FEMALE,
		HeightCm:      171.5,
		FitnessGoal:   nxgv1.FitnessGoal_FITNESS_GOAL_BUILD_MUSCLE,
		ActivityLevel: nxgv1.ActivityLevel_ACTIVITY_LEVEL_VERY_ACTIVE,
		UnitSystem:    nxgv1.UnitSystem_UNIT_SYSTEM_IMPERIAL,
		Timezone:      "Europe/London",
		HomeBranchId:  branchID,
		Phone:         "+447700900123",
	}
}

// withIdentity is p with the output-only identity fields of the member.
func withIdentity(p *nxgv1.Profile, userID uuid.UUID) *nxgv1.Profile {
	p = proto.CloneOf(p)
	p.UserId = userID.String()
	p.Email = "member-" + userID.String() + "@profile.test"
	return p
}

// profileTestAudit is one audit row of a user.
type profileTestAudit struct {
	Action, Result, Details, TargetID string
}

func profileTestAuditRows(t testing.TB, b *apiTestBundle, userID uuid.UUID, action string) []profileTestAudit {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(),
		`SELECT action, result, details, coalesce(target_id, '') FROM audit_events WHERE actor_id = $1 AND action = $2 ORDER BY seq`,
		userID, action)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []profileTestAudit
	for rows.Next() {
		var r profileTestAudit
		if err := rows.Scan(&r.Action, &r.Result, &r.Details, &r.TargetID); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestProfileService(t *testing.T) {
	t.Parallel()

	t.Run("NewMemberHasEmptyProfile", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		got := getProfile(t, b.profileClient(tok))
		requireProfile(t, got, withIdentity(&nxgv1.Profile{DisplayName: "Test Member"}, userID))
	})

	t.Run("RoundTripEveryField", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		branch := b.insertBranch(t, "NXG Camden")
		want := withIdentity(fullProfile(branch), userID)

		before := time.Now().Add(-time.Second)
		updated := updateProfile(t, b.profileClient(tok), fullProfile(branch), profileMaskPaths...)
		requireProfile(t, updated, want)
		if at := updated.GetUpdatedAt().AsTime(); at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("updated_at = %v, want about now", at)
		}
		// Every protocol reads the same profile back.
		for name, c := range map[string]nxgv1connect.ProfileServiceClient{
			"ConnectJSON":  b.profileClient(tok, connect.WithProtoJSON()),
			"ConnectProto": b.profileClient(tok),
			"ConnectGET":   b.profileClient(tok, connect.WithProtoJSON(), connect.WithHTTPGet()),
			"GRPC":         b.profileClientOver(b.h2c, tok, connect.WithGRPC()),
			"GRPCWeb":      b.profileClient(tok, connect.WithGRPCWeb()),
		} {
			t.Run(name, func(t *testing.T) {
				got := getProfile(t, c)
				requireProfile(t, got, want)
				if !proto.Equal(got.GetUpdatedAt(), updated.GetUpdatedAt()) {
					t.Errorf("updated_at = %v, want %v", got.GetUpdatedAt(), updated.GetUpdatedAt())
				}
			})
		}
		// Each enum value survives the trip through its stored name.
		c := b.profileClient(tok)
		for sex := range sexNames {
			p := updateProfile(t, c, &nxgv1.Profile{DisplayName: "x", Sex: sex}, "sex")
			if p.GetSex() != sex || getProfile(t, c).GetSex() != sex {
				t.Errorf("sex %v did not round-trip", sex)
			}
		}
		for goal := range fitnessGoalNames {
			if getGoal := updateProfile(t, c, &nxgv1.Profile{DisplayName: "x", FitnessGoal: goal}, "fitness_goal").GetFitnessGoal(); getGoal != goal {
				t.Errorf("fitness_goal %v came back as %v", goal, getGoal)
			}
		}
		for level := range activityLevelNames {
			if got := updateProfile(t, c, &nxgv1.Profile{DisplayName: "x", ActivityLevel: level}, "activity_level").GetActivityLevel(); got != level {
				t.Errorf("activity_level %v came back as %v", level, got)
			}
		}
		for units := range unitSystemNames {
			if got := updateProfile(t, c, &nxgv1.Profile{DisplayName: "x", UnitSystem: units}, "unit_system").GetUnitSystem(); got != units {
				t.Errorf("unit_system %v came back as %v", units, got)
			}
		}
	})

	t.Run("PartialUpdateLeavesOthers", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		branch := b.insertBranch(t, "NXG Camden")
		updateProfile(t, c, fullProfile(branch), profileMaskPaths...)

		// Fields outside the mask are ignored, whatever they hold.
		got := updateProfile(t, c, &nxgv1.Profile{
			DisplayName: "Not Named In The Mask",
			HeightCm:    182,
			Phone:       "+15550001111",
			Timezone:    "America/New_York",
		}, "height_cm", "timezone")
		want := withIdentity(fullProfile(branch), userID)
		want.HeightCm = 182
		want.Timezone = "America/New_York"
		requireProfile(t, got, want)
		requireProfile(t, getProfile(t, c), want)

		// Repeating a path is the same as naming it once.
		got = updateProfile(t, c, &nxgv1.Profile{DisplayName: "Grace Hopper"}, "display_name", "display_name")
		want.DisplayName = "Grace Hopper"
		requireProfile(t, got, want)
		rows := profileTestAuditRows(t, b, userID, actionProfileUpdated)
		if last := rows[len(rows)-1]; last.Details != `{"fields":"display_name"}` {
			t.Errorf("audit details = %s", last.Details)
		}
	})

	t.Run("PartialUpdateWithoutDisplayName", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		_, tok := b.newMember(t)
		c := b.profileClient(tok)
		_, err := c.UpdateProfile(context.Background(), profileUpdate(&nxgv1.Profile{HeightCm: 180}, "height_cm"))
		// A partial update need not carry the display name: the contract
		// validates it only when it is set.
		if err != nil {
			t.Fatalf("UpdateProfile: %v", err)
		}
		if got := getProfile(t, c); got.GetHeightCm() != 180 || got.GetDisplayName() != "Test Member" {
			t.Fatalf("profile = %v", got)
		}
	})

	t.Run("ClearFields", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		branch := b.insertBranch(t, "NXG Camden")
		updateProfile(t, c, fullProfile(branch), profileMaskPaths...)

		// Every field but display_name named and left empty: all cleared.
		got := updateProfile(t, c, &nxgv1.Profile{DisplayName: "Ada Lovelace"}, profileMaskPaths[1:]...)
		want := withIdentity(&nxgv1.Profile{DisplayName: "Ada Lovelace"}, userID)
		requireProfile(t, got, want)
		requireProfile(t, getProfile(t, c), want)

		var nonNull int
		if err := b.db.Pool.QueryRow(context.Background(), `
			SELECT num_nonnulls(date_of_birth_enc, sex_enc, height_cm_enc, phone_enc, home_branch_id)
			       + (fitness_goal <> '')::int + (activity_level <> '')::int + (unit_system <> '')::int + (timezone <> '')::int
			FROM profiles WHERE user_id = $1`, userID).Scan(&nonNull); err != nil {
			t.Fatal(err)
		}
		if nonNull != 0 {
			t.Errorf("%d cleared columns still hold a value", nonNull)
		}
	})

	t.Run("DisplayNameCannotBeCleared", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		_, tok := b.newMember(t)
		c := b.profileClient(tok)
		for _, name := range []string{"", "   "} {
			_, err := c.UpdateProfile(context.Background(), profileUpdate(&nxgv1.Profile{DisplayName: name}, "display_name"))
			profileTestCode(t, err, connect.CodeInvalidArgument, "profile.display_name")
		}
		_, err := c.UpdateProfile(context.Background(), profileUpdate(&nxgv1.Profile{DisplayName: "Bad\nName"}, "display_name"))
		profileTestCode(t, err, connect.CodeInvalidArgument, "profile.display_name: must not contain control characters")
		// Surrounding spaces are trimmed.
		if got := updateProfile(t, c, &nxgv1.Profile{DisplayName: "  Ada  "}, "display_name"); got.GetDisplayName() != "Ada" {
			t.Errorf("display_name = %q, want Ada", got.GetDisplayName())
		}
	})

	t.Run("InvalidUpdates", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		branch := b.insertBranch(t, "NXG Camden")
		before := updateProfile(t, c, fullProfile(branch), profileMaskPaths...)
		auditsBefore := len(profileTestAuditRows(t, b, userID, actionProfileUpdated))

		withName := func(p *nxgv1.Profile) *nxgv1.Profile { p.DisplayName = "Ada Lovelace"; return p }
		tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
		fiveYearsAgo := time.Now().UTC().AddDate(-5, 0, 0).Format(time.DateOnly)
		for name, c2 := range map[string]struct {
			profile *nxgv1.Profile
			paths   []string
			mention string
		}{
			"UnknownPath":           {withName(&nxgv1.Profile{}), []string{"nickname"}, `update_mask: unknown field "nickname"`},
			"UnknownNestedPath":     {withName(&nxgv1.Profile{}), []string{"height_cm", "profile.phone"}, "update_mask"},
			"OutputOnlyEmail":       {withName(&nxgv1.Profile{Email: "x@y.z"}), []string{"email"}, `update_mask: "email" is output only`},
			"OutputOnlyUserID":      {withName(&nxgv1.Profile{}), []string{"user_id"}, "update_mask"},
			"OutputOnlyUpdatedAt":   {withName(&nxgv1.Profile{}), []string{"updated_at"}, "update_mask"},
			"EmptyMask":             {withName(&nxgv1.Profile{}), nil, "update_mask"},
			"DateOfBirthInFuture":   {withName(&nxgv1.Profile{DateOfBirth: tomorrow}), []string{"date_of_birth"}, "profile.date_of_birth: must not be in the future"},
			"DateOfBirthAge5":       {withName(&nxgv1.Profile{DateOfBirth: fiveYearsAgo}), []string{"date_of_birth"}, "profile.date_of_birth: members must be at least 13"},
			"DateOfBirthAge130":     {withName(&nxgv1.Profile{DateOfBirth: "1890-01-01"}), []string{"date_of_birth"}, "profile.date_of_birth"},
			"DateOfBirthNotADate":   {withName(&nxgv1.Profile{DateOfBirth: "2023-02-30"}), []string{"date_of_birth"}, "profile.date_of_birth: is not a calendar date"},
			"DateOfBirthPattern":    {withName(&nxgv1.Profile{DateOfBirth: "12/04/1990"}), []string{"date_of_birth"}, "profile.date_of_birth"},
			"TimezoneUnknown":       {withName(&nxgv1.Profile{Timezone: "Mars/Olympus_Mons"}), []string{"timezone"}, "profile.timezone"},
			"TimezoneLocal":         {withName(&nxgv1.Profile{Timezone: "Local"}), []string{"timezone"}, "profile.timezone"},
			"TimezonePath":          {withName(&nxgv1.Profile{Timezone: "../../etc/passwd"}), []string{"timezone"}, "profile.timezone"},
			"HomeBranchUnknown":     {withName(&nxgv1.Profile{HomeBranchId: uuid.NewString()}), []string{"home_branch_id"}, "profile.home_branch_id: no such branch"},
			"HomeBranchNotUUID":     {withName(&nxgv1.Profile{HomeBranchId: "camden"}), []string{"home_branch_id"}, "profile.home_branch_id"},
			"PhoneNotE164":          {withName(&nxgv1.Profile{Phone: "07700 900123"}), []string{"phone"}, "profile.phone"},
			"HeightOutOfRange":      {withName(&nxgv1.Profile{HeightCm: 20}), []string{"height_cm"}, "profile.height_cm"},
			"SexUndefined":          {withName(&nxgv1.Profile{Sex: 99}), []string{"sex"}, "profile.sex"},
			"FitnessGoalUndefined":  {withName(&nxgv1.Profile{FitnessGoal: 42}), []string{"fitness_goal"}, "profile.fitness_goal"},
			"ValidFieldsThenBadOne": {withName(&nxgv1.Profile{HeightCm: 190, HomeBranchId: uuid.NewString()}), []string{"height_cm", "home_branch_id"}, "profile.home_branch_id: no such branch"},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := c.UpdateProfile(context.Background(), profileUpdate(c2.profile, c2.paths...))
				profileTestCode(t, err, connect.CodeInvalidArgument, c2.mention)
			})
		}
		// Nothing changed, nothing was audited.
		after := getProfile(t, c)
		requireProfile(t, after, before)
		if !proto.Equal(after.GetUpdatedAt(), before.GetUpdatedAt()) {
			t.Errorf("updated_at moved from %v to %v", before.GetUpdatedAt(), after.GetUpdatedAt())
		}
		if n := len(profileTestAuditRows(t, b, userID, actionProfileUpdated)); n != auditsBefore {
			t.Errorf("%d profile.updated rows, want %d", n, auditsBefore)
		}
	})

	t.Run("AuditNamesFieldsNotValues", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		updateProfile(t, b.profileClient(tok), &nxgv1.Profile{
			DisplayName: "Ada", DateOfBirth: "1990-04-12", Phone: "+447700900123",
		}, "phone", "date_of_birth")
		rows := profileTestAuditRows(t, b, userID, actionProfileUpdated)
		if len(rows) != 1 {
			t.Fatalf("audit rows = %+v, want one", rows)
		}
		r := rows[0]
		if r.Result != "success" || r.TargetID != userID.String() || r.Details != `{"fields":"date_of_birth,phone"}` {
			t.Errorf("audit row = %+v", r)
		}
	})

	t.Run("ConcurrentUpdatesOfDifferentFieldsAllSurvive", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		branch := b.insertBranch(t, "NXG Camden")
		full := fullProfile(branch)
		// The member has no profile row yet: the first writers race to
		// create it, which locking the account row serialises.
		var wg sync.WaitGroup
		errs := make(chan error, len(profileMaskPaths))
		for _, path := range profileMaskPaths {
			wg.Go(func() {
				_, err := c.UpdateProfile(context.Background(), profileUpdate(full, path))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		requireProfile(t, getProfile(t, c), withIdentity(full, userID))
	})

	t.Run("EncryptedAtRest", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		updateProfile(t, c, &nxgv1.Profile{
			DisplayName: "Ada", DateOfBirth: "1990-04-12", Sex: nxgv1.Sex_SEX_PREFER_NOT_TO_SAY,
			HeightCm: 178.25, Phone: "+447700900123",
		}, "date_of_birth", "sex", "height_cm", "phone")
		if _, err := c.RecordBodyMetrics(ctx, connect.NewRequest(&nxgv1.RecordBodyMetricsRequest{
			MeasuredAt: timestamppb.New(time.Now().Add(-time.Hour)), WeightKg: ptr(81.5),
			BodyFatPercent: ptr(68.5), MuscleMassKg: ptr(63.25), RestingHeartRateBpm: ptr(61.5),
		})); err != nil {
			t.Fatal(err)
		}

		var dump string
		if err := b.db.Pool.QueryRow(ctx, `
			SELECT (SELECT string_agg(row_to_json(p)::text, E'\n') FROM profiles p WHERE user_id = $1)
			       || E'\n' ||
			       (SELECT string_agg(row_to_json(m)::text, E'\n') FROM body_metrics m WHERE user_id = $1)`,
			userID).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		// Every needle holds a character (or a number before a dot) that
		// hex ciphertext, UUIDs and timestamps cannot produce by chance.
		for _, plain := range []string{"1990-04-12", "+447700900123", "prefer_not_to_say", "178.25", "81.5", "68.5", "63.25", "61.5"} {
			if strings.Contains(dump, plain) {
				t.Errorf("plaintext %q appears in the stored rows:\n%s", plain, dump)
			}
		}
		var nulls int
		if err := b.db.Pool.QueryRow(ctx, `
			SELECT num_nulls(p.date_of_birth_enc, p.sex_enc, p.height_cm_enc, p.phone_enc,
			                 m.weight_kg_enc, m.body_fat_percent_enc, m.muscle_mass_kg_enc, m.resting_heart_rate_bpm_enc)
			FROM profiles p JOIN body_metrics m USING (user_id) WHERE user_id = $1`, userID).Scan(&nulls); err != nil {
			t.Fatal(err)
		}
		if nulls != 0 {
			t.Errorf("%d encrypted columns are NULL, want every value stored", nulls)
		}
		// And the API reads them back.
		got := getProfile(t, c)
		if got.GetDateOfBirth() != "1990-04-12" || got.GetPhone() != "+447700900123" || got.GetHeightCm() != 178.25 || got.GetSex() != nxgv1.Sex_SEX_PREFER_NOT_TO_SAY {
			t.Errorf("profile = %v", got)
		}
	})

	t.Run("MovedCiphertextDoesNotDecrypt", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		victimID, victimTok := b.newMember(t)
		attackerID, attackerTok := b.newMember(t)
		updateProfile(t, b.profileClient(victimTok), &nxgv1.Profile{DisplayName: "V", Phone: "+447700900001", DateOfBirth: "1985-01-01"}, "phone", "date_of_birth")
		updateProfile(t, b.profileClient(attackerTok), &nxgv1.Profile{DisplayName: "A", Phone: "+447700900999"}, "phone")

		// Through the package: the victim's key refuses the attacker's
		// ciphertext, and a ciphertext of another column of the victim.
		var victimKey, attackerPhone, victimDOB []byte
		if err := b.db.Pool.QueryRow(ctx, `SELECT data_key FROM users WHERE id = $1`, victimID).Scan(&victimKey); err != nil {
			t.Fatal(err)
		}
		if err := b.db.Pool.QueryRow(ctx, `SELECT phone_enc FROM profiles WHERE user_id = $1`, attackerID).Scan(&attackerPhone); err != nil {
			t.Fatal(err)
		}
		if err := b.db.Pool.QueryRow(ctx, `SELECT date_of_birth_enc FROM profiles WHERE user_id = $1`, victimID).Scan(&victimDOB); err != nil {
			t.Fatal(err)
		}
		key, err := b.identity.MasterKeys.Unwrap(victimID.String(), victimKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := key.OpenString(encColPhone, attackerPhone); !errors.Is(err, fieldcrypt.ErrDecrypt) {
			t.Errorf("victim key opened the attacker's phone: err = %v", err)
		}
		if _, err := key.OpenString(encColPhone, victimDOB); !errors.Is(err, fieldcrypt.ErrDecrypt) {
			t.Errorf("victim key opened date_of_birth as phone: err = %v", err)
		}

		// Through the API: a profile holding moved ciphertext is an
		// internal error, never someone else's data.
		if _, err := b.db.Pool.Exec(ctx,
			`UPDATE profiles SET phone_enc = (SELECT phone_enc FROM profiles WHERE user_id = $2) WHERE user_id = $1`,
			victimID, attackerID); err != nil {
			t.Fatal(err)
		}
		_, err = b.profileClient(victimTok).GetProfile(ctx, connect.NewRequest(&nxgv1.GetProfileRequest{}))
		profileTestCode(t, err, connect.CodeInternal, "internal error")
		if strings.Contains(err.Error(), "7700900") {
			t.Errorf("error leaks a phone number: %v", err)
		}
		if !strings.Contains(b.logs.String(), "cannot decrypt") {
			t.Errorf("the fault is not logged:\n%s", b.logs.String())
		}
	})

	t.Run("BodyMetricsValidation", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		hourAgo := timestamppb.New(time.Now().Add(-time.Hour))
		for name, tc := range map[string]struct {
			req     *nxgv1.RecordBodyMetricsRequest
			mention string
		}{
			"NoValues":            {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo}, "at least one of weight_kg"},
			"NoMeasuredAt":        {&nxgv1.RecordBodyMetricsRequest{WeightKg: ptr(80.0)}, "measured_at"},
			"FutureMeasuredAt":    {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: timestamppb.New(time.Now().Add(time.Hour)), WeightKg: ptr(80.0)}, "measured_at"},
			"WeightTooLow":        {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo, WeightKg: ptr(10.0)}, "weight_kg"},
			"BodyFatTooHigh":      {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo, BodyFatPercent: ptr(90.0)}, "body_fat_percent"},
			"MuscleMassTooHigh":   {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo, MuscleMassKg: ptr(250.0)}, "muscle_mass_kg"},
			"HeartRateTooHigh":    {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo, RestingHeartRateBpm: ptr(300.0)}, "resting_heart_rate_bpm"},
			"OneBadAmongGoodOnes": {&nxgv1.RecordBodyMetricsRequest{MeasuredAt: hourAgo, WeightKg: ptr(80.0), RestingHeartRateBpm: ptr(5.0)}, "resting_heart_rate_bpm"},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := c.RecordBodyMetrics(context.Background(), connect.NewRequest(tc.req))
				profileTestCode(t, err, connect.CodeInvalidArgument, tc.mention)
			})
		}
		var n int
		if err := b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM body_metrics WHERE user_id = $1`, userID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows stored from invalid requests", n)
		}
		// Within the allowed clock skew is fine; absent values stay absent.
		res, err := c.RecordBodyMetrics(context.Background(), connect.NewRequest(&nxgv1.RecordBodyMetricsRequest{
			MeasuredAt: timestamppb.New(time.Now().Add(2 * time.Minute)), RestingHeartRateBpm: ptr(61.0),
		}))
		if err != nil {
			t.Fatal(err)
		}
		m := res.Msg.GetMetrics()
		if m.RestingHeartRateBpm == nil || *m.RestingHeartRateBpm != 61 || m.WeightKg != nil || m.BodyFatPercent != nil || m.MuscleMassKg != nil {
			t.Errorf("metrics = %v", m)
		}
		if _, err := uuid.Parse(m.GetId()); err != nil {
			t.Errorf("id = %q: %v", m.GetId(), err)
		}
	})

	t.Run("BodyMetricsListNewestFirstAcrossPages", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		_, tok := b.newMember(t)
		c := b.profileClient(tok)
		_, otherTok := b.newMember(t)

		base := time.Now().Add(-10 * 24 * time.Hour).UTC().Truncate(time.Second)
		record := func(c nxgv1connect.ProfileServiceClient, at time.Time, weight float64) *nxgv1.BodyMetrics {
			t.Helper()
			res, err := c.RecordBodyMetrics(ctx, connect.NewRequest(&nxgv1.RecordBodyMetricsRequest{MeasuredAt: timestamppb.New(at), WeightKg: ptr(weight)}))
			if err != nil {
				t.Fatal(err)
			}
			return res.Msg.GetMetrics()
		}
		// Eight measurements on seven days: two share a time, so the id
		// breaks the tie. Recorded out of order.
		var all []*nxgv1.BodyMetrics
		for _, day := range []int{3, 1, 6, 2, 5, 4, 7, 4} {
			all = append(all, record(c, base.AddDate(0, 0, day), 70+float64(day)+0.5))
		}
		record(b.profileClient(otherTok), base.AddDate(0, 0, 5), 99) // someone else's
		// Newest first by (measured_at, id).
		want := make([]*nxgv1.BodyMetrics, len(all))
		copy(want, all)
		sortMetricsNewestFirst(want)

		var got []*nxgv1.BodyMetrics
		var pages int
		req := &nxgv1.ListBodyMetricsRequest{PageSize: 3}
		for {
			res, err := c.ListBodyMetrics(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			pages++
			got = append(got, res.Msg.GetMetrics()...)
			if res.Msg.GetNextPageToken() == "" {
				break
			}
			if pages > 5 {
				t.Fatal("too many pages")
			}
			req.PageToken = res.Msg.GetNextPageToken()
		}
		if pages != 3 {
			t.Errorf("pages = %d, want 3", pages)
		}
		requireMetrics(t, got, want)

		// [since, until): day 2 included, day 5 excluded.
		res, err := c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{
			Since: timestamppb.New(base.AddDate(0, 0, 2)), Until: timestamppb.New(base.AddDate(0, 0, 5)),
		}))
		if err != nil {
			t.Fatal(err)
		}
		var inRange []*nxgv1.BodyMetrics
		for _, m := range want {
			if at := m.GetMeasuredAt().AsTime(); !at.Before(base.AddDate(0, 0, 2)) && at.Before(base.AddDate(0, 0, 5)) {
				inRange = append(inRange, m)
			}
		}
		if len(inRange) != 4 {
			t.Fatalf("test data: %d in range, want 4", len(inRange))
		}
		requireMetrics(t, res.Msg.GetMetrics(), inRange)
		if res.Msg.GetNextPageToken() != "" {
			t.Errorf("next_page_token on the only page")
		}

		// until defaults to now: a measurement a minute ahead (within the
		// allowed skew) is not listed yet.
		record(c, time.Now().Add(time.Minute), 80)
		res, err = c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		requireMetrics(t, res.Msg.GetMetrics(), want)

		// Bad requests.
		_, err = c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{PageToken: "garbage"}))
		profileTestCode(t, err, connect.CodeInvalidArgument, "page_token")
		_, err = c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{
			Since: timestamppb.New(base.AddDate(0, 0, 5)), Until: timestamppb.New(base.AddDate(0, 0, 2)),
		}))
		profileTestCode(t, err, connect.CodeInvalidArgument, "until: must be after since")
		_, err = c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{PageSize: 201}))
		profileTestCode(t, err, connect.CodeInvalidArgument, "page_size")
	})

	t.Run("PrivacySettings", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)

		res, err := c.GetPrivacySettings(ctx, connect.NewRequest(&nxgv1.GetPrivacySettingsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if s := res.Msg.GetSettings(); s.GetAppearOnLeaderboards() || s.GetShareAnalytics() || s.GetMarketingNotifications() {
			t.Errorf("default settings = %v, want everything off", s)
		}

		update := func(s *nxgv1.PrivacySettings, paths ...string) (*nxgv1.PrivacySettings, error) {
			res, err := c.UpdatePrivacySettings(ctx, connect.NewRequest(&nxgv1.UpdatePrivacySettingsRequest{
				Settings: s, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths},
			}))
			if err != nil {
				return nil, err
			}
			return res.Msg.GetSettings(), nil
		}
		// Fields outside the mask are ignored.
		got, err := update(&nxgv1.PrivacySettings{ShareAnalytics: true, MarketingNotifications: true}, "share_analytics")
		if err != nil {
			t.Fatal(err)
		}
		if !got.GetShareAnalytics() || got.GetMarketingNotifications() || got.GetAppearOnLeaderboards() || got.GetUpdatedAt() == nil {
			t.Errorf("after share_analytics: %v", got)
		}
		got, err = update(&nxgv1.PrivacySettings{AppearOnLeaderboards: true}, "appear_on_leaderboards", "marketing_notifications")
		if err != nil {
			t.Fatal(err)
		}
		if !got.GetShareAnalytics() || got.GetMarketingNotifications() || !got.GetAppearOnLeaderboards() {
			t.Errorf("after appear_on_leaderboards: %v", got)
		}
		res, err = c.GetPrivacySettings(ctx, connect.NewRequest(&nxgv1.GetPrivacySettingsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(res.Msg.GetSettings(), got) {
			t.Errorf("read back %v, want %v", res.Msg.GetSettings(), got)
		}

		_, err = update(&nxgv1.PrivacySettings{}, "share_analytics", "leaderboards")
		profileTestCode(t, err, connect.CodeInvalidArgument, `update_mask: unknown field "leaderboards"`)
		_, err = update(&nxgv1.PrivacySettings{}, "updated_at")
		profileTestCode(t, err, connect.CodeInvalidArgument, "update_mask")
		_, err = update(&nxgv1.PrivacySettings{})
		profileTestCode(t, err, connect.CodeInvalidArgument, "update_mask")

		rows := profileTestAuditRows(t, b, userID, actionPrivacyUpdated)
		if len(rows) != 2 || rows[0].Details != `{"fields":"share_analytics"}` ||
			rows[1].Details != `{"fields":"appear_on_leaderboards,marketing_notifications"}` {
			t.Errorf("audit rows = %+v", rows)
		}
	})

	t.Run("ExportMyDataIsIdempotent", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		export := func() string {
			t.Helper()
			res, err := c.ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			return res.Msg.GetExportId()
		}
		first, second := export(), export()
		if first != second {
			t.Fatalf("export ids %s and %s, want one export", first, second)
		}
		jobArgs := jobsOfKind(t, b.db, "data_export")
		if len(jobArgs) != 1 {
			t.Fatalf("%d data_export jobs, want 1", len(jobArgs))
		}
		var args struct {
			ExportID string `json:"export_id"`
			UserID   string `json:"user_id"`
		}
		if err := json.Unmarshal(jobArgs[0], &args); err != nil {
			t.Fatal(err)
		}
		if args.ExportID != first || args.UserID != userID.String() {
			t.Errorf("job args = %s", jobArgs[0])
		}
		if rows := profileTestAuditRows(t, b, userID, actionGDPRExportRequested); len(rows) != 2 ||
			rows[0].Details != fmt.Sprintf(`{"export_id":%q,"new":"true"}`, first) ||
			rows[1].Details != fmt.Sprintf(`{"export_id":%q,"new":"false"}`, first) {
			t.Errorf("audit rows = %+v", rows)
		}
		res, err := c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: first}))
		if err != nil {
			t.Fatal(err)
		}
		if m := res.Msg; m.GetStatus() != nxgv1.ExportStatus_EXPORT_STATUS_PENDING || m.GetDownloadUrl() != "" || m.GetCreatedAt() == nil {
			t.Errorf("pending export = %v", m)
		}

		// Once that export is done, asking again starts a new one.
		if _, err := b.db.Pool.Exec(ctx, `UPDATE data_exports SET status = 'failed', failure_reason = 'x' WHERE id = $1`, first); err != nil {
			t.Fatal(err)
		}
		if third := export(); third == first {
			t.Errorf("a finished export was returned again")
		}
		if n := len(jobsOfKind(t, b.db, "data_export")); n != 2 {
			t.Errorf("%d data_export jobs, want 2", n)
		}
	})

	t.Run("GetDataExportOfAnotherUserIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		_, ownerTok := b.newMember(t)
		_, otherTok := b.newMember(t)
		res, err := b.profileClient(ownerTok).ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		other := b.profileClient(otherTok)
		_, err = other.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: res.Msg.GetExportId()}))
		profileTestCode(t, err, connect.CodeNotFound, "data export")
		_, err = other.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: uuid.NewString()}))
		profileTestCode(t, err, connect.CodeNotFound, "data export")
		_, err = other.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: "nope"}))
		profileTestCode(t, err, connect.CodeInvalidArgument, "export_id")
	})

	t.Run("ReadyExportDownloads", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		res, err := c.ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		exportID := res.Msg.GetExportId()
		archive := `{"profile":{"display_name":"Test Member"}}`
		key := "users/" + userID.String() + "/exports/" + exportID + ".json"
		if err := b.identity.Storage.Put(ctx, key, "application/json", strings.NewReader(archive), int64(len(archive))); err != nil {
			t.Fatal(err)
		}
		expires := time.Now().Add(7 * 24 * time.Hour).UTC().Truncate(time.Microsecond)
		if _, err := b.db.Pool.Exec(ctx,
			`UPDATE data_exports SET status = 'ready', object_key = $2, completed_at = now(), expires_at = $3 WHERE id = $1`,
			exportID, key, expires); err != nil {
			t.Fatal(err)
		}

		got, err := c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: exportID}))
		if err != nil {
			t.Fatal(err)
		}
		m := got.Msg
		if m.GetStatus() != nxgv1.ExportStatus_EXPORT_STATUS_READY || m.GetExportId() != exportID || !m.GetExpiresAt().AsTime().Equal(expires) {
			t.Fatalf("ready export = %v", m)
		}
		dl, err := http.Get(m.GetDownloadUrl())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(dl.Body)
		_ = dl.Body.Close()
		if dl.StatusCode != http.StatusOK || string(body) != archive {
			t.Fatalf("download: %d %q", dl.StatusCode, body)
		}

		// Past its expiry (before the retention job runs) it is expired,
		// with no URL.
		if _, err := b.db.Pool.Exec(ctx, `UPDATE data_exports SET expires_at = now() - interval '1 minute' WHERE id = $1`, exportID); err != nil {
			t.Fatal(err)
		}
		got, err = c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: exportID}))
		if err != nil {
			t.Fatal(err)
		}
		if got.Msg.GetStatus() != nxgv1.ExportStatus_EXPORT_STATUS_EXPIRED || got.Msg.GetDownloadUrl() != "" {
			t.Errorf("export past expiry = %v", got.Msg)
		}

		// A failed export says why.
		if _, err := b.db.Pool.Exec(ctx,
			`UPDATE data_exports SET status = 'failed', object_key = NULL, expires_at = NULL, failure_reason = 'storage unavailable' WHERE id = $1`,
			exportID); err != nil {
			t.Fatal(err)
		}
		got, err = c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: exportID}))
		if err != nil {
			t.Fatal(err)
		}
		if got.Msg.GetStatus() != nxgv1.ExportStatus_EXPORT_STATUS_FAILED || got.Msg.GetFailureReason() != "storage unavailable" || got.Msg.GetDownloadUrl() != "" {
			t.Errorf("failed export = %v", got.Msg)
		}
	})

	t.Run("ReadyExportOutsideUserPrefixIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		_, tok := b.newMember(t)
		c := b.profileClient(tok)
		res, err := c.ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.db.Pool.Exec(ctx,
			`UPDATE data_exports SET status = 'ready', object_key = 'users/someone-else/exports/x.json', expires_at = now() + interval '1 day' WHERE id = $1`,
			res.Msg.GetExportId()); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: res.Msg.GetExportId()}))
		profileTestCode(t, err, connect.CodeInternal, "internal error")
	})

	t.Run("DeleteAccountWrongPassword", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		c := b.profileClient(tok)
		_, err := c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: "not the password"}))
		profileTestCode(t, err, connect.CodePermissionDenied, "password: is incorrect")

		var deleted bool
		if err := b.db.Pool.QueryRow(ctx, `SELECT deleted_at IS NOT NULL FROM users WHERE id = $1`, userID).Scan(&deleted); err != nil {
			t.Fatal(err)
		}
		if deleted {
			t.Error("account closed after a wrong password")
		}
		if n := len(jobsOfKind(t, b.db, "account_erasure")); n != 0 {
			t.Errorf("%d account_erasure jobs, want 0", n)
		}
		getProfile(t, c) // still signed in
		rows := profileTestAuditRows(t, b, userID, actionGDPRAccountDeleted)
		if len(rows) != 1 || rows[0].Result != "denied" {
			t.Errorf("audit rows = %+v, want one denied attempt", rows)
		}
	})

	t.Run("DeleteAccountPasswordGuessesAreLimited", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		_, tok := b.newMember(t)
		c := b.profileClient(tok)
		// The sign-in budget is 5 failures per account per 15 minutes; the
		// sixth guess is not even checked, and neither is the right password.
		for i := range 5 {
			_, err := c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: fmt.Sprintf("guess %d", i)}))
			profileTestCode(t, err, connect.CodePermissionDenied, "password")
		}
		_, err := c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: profileTestPassword}))
		profileTestCode(t, err, connect.CodeResourceExhausted, "too many")
		getProfile(t, c)
	})

	t.Run("DeleteAccount", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		otherDevice := b.signIn(t, userID, token.RoleMember)
		bystanderID, bystanderTok := b.newMember(t)
		c := b.profileClient(tok)
		if _, err := c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: profileTestPassword})); err != nil {
			t.Fatal(err)
		}

		// Every session of the user ended at once.
		for name, tk := range map[string]string{"SameToken": tok, "OtherSession": otherDevice} {
			_, err := b.profileClient(tk).GetProfile(ctx, connect.NewRequest(&nxgv1.GetProfileRequest{}))
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("%s: GetProfile after deletion: %v, want unauthenticated", name, err)
			}
		}
		var deleted bool
		if err := b.db.Pool.QueryRow(ctx, `SELECT deleted_at IS NOT NULL FROM users WHERE id = $1`, userID).Scan(&deleted); err != nil {
			t.Fatal(err)
		}
		if !deleted {
			t.Error("users.deleted_at not set")
		}
		jobArgs := jobsOfKind(t, b.db, "account_erasure")
		if len(jobArgs) != 1 {
			t.Fatalf("%d account_erasure jobs, want 1", len(jobArgs))
		}
		var args struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(jobArgs[0], &args); err != nil || args.UserID != userID.String() {
			t.Errorf("job args = %s (%v)", jobArgs[0], err)
		}
		rows := profileTestAuditRows(t, b, userID, actionGDPRAccountDeleted)
		if len(rows) != 1 || rows[0].Result != "success" || rows[0].TargetID != userID.String() {
			t.Errorf("audit rows = %+v", rows)
		}
		// Nobody else was touched.
		if p := getProfile(t, b.profileClient(bystanderTok)); p.GetUserId() != bystanderID.String() {
			t.Errorf("bystander profile = %v", p)
		}
	})

	t.Run("ClosedAccountWithLiveSessionIsSignedOut", func(t *testing.T) {
		t.Parallel()
		// Should revocation fail after DeleteAccount commits, the session
		// lives on in Redis until the erasure job ends it; the service
		// must refuse it meanwhile.
		b := setupAPI(t)
		ctx := context.Background()
		userID, tok := b.newMember(t)
		if _, err := b.db.Pool.Exec(ctx, `UPDATE users SET deleted_at = now() WHERE id = $1`, userID); err != nil {
			t.Fatal(err)
		}
		c := b.profileClient(tok)
		_, err := c.GetProfile(ctx, connect.NewRequest(&nxgv1.GetProfileRequest{}))
		profileTestCode(t, err, connect.CodeUnauthenticated, "closed")
		_, err = c.UpdateProfile(ctx, profileUpdate(&nxgv1.Profile{DisplayName: "Zombie"}, "display_name"))
		profileTestCode(t, err, connect.CodeUnauthenticated, "closed")
		_, err = c.ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
		profileTestCode(t, err, connect.CodeUnauthenticated, "closed")
		_, err = c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: profileTestPassword}))
		profileTestCode(t, err, connect.CodeUnauthenticated, "closed")
	})

	t.Run("DeviceTokenHasNoProfile", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		c := b.profileClient(b.signIn(t, uuid.Must(uuid.NewV7()), token.RoleDevice))
		_, err := c.GetProfile(context.Background(), connect.NewRequest(&nxgv1.GetProfileRequest{}))
		profileTestCode(t, err, connect.CodePermissionDenied, "devices")
	})

	t.Run("Unauthenticated", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		ctx := context.Background()
		for name, c := range map[string]nxgv1connect.ProfileServiceClient{
			"NoToken":      b.profileClient(""),
			"GarbageToken": b.profileClient("not-a-jwt"),
		} {
			t.Run(name, func(t *testing.T) {
				calls := map[string]func() error{
					"GetProfile": func() error {
						_, err := c.GetProfile(ctx, connect.NewRequest(&nxgv1.GetProfileRequest{}))
						return err
					},
					"UpdateProfile": func() error {
						_, err := c.UpdateProfile(ctx, profileUpdate(&nxgv1.Profile{DisplayName: "x"}, "display_name"))
						return err
					},
					"RecordBodyMetrics": func() error {
						_, err := c.RecordBodyMetrics(ctx, connect.NewRequest(&nxgv1.RecordBodyMetricsRequest{MeasuredAt: timestamppb.Now(), WeightKg: ptr(80.0)}))
						return err
					},
					"ListBodyMetrics": func() error {
						_, err := c.ListBodyMetrics(ctx, connect.NewRequest(&nxgv1.ListBodyMetricsRequest{}))
						return err
					},
					"GetPrivacySettings": func() error {
						_, err := c.GetPrivacySettings(ctx, connect.NewRequest(&nxgv1.GetPrivacySettingsRequest{}))
						return err
					},
					"UpdatePrivacySettings": func() error {
						_, err := c.UpdatePrivacySettings(ctx, connect.NewRequest(&nxgv1.UpdatePrivacySettingsRequest{
							Settings: &nxgv1.PrivacySettings{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"share_analytics"}},
						}))
						return err
					},
					"ExportMyData": func() error {
						_, err := c.ExportMyData(ctx, connect.NewRequest(&nxgv1.ExportMyDataRequest{}))
						return err
					},
					"GetDataExport": func() error {
						_, err := c.GetDataExport(ctx, connect.NewRequest(&nxgv1.GetDataExportRequest{ExportId: uuid.NewString()}))
						return err
					},
					"DeleteAccount": func() error {
						_, err := c.DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: "x"}))
						return err
					},
				}
				for rpc, call := range calls {
					if err := call(); connect.CodeOf(err) != connect.CodeUnauthenticated {
						t.Errorf("%s: %v, want unauthenticated", rpc, err)
					}
				}
			})
		}
	})
}

func sortMetricsNewestFirst(ms []*nxgv1.BodyMetrics) {
	less := func(a, b *nxgv1.BodyMetrics) bool { // a newer than b
		at, bt := a.GetMeasuredAt().AsTime(), b.GetMeasuredAt().AsTime()
		if !at.Equal(bt) {
			return at.After(bt)
		}
		return a.GetId() > b.GetId() // UUIDv7 text orders like the uuid
	}
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && less(ms[j], ms[j-1]); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

func requireMetrics(t testing.TB, got, want []*nxgv1.BodyMetrics) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d measurements, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("measurement %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestCheckDateOfBirth(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 23, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		dob string
		ok  bool
	}{
		{"2012-03-01", true},  // 13 today
		{"2012-03-02", false}, // 13 tomorrow
		{"2012-02-29", true},  // leap day: 13 on 1 March
		{"1904-03-02", true},  // 120, 121 tomorrow
		{"1904-03-01", false}, // 121 today
		{"2025-03-01", false}, // born today
		{"2025-03-02", false}, // future
		{"2023-02-29", false}, // no such day
		{"1990-13-01", false},
		{"1990-4-12", false},
	} {
		err := checkDateOfBirth(c.dob, now)
		if (err == nil) != c.ok {
			t.Errorf("checkDateOfBirth(%q) = %v, want ok=%v", c.dob, err, c.ok)
		}
		if err != nil {
			if ae, ok := apperr.As(err); !ok || ae.Field != "profile.date_of_birth" || ae.Code != apperr.CodeInvalidArgument {
				t.Errorf("checkDateOfBirth(%q) error = %#v", c.dob, err)
			}
		}
	}
	// A time zone ahead of UTC does not move the day.
	if err := checkDateOfBirth("2012-03-02", time.Date(2025, 3, 2, 1, 0, 0, 0, time.FixedZone("+14", 14*3600))); err == nil {
		t.Error("checkDateOfBirth used the local day, not UTC")
	}
}

func TestMaskPaths(t *testing.T) {
	t.Parallel()
	got, err := maskPaths([]string{"phone", "display_name", "phone"}, profileMaskPaths, profileOutputOnly)
	if err != nil || strings.Join(got, ",") != "display_name,phone" {
		t.Errorf("maskPaths = %v, %v", got, err)
	}
	long := strings.Repeat("x", 1000)
	_, err = maskPaths([]string{long}, profileMaskPaths, profileOutputOnly)
	if err == nil || strings.Contains(err.Error(), long) {
		t.Errorf("unknown long path error = %v; want it refused without echoing 1000 bytes", err)
	}
}
