package jobs_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// exportArchive is the part of the archive the tests read.
type exportArchive struct {
	Format   string    `json:"format"`
	ExportID uuid.UUID `json:"export_id"`
	Account  struct {
		ID          uuid.UUID `json:"id"`
		Email       string    `json:"email"`
		DisplayName string    `json:"display_name"`
		Role        string    `json:"role"`
	} `json:"account"`
	Profile struct {
		DateOfBirth  string  `json:"date_of_birth"`
		Sex          string  `json:"sex"`
		HeightCm     float64 `json:"height_cm"`
		Phone        string  `json:"phone"`
		FitnessGoal  string  `json:"fitness_goal"`
		HomeBranchID string  `json:"home_branch_id"`
	} `json:"profile"`
	BodyMetrics []struct {
		WeightKg            float64  `json:"weight_kg"`
		BodyFatPercent      float64  `json:"body_fat_percent"`
		MuscleMassKg        *float64 `json:"muscle_mass_kg"`
		RestingHeartRateBpm float64  `json:"resting_heart_rate_bpm"`
	} `json:"body_metrics"`
	PrivacySettings struct {
		AppearOnLeaderboards   bool `json:"appear_on_leaderboards"`
		ShareAnalytics         bool `json:"share_analytics"`
		MarketingNotifications bool `json:"marketing_notifications"`
	} `json:"privacy_settings"`
	StaffBranches []struct {
		Name string `json:"name"`
	} `json:"staff_branches"`
	Memberships []struct {
		ID         uuid.UUID  `json:"id"`
		BranchID   *string    `json:"branch_id"`
		ValidFrom  time.Time  `json:"valid_from"`
		ValidUntil *time.Time `json:"valid_until"`
		EndedAt    *time.Time `json:"ended_at"`
	} `json:"memberships"`
	Sessions []struct {
		DeviceName string    `json:"device_name"`
		IP         string    `json:"ip"`
		CreatedAt  time.Time `json:"created_at"`
		LastSeenAt time.Time `json:"last_seen_at"`
	} `json:"sessions"`
	AuditEvents []struct {
		Action    string            `json:"action"`
		Actor     string            `json:"actor"`
		TargetID  string            `json:"target_id"`
		IP        string            `json:"ip"`
		RequestID string            `json:"request_id"`
		Details   map[string]string `json:"details"`
	} `json:"audit_events"`
	DataExports []struct {
		ID     uuid.UUID `json:"id"`
		Status string    `json:"status"`
	} `json:"data_exports"`
	GymSessions []struct {
		ID        uuid.UUID  `json:"id"`
		BranchID  uuid.UUID  `json:"branch_id"`
		Method    string     `json:"method"`
		EndedAt   *time.Time `json:"ended_at"`
		EndReason string     `json:"end_reason"`
	} `json:"gym_sessions"`
	MachineLinks []struct {
		GymSessionID uuid.UUID `json:"gym_session_id"`
		MachineName  string    `json:"machine_name"`
		BranchID     uuid.UUID `json:"branch_id"`
		EndReason    string    `json:"end_reason"`
	} `json:"machine_links"`
	MachineSets []struct {
		GymSessionID    uuid.UUID `json:"gym_session_id"`
		ClientSetID     string    `json:"client_set_id"`
		DurationSeconds int32     `json:"duration_seconds"`
		DistanceM       float64   `json:"distance_m"`
		Calories        int32     `json:"calories"`
	} `json:"machine_sets"`
}

func (b *gdprBundle) exportWorker(now time.Time) *jobs.DataExportWorker {
	return &jobs.DataExportWorker{
		Pool: b.tdb.Pool, Storage: b.store, Sessions: b.sessions, MasterKeys: b.keys, Audit: b.log,
		Now: func() time.Time { return now },
	}
}

// workExport runs the export job through River's test worker and returns
// the result and the worker's error.
func workExport(t *testing.T, b *gdprBundle, w *jobs.DataExportWorker, args jobs.DataExportArgs, opts *river.InsertOpts) (*rivertest.WorkResult, error) {
	t.Helper()
	ctx := context.Background()
	worker := rivertest.NewWorker(t, riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)}, w)
	tx, err := b.tdb.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	return worker.Work(ctx, t, tx, args, opts)
}

func exportRow(t *testing.T, b *gdprBundle, id uuid.UUID) dbsqlc.DataExport {
	t.Helper()
	e, err := dbsqlc.New().DataExportGetByID(context.Background(), b.tdb.Pool, id)
	if err != nil {
		t.Fatalf("read export %s: %v", id, err)
	}
	return e
}

// download fetches an object the way the app does: a presigned URL and a
// plain GET.
func download(t *testing.T, b *gdprBundle, key string) []byte {
	t.Helper()
	url, err := b.store.PresignGet(context.Background(), key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, %v", key, resp.StatusCode, err)
	}
	return body
}

func TestDataExport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)

	t.Run("IncludesGymFloor", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u, other := b.seedUser(t, "gym"), b.seedUser(t, "elsewhere")
		if _, err := workExport(t, b, b.exportWorker(now), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil); err != nil {
			t.Fatalf("Work: %v", err)
		}
		raw := download(t, b, jobs.ExportObjectKey(u.ID, u.PendingExport))
		var a exportArchive
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatal(err)
		}
		// seedUser gives each user one visit, ended by staff, holding a
		// rower that recorded one set.
		if len(a.GymSessions) != 1 || a.GymSessions[0].Method != "qr" || a.GymSessions[0].EndReason != "staff" ||
			a.GymSessions[0].EndedAt == nil || a.GymSessions[0].BranchID == uuid.Nil {
			t.Fatalf("gym sessions = %+v, want the one visit ended by staff", a.GymSessions)
		}
		visit := a.GymSessions[0].ID
		if len(a.MachineLinks) != 1 || a.MachineLinks[0].GymSessionID != visit || a.MachineLinks[0].MachineName != "Rower 1" ||
			a.MachineLinks[0].EndReason != "session_ended" || a.MachineLinks[0].BranchID != a.GymSessions[0].BranchID {
			t.Fatalf("machine links = %+v, want the rower of visit %s", a.MachineLinks, visit)
		}
		if len(a.MachineSets) != 1 || a.MachineSets[0].GymSessionID != visit || a.MachineSets[0].ClientSetID != "set-1" ||
			a.MachineSets[0].DurationSeconds != 600 || a.MachineSets[0].DistanceM != 2400 || a.MachineSets[0].Calories != 150 {
			t.Fatalf("machine sets = %+v, want the rower's set", a.MachineSets)
		}
		// Who ended the visit is staff's data, and the other user's
		// visits are theirs.
		if strings.Contains(string(raw), "ended_by") || strings.Contains(string(raw), other.ID.String()) {
			t.Fatal("archive names who ended the visit or holds the other user's data")
		}
	})

	t.Run("BuildsArchive", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u, other := b.seedUser(t, "ada"), b.seedUser(t, "bob")

		res, err := workExport(t, b, b.exportWorker(now), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil)
		if err != nil {
			t.Fatalf("Work: %v", err)
		}
		if res.EventKind != river.EventKindJobCompleted || res.Job.Queue != jobs.QueueDefault {
			t.Fatalf("export ended %s on %s (errors %v), want completed on default", res.EventKind, res.Job.Queue, res.Job.Errors)
		}
		row := exportRow(t, b, u.PendingExport)
		key := jobs.ExportObjectKey(u.ID, u.PendingExport)
		if row.Status != "ready" || row.ObjectKey.String != key || !row.ExpiresAt.Time.Equal(now.Add(7*24*time.Hour)) || !row.CompletedAt.Valid {
			t.Fatalf("export row = %+v, want ready at %s expiring %s", row, key, now.Add(7*24*time.Hour))
		}
		if want := "users/" + u.ID.String() + "/exports/" + u.PendingExport.String() + ".json"; key != want {
			t.Errorf("ExportObjectKey = %s, want %s", key, want)
		}
		info, err := b.store.Head(ctx, key)
		if err != nil || info.ServerSideEncryption != "AES256" || info.ContentType != "application/json" {
			t.Fatalf("Head = %+v, %v; want JSON with SSE AES256", info, err)
		}

		raw := download(t, b, key)
		var a exportArchive
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatalf("archive is not JSON: %v\n%s", err, raw)
		}
		if a.Format != jobs.ExportFormat || a.ExportID != u.PendingExport || a.Account.ID != u.ID || a.Account.Email != u.Email ||
			a.Account.DisplayName != "Name ada" || a.Account.Role != "staff" {
			t.Errorf("archive header/account = %+v %+v", a.Format, a.Account)
		}
		// Decrypted personal fields.
		if a.Profile.DateOfBirth != seedDOB || a.Profile.Sex != seedSex || a.Profile.HeightCm != seedHeight ||
			a.Profile.Phone != seedPhone || a.Profile.FitnessGoal != "build_muscle" || a.Profile.HomeBranchID == "" {
			t.Errorf("profile = %+v, want the decrypted seed", a.Profile)
		}
		if len(a.BodyMetrics) != len(seedWeights) {
			t.Fatalf("%d body metrics, want %d", len(a.BodyMetrics), len(seedWeights))
		}
		for i, m := range a.BodyMetrics {
			if m.WeightKg != seedWeights[i] || m.BodyFatPercent != 18.5 || m.RestingHeartRateBpm != 58 || m.MuscleMassKg != nil {
				t.Errorf("body metrics %d = %+v, want weight %v, fat 18.5, heart rate 58, no muscle mass", i, m, seedWeights[i])
			}
		}
		if p := a.PrivacySettings; !p.AppearOnLeaderboards || p.ShareAnalytics || !p.MarketingNotifications {
			t.Errorf("privacy settings = %+v", p)
		}
		if len(a.StaffBranches) != 1 || a.StaffBranches[0].Name != u.BranchName {
			t.Errorf("staff branches = %+v, want %s", a.StaffBranches, u.BranchName)
		}
		if ms := a.Memberships; len(ms) != 2 || ms[0].BranchID == nil || *ms[0].BranchID != a.Profile.HomeBranchID ||
			ms[0].ValidUntil == nil || !ms[0].ValidUntil.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) ||
			ms[1].BranchID != nil || ms[1].ValidUntil != nil || ms[1].EndedAt != nil || ms[1].ID == uuid.Nil {
			t.Errorf("memberships = %+v, want the branch one then the network-wide one", ms)
		}
		devices := []string{}
		for _, s := range a.Sessions {
			devices = append(devices, s.DeviceName)
			if s.IP != "203.0.113.7" || s.CreatedAt.IsZero() || s.LastSeenAt.IsZero() {
				t.Errorf("session %+v lacks ip or times", s)
			}
		}
		slices.Sort(devices)
		if !slices.Equal(devices, []string{"Pixel 8", "iPad"}) {
			t.Errorf("sessions = %q, want Pixel 8 and iPad", devices)
		}
		var actions []string
		for _, e := range a.AuditEvents {
			actions = append(actions, e.Action+"/"+e.Actor)
			if e.Action == "auth.login" && (e.IP != "203.0.113.7" || e.RequestID != "req-login-ada") {
				t.Errorf("own login row = %+v, want its ip and request id", e)
			}
		}
		if !slices.Equal(actions, []string{"auth.login/you", "auth.session_timeout/system"}) {
			t.Errorf("audit events = %q, want ada's login and timeout only", actions)
		}
		var exports []string
		for _, e := range a.DataExports {
			exports = append(exports, e.ID.String()+"/"+e.Status)
		}
		if want := []string{u.ReadyExport.String() + "/ready", u.PendingExport.String() + "/pending"}; !slices.Equal(exports, want) {
			t.Errorf("data exports = %q, want %q", exports, want)
		}

		// No secrets: no password hash, no data key, no refresh tokens or
		// their stored hashes; and nothing of the other user.
		text := string(raw)
		secrets := map[string]string{
			"password hash":          u.PasswordHash,
			"wrapped data key (b64)": base64.StdEncoding.EncodeToString(u.WrappedKey),
			"wrapped data key (hex)": hex.EncodeToString(u.WrappedKey),
			"bob's id":               other.ID.String(),
			"bob's email":            other.Email,
		}
		for i, tok := range u.RefreshTokens {
			secrets["refresh token "+string(rune('0'+i))] = tok
			hash, err := b.rds.Client.HGet(ctx, b.rds.Prefix+"sess:"+u.SessionIDs[i], "rt").Result()
			if err != nil {
				t.Fatal(err)
			}
			secrets["refresh token hash "+string(rune('0'+i))] = hash
		}
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("archive contains the %s", what)
			}
		}
		for _, field := range []string{"password_hash", "data_key", `"rt"`, "token", "refresh", "_enc"} {
			if strings.Contains(text, field) {
				t.Errorf("archive has a field named like %s", field)
			}
		}
		if n := auditCount(t, b, "action = 'gdpr.export_ready' AND target_id = $1 AND details = $2",
			u.ID.String(), `{"export_id":"`+u.PendingExport.String()+`"}`); n != 1 {
			t.Errorf("%d gdpr.export_ready audit rows, want 1", n)
		}
		verifyAudit(t, b)

		// At least once: a re-run of a ready export changes nothing.
		res, err = workExport(t, b, b.exportWorker(now.Add(time.Hour)), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil)
		if err != nil || res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("re-run = %v, %v; want completed", res.EventKind, err)
		}
		if again := exportRow(t, b, u.PendingExport); again != row {
			t.Errorf("re-run changed the row: %+v, was %+v", again, row)
		}
		if info2, err := b.store.Head(ctx, key); err != nil || info2.ETag != info.ETag || !info2.LastModified.Equal(info.LastModified) {
			t.Errorf("re-run rewrote the archive: %+v, was %+v (%v)", info2, info, err)
		}
		if n := auditCount(t, b, "action = 'gdpr.export_ready'"); n != 1 {
			t.Errorf("%d gdpr.export_ready rows after the re-run, want 1", n)
		}
	})

	t.Run("CancelledForClosedAccount", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "cal")
		key := jobs.ExportObjectKey(u.ID, u.PendingExport)
		// An archive a crashed earlier attempt left behind.
		stale := []byte("{}")
		if err := b.store.Put(ctx, key, "application/json", bytes.NewReader(stale), int64(len(stale))); err != nil {
			t.Fatal(err)
		}
		b.closeAccount(t, u.ID)
		res, err := workExport(t, b, b.exportWorker(now), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil)
		if err != nil || res.EventKind != river.EventKindJobCancelled {
			t.Fatalf("export of a closed account = %s, %v; want cancelled", res.EventKind, err)
		}
		if _, err := b.store.Head(ctx, key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("archive of a closed account: Head = %v, want ErrNotFound", err)
		}
		if row := exportRow(t, b, u.PendingExport); row.Status != "pending" {
			t.Errorf("export row = %s; the erasure deletes it, the export leaves it", row.Status)
		}
	})

	t.Run("CancelledForErasedAccount", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "eve")
		b.closeAccount(t, u.ID)
		if err := b.erasureRegistry().Erase(ctx, u.ID); err != nil {
			t.Fatalf("erase: %v", err)
		}
		res, err := workExport(t, b, b.exportWorker(now), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil)
		if err != nil || res.EventKind != river.EventKindJobCancelled {
			t.Fatalf("export of an erased account = %s, %v; want cancelled", res.EventKind, err)
		}
		if keys := b.bucketKeys(t); len(keys) != 0 {
			t.Errorf("bucket after the cancelled export = %q, want empty", keys)
		}
	})

	t.Run("AccountClosedWhileBuilding", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "max")
		w := b.exportWorker(now)
		// The clock is read once the account was found open, before the
		// archive is built: close the account right then.
		w.Now = func() time.Time { b.closeAccount(t, u.ID); return now }
		res, err := workExport(t, b, w, jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil)
		if err != nil || res.EventKind != river.EventKindJobCancelled {
			t.Fatalf("export whose account closed meanwhile = %s, %v; want cancelled", res.EventKind, err)
		}
		if _, err := b.store.Head(ctx, jobs.ExportObjectKey(u.ID, u.PendingExport)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("archive left behind: Head = %v, want ErrNotFound", err)
		}
		if row := exportRow(t, b, u.PendingExport); row.Status != "pending" {
			t.Errorf("export row = %s, want still pending (not ready)", row.Status)
		}
	})

	t.Run("FailsAfterLastAttempt", func(t *testing.T) {
		t.Parallel()
		b := setupGDPR(t, false)
		u := b.seedUser(t, "fay")
		// A key ring without the key fay's data key is wrapped under: every
		// attempt fails to decrypt.
		spec, err := fieldcrypt.GenerateMasterKeySpec("other")
		if err != nil {
			t.Fatal(err)
		}
		w := b.exportWorker(now)
		if w.MasterKeys, err = fieldcrypt.ParseMasterKeys(spec); err != nil {
			t.Fatal(err)
		}
		args := jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}

		// Not the last attempt: retried (River makes a job due within
		// seconds available at once), the export still pending.
		res, err := workExport(t, b, w, args, nil)
		if err == nil || (res.Job.State != rivertype.JobStateRetryable && res.Job.State != rivertype.JobStateAvailable) {
			t.Fatalf("failing first attempt = %s, %v; want retryable with an error", res.Job.State, err)
		}
		if row := exportRow(t, b, u.PendingExport); row.Status != "pending" {
			t.Fatalf("after a retryable failure the export is %s, want pending", row.Status)
		}
		// The last attempt: discarded, the export failed with a reason.
		res, err = workExport(t, b, w, args, &river.InsertOpts{MaxAttempts: 1})
		if err == nil || res.Job.State != rivertype.JobStateDiscarded {
			t.Fatalf("failing last attempt = %s, %v; want discarded with an error", res.Job.State, err)
		}
		row := exportRow(t, b, u.PendingExport)
		if row.Status != "failed" || row.FailureReason != jobs.ExportFailureReason || !row.CompletedAt.Valid {
			t.Fatalf("export after the last attempt = %+v, want failed with the reason", row)
		}
		if strings.Contains(row.FailureReason, "fieldcrypt") {
			t.Errorf("failure reason %q shows internals", row.FailureReason)
		}
		if _, err := b.store.Head(ctx, jobs.ExportObjectKey(u.ID, u.PendingExport)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("failed export left an archive: %v", err)
		}
	})

	t.Run("Unconfigured", func(t *testing.T) {
		t.Parallel()
		w := &jobs.DataExportWorker{}
		err := w.Work(ctx, &river.Job[jobs.DataExportArgs]{JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: 5}})
		if err == nil || !strings.Contains(err.Error(), "not configured") {
			t.Fatalf("Work without deps = %v, want a configuration error", err)
		}
		if got := w.Timeout(nil); got <= 0 || got > 10*time.Minute {
			t.Errorf("Timeout = %v", got)
		}
	})
}

func TestExportRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupGDPR(t, false)
	u := b.seedUser(t, "rita")
	now := time.Now().UTC()
	if res, err := workExport(t, b, b.exportWorker(now), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil); err != nil || res.EventKind != river.EventKindJobCompleted {
		t.Fatalf("export: %v %v", res.EventKind, err)
	}
	// The seeded ready export is past its expiry now; the fresh one is not.
	b.exec(t, `UPDATE data_exports SET expires_at = now() - interval '1 minute' WHERE id = $1`, u.ReadyExport)
	dueKey, freshKey := jobs.ExportObjectKey(u.ID, u.ReadyExport), jobs.ExportObjectKey(u.ID, u.PendingExport)

	worker := rivertest.NewWorker(t, riverpgxv5.New(b.tdb.Pool), &river.Config{Logger: testLogger(t)},
		&jobs.ExportRetentionWorker{Pool: b.tdb.Pool, Storage: b.store})
	sweep := func(wantExpired int) {
		t.Helper()
		tx, err := b.tdb.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		res, err := worker.Work(ctx, t, tx, jobs.ExportRetentionArgs{}, nil)
		if err != nil || res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("retention = %v, %v", res.EventKind, err)
		}
		if res.Job.Kind != "export_retention" || res.Job.Queue != jobs.QueueMaintenance {
			t.Errorf("job %s on %s, want export_retention on maintenance", res.Job.Kind, res.Job.Queue)
		}
		var out struct{ Expired int }
		if err := json.Unmarshal(res.Job.Output(), &out); err != nil || out.Expired != wantExpired {
			t.Errorf("output %s, want %d expired", res.Job.Output(), wantExpired)
		}
	}
	sweep(1)
	if row := exportRow(t, b, u.ReadyExport); row.Status != "expired" {
		t.Errorf("due export is %s, want expired", row.Status)
	}
	if _, err := b.store.Head(ctx, dueKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("due archive: Head = %v, want ErrNotFound", err)
	}
	if row := exportRow(t, b, u.PendingExport); row.Status != "ready" {
		t.Errorf("fresh export is %s, want ready", row.Status)
	}
	if _, err := b.store.Head(ctx, freshKey); err != nil {
		t.Errorf("fresh archive: %v", err)
	}
	// Idempotent: nothing more is due.
	sweep(0)

	opts := jobs.ExportRetentionArgs{}.InsertOpts()
	if opts.Queue != jobs.QueueMaintenance || opts.UniqueOpts.ByPeriod <= 0 {
		t.Errorf("InsertOpts = %+v, want maintenance, unique by period", opts)
	}
}

// TestGDPRRegistration checks the GDPR kinds have workers and the retention
// sweep is scheduled.
func TestGDPRRegistration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tdb := testkit.NewDatabase(t)
	workers, err := jobs.Workers(jobs.Deps{})
	if err != nil {
		t.Fatalf("Workers: %v", err)
	}
	client, err := river.NewClient(riverpgxv5.New(tdb.Pool), &river.Config{
		Logger: testLogger(t), Queues: jobs.Queues(), Workers: workers, PeriodicJobs: jobs.PeriodicJobs(floor.Settings{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Insert refuses a kind without a worker.
	id := uuid.Must(uuid.NewV7())
	for _, args := range []river.JobArgs{
		jobs.DataExportArgs{ExportID: id, UserID: id},
		jobs.AccountErasureArgs{UserID: id},
		jobs.ExportRetentionArgs{},
	} {
		res, err := client.Insert(ctx, args, nil)
		if err != nil {
			t.Errorf("Insert %s: %v", args.Kind(), err)
			continue
		}
		want := map[string]string{"data_export": jobs.QueueDefault, "account_erasure": jobs.QueueMaintenance, "export_retention": jobs.QueueMaintenance}[args.Kind()]
		if res.Job.Queue != want {
			t.Errorf("%s queued on %s, want %s", args.Kind(), res.Job.Queue, want)
		}
	}
	if !client.PeriodicJobs().RemoveByID("export_retention") {
		t.Error("no periodic job with id export_retention")
	}
	if !client.PeriodicJobs().RemoveByID("cache_cleanup") {
		t.Error("no periodic job with id cache_cleanup")
	}

	// An unconfigured erasure fails (and is retried) rather than skip a store.
	w := &jobs.AccountErasureWorker{}
	if err := w.Work(ctx, &river.Job[jobs.AccountErasureArgs]{JobRow: &rivertype.JobRow{}, Args: jobs.AccountErasureArgs{UserID: id}}); err == nil {
		t.Error("erasure without deps succeeded")
	}
}
