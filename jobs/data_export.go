package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// DataExportArgs asks for a user's GDPR export archive to be built.
type DataExportArgs struct {
	ExportID uuid.UUID `json:"export_id" river:"unique"`
	UserID   uuid.UUID `json:"user_id"`
}

// Kind is the stable job kind name stored with every job.
func (DataExportArgs) Kind() string { return "data_export" }

// InsertOpts: one job per export, however often it is asked for.
func (DataExportArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueDefault, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

const (
	// ExportTTL is how long a ready archive stays downloadable; the
	// export_retention job deletes it afterwards.
	ExportTTL = 7 * 24 * time.Hour
	// ExportFormat names the archive's layout, for readers of old archives.
	ExportFormat = "nxg-data-export/v1"
	// ExportFailureReason is what the app shows when an export failed for
	// good. Causes stay in the job's errors; they may name internals.
	ExportFailureReason = "We could not build your data export. Please ask for a new one."
	// ExportReadyAction is the audit action written when an archive is ready.
	ExportReadyAction = "gdpr.export_ready"
)

// Columns the profile and body-metric values are encrypted under
// (fieldcrypt binds each ciphertext to its user and column): the database
// column names. The profile handlers seal with the same names.
const (
	colDateOfBirth      = "date_of_birth_enc"
	colSex              = "sex_enc"
	colHeightCm         = "height_cm_enc"
	colPhone            = "phone_enc"
	colWeightKg         = "weight_kg_enc"
	colBodyFatPercent   = "body_fat_percent_enc"
	colMuscleMassKg     = "muscle_mass_kg_enc"
	colRestingHeartRate = "resting_heart_rate_bpm_enc"
)

// ExportObjectKey is where the archive of an export is stored: under the
// user's prefix, so erasing the user deletes it too.
func ExportObjectKey(userID, exportID uuid.UUID) string {
	return "users/" + userID.String() + "/exports/" + exportID.String() + ".json"
}

// DataExportWorker builds a user's GDPR archive (right of access, art. 15,
// and portability, art. 20): one JSON document of everything they gave NXG
// and everything it stores about them, personal fields decrypted, stored in
// S3 (encrypted at rest) for ExportTTL.
//
// It is idempotent. An export that is no longer pending (ready, failed,
// expired) is left alone; a retry after a crash rebuilds the archive under
// the same key. When the account is closed or erased meanwhile the job is
// cancelled and no archive is left behind. Errors are retried; the last
// attempt marks the export failed with ExportFailureReason.
type DataExportWorker struct {
	river.WorkerDefaults[DataExportArgs]
	Pool       *pgxpool.Pool
	Storage    *storage.Client
	Sessions   *session.Store
	MasterKeys *fieldcrypt.MasterKeys
	Audit      *audit.Log
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Timeout bounds one attempt.
func (w *DataExportWorker) Timeout(*river.Job[DataExportArgs]) time.Duration {
	return 5 * time.Minute
}

// Work builds the archive; see DataExportWorker.
func (w *DataExportWorker) Work(ctx context.Context, job *river.Job[DataExportArgs]) error {
	err := w.work(ctx, job.Args)
	var cancel *river.JobCancelError
	if err == nil || errors.As(err, &cancel) || job.Attempt < job.MaxAttempts || w.Pool == nil {
		return err
	}
	// The last attempt failed: say so to the user, who can ask again (a
	// failed export frees the one-pending-export slot). The job's own
	// context may be the one that timed out.
	failCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer done()
	if ferr := queries.DataExportFail(failCtx, w.Pool, dbsqlc.DataExportFailParams{
		ID: job.Args.ExportID, FailureReason: ExportFailureReason,
	}); ferr != nil {
		return errors.Join(err, fmt.Errorf("mark export failed: %w", ferr))
	}
	return err
}

func (w *DataExportWorker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *DataExportWorker) work(ctx context.Context, args DataExportArgs) error {
	if w.Pool == nil || w.Storage == nil || w.Sessions == nil || w.MasterKeys == nil || w.Audit == nil {
		return errors.New("data export worker is not configured (pool, storage, sessions, master keys, audit log)")
	}
	key := ExportObjectKey(args.UserID, args.ExportID)

	exp, err := queries.DataExportGetByID(ctx, w.Pool, args.ExportID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Erasure deletes exports with the rest of the user's rows.
		return w.cancel(ctx, key, fmt.Errorf("export %s no longer exists (the account was erased)", args.ExportID))
	}
	if err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	if exp.UserID != args.UserID {
		return river.JobCancel(fmt.Errorf("export %s is not user %s's", args.ExportID, args.UserID))
	}
	if exp.Status != "pending" {
		river.RecordOutput(ctx, map[string]string{"skipped": "export is " + exp.Status}) //nolint:errcheck // informational
		return nil
	}
	user, err := queries.UserGetForErasure(ctx, w.Pool, args.UserID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && user.DeletedAt.Valid) {
		return w.cancel(ctx, key, fmt.Errorf("account %s is closed", args.UserID))
	}
	if err != nil {
		return fmt.Errorf("read account: %w", err)
	}

	now := w.now().UTC()
	archive, err := w.build(ctx, user, exp, now)
	if err != nil {
		return err
	}
	body, err := json.MarshalIndent(archive, "", "  ")
	if err != nil {
		return fmt.Errorf("encode archive: %w", err)
	}
	if err := w.Storage.Put(ctx, key, "application/json", bytes.NewReader(body), int64(len(body))); err != nil {
		return err
	}

	// Mark it ready while holding the account open: DeleteAccount waits for
	// this transaction, so either the archive is ready before the account
	// closes (and the erasure deletes it with the user's prefix), or the
	// account closed first and the archive is removed here.
	closed := false
	err = db.WithTx(ctx, w.Pool, func(tx pgx.Tx) error {
		if _, err := queries.UserLockLive(ctx, tx, args.UserID); errors.Is(err, pgx.ErrNoRows) {
			closed = true
			return nil
		} else if err != nil {
			return fmt.Errorf("lock account: %w", err)
		}
		if err := queries.DataExportReady(ctx, tx, dbsqlc.DataExportReadyParams{
			ID:        args.ExportID,
			ObjectKey: pgtype.Text{String: key, Valid: true},
			ExpiresAt: pgtype.Timestamptz{Time: now.Add(ExportTTL), Valid: true},
		}); err != nil {
			return fmt.Errorf("mark export ready: %w", err)
		}
		return w.Audit.Record(ctx, tx, audit.Event{
			Action:     ExportReadyAction,
			TargetType: "user",
			TargetID:   args.UserID.String(),
			Result:     audit.ResultSuccess,
			Details:    map[string]string{"export_id": args.ExportID.String()},
		})
	})
	if err != nil {
		return err
	}
	if closed {
		return w.cancel(ctx, key, fmt.Errorf("account %s was closed while its export was built", args.UserID))
	}
	river.RecordOutput(ctx, map[string]any{"object_key": key, "bytes": len(body)}) //nolint:errcheck // informational
	return nil
}

// cancel removes any archive an earlier attempt stored and cancels the job
// with cause; a failed removal is retried instead, so nothing is left.
func (w *DataExportWorker) cancel(ctx context.Context, key string, cause error) error {
	// The key is a whole object name; as a prefix it matches that object.
	if _, err := w.Storage.DeletePrefix(ctx, key); err != nil {
		return fmt.Errorf("remove the archive of a cancelled export: %w", err)
	}
	return river.JobCancel(cause)
}

// The archive. Field names are part of what users receive: keep them
// stable, and bump ExportFormat when they change.
type (
	exportArchive struct {
		Format          string              `json:"format"`
		ExportID        uuid.UUID           `json:"export_id"`
		GeneratedAt     time.Time           `json:"generated_at"`
		Account         exportAccount       `json:"account"`
		Profile         *exportProfile      `json:"profile"`
		BodyMetrics     []exportBodyMetrics `json:"body_metrics"`
		PrivacySettings *exportPrivacy      `json:"privacy_settings"`
		StaffBranches   []exportBranch      `json:"staff_branches"`
		Memberships     []exportMembership  `json:"memberships"`
		Sessions        []exportSession     `json:"sessions"`
		AuditEvents     []exportAuditEvent  `json:"audit_events"`
		DataExports     []exportRecord      `json:"data_exports"`
		GymSessions     []exportGymSession  `json:"gym_sessions"`
		MachineLinks    []exportMachineLink `json:"machine_links"`
		MachineSets     []exportMachineSet  `json:"machine_sets"`
		Workouts        exportWorkouts      `json:"workouts"`
		Nutrition       exportNutrition     `json:"nutrition"`
	}
	// exportAccount is the users row without the password hash and the
	// wrapped data key: secrets, not data about the person.
	exportAccount struct {
		ID                uuid.UUID `json:"id"`
		Email             string    `json:"email"`
		DisplayName       string    `json:"display_name"`
		Role              string    `json:"role"`
		PasswordChangedAt time.Time `json:"password_changed_at"`
		CreatedAt         time.Time `json:"created_at"`
		UpdatedAt         time.Time `json:"updated_at"`
	}
	exportProfile struct {
		DateOfBirth   string     `json:"date_of_birth,omitempty"`
		Sex           string     `json:"sex,omitempty"`
		HeightCm      any        `json:"height_cm,omitempty"`
		Phone         string     `json:"phone,omitempty"`
		FitnessGoal   string     `json:"fitness_goal,omitempty"`
		ActivityLevel string     `json:"activity_level,omitempty"`
		UnitSystem    string     `json:"unit_system,omitempty"`
		Timezone      string     `json:"timezone,omitempty"`
		HomeBranchID  *uuid.UUID `json:"home_branch_id,omitempty"`
		UpdatedAt     time.Time  `json:"updated_at"`
	}
	exportBodyMetrics struct {
		ID                  uuid.UUID `json:"id"`
		MeasuredAt          time.Time `json:"measured_at"`
		WeightKg            any       `json:"weight_kg,omitempty"`
		BodyFatPercent      any       `json:"body_fat_percent,omitempty"`
		MuscleMassKg        any       `json:"muscle_mass_kg,omitempty"`
		RestingHeartRateBpm any       `json:"resting_heart_rate_bpm,omitempty"`
		CreatedAt           time.Time `json:"created_at"`
	}
	exportPrivacy struct {
		AppearOnLeaderboards   bool      `json:"appear_on_leaderboards"`
		ShareAnalytics         bool      `json:"share_analytics"`
		MarketingNotifications bool      `json:"marketing_notifications"`
		UpdatedAt              time.Time `json:"updated_at"`
	}
	// exportMembership is one of the user's memberships; who granted it is
	// another person's data and not disclosed.
	exportMembership struct {
		ID         uuid.UUID  `json:"id"`
		BranchID   *uuid.UUID `json:"branch_id"`
		ValidFrom  time.Time  `json:"valid_from"`
		ValidUntil *time.Time `json:"valid_until"`
		EndedAt    *time.Time `json:"ended_at"`
	}
	exportBranch struct {
		ID   uuid.UUID `json:"id"`
		Name string    `json:"name"`
	}
	// exportSession is a signed-in device; never a token or token hash.
	exportSession struct {
		DeviceName string    `json:"device_name"`
		IP         string    `json:"ip"`
		UserAgent  string    `json:"user_agent"`
		CreatedAt  time.Time `json:"created_at"`
		LastSeenAt time.Time `json:"last_seen_at"`
		ExpiresAt  time.Time `json:"expires_at"`
	}
	// exportAuditEvent is an audit row about the user. Who else acted is
	// not disclosed (it is another person's data): Actor is "you",
	// "system" or "other". IP and user agent are given for the user's own
	// requests only.
	exportAuditEvent struct {
		Seq        int64             `json:"seq"`
		OccurredAt time.Time         `json:"occurred_at"`
		Action     string            `json:"action"`
		Actor      string            `json:"actor"`
		TargetType string            `json:"target_type,omitempty"`
		TargetID   string            `json:"target_id,omitempty"`
		Result     string            `json:"result"`
		IP         string            `json:"ip,omitempty"`
		UserAgent  string            `json:"user_agent,omitempty"`
		RequestID  string            `json:"request_id,omitempty"`
		Details    map[string]string `json:"details,omitempty"`
	}
	// exportGymSession is one visit to a branch. Who ended it, when staff
	// did, is another person's data and not disclosed: the reason says so.
	exportGymSession struct {
		ID        uuid.UUID  `json:"id"`
		BranchID  uuid.UUID  `json:"branch_id"`
		Method    string     `json:"method"`
		StartedAt time.Time  `json:"started_at"`
		ExpiresAt time.Time  `json:"expires_at"`
		EndedAt   *time.Time `json:"ended_at"`
		EndReason string     `json:"end_reason,omitempty"`
	}
	// exportMachineLink is a machine the user held during a visit.
	exportMachineLink struct {
		ID             uuid.UUID  `json:"id"`
		GymSessionID   uuid.UUID  `json:"gym_session_id"`
		MachineID      uuid.UUID  `json:"machine_id"`
		MachineName    string     `json:"machine_name"`
		BranchID       uuid.UUID  `json:"branch_id"`
		LinkedAt       time.Time  `json:"linked_at"`
		LastActivityAt time.Time  `json:"last_activity_at"`
		EndedAt        *time.Time `json:"ended_at"`
		EndReason      string     `json:"end_reason,omitempty"`
	}
	// exportMachineSet is a set a machine recorded for the user.
	exportMachineSet struct {
		ID              uuid.UUID `json:"id"`
		GymSessionID    uuid.UUID `json:"gym_session_id"`
		MachineID       uuid.UUID `json:"machine_id"`
		LinkID          uuid.UUID `json:"link_id"`
		ClientSetID     string    `json:"client_set_id"`
		Reps            int32     `json:"reps"`
		WeightKg        float64   `json:"weight_kg"`
		DurationSeconds int32     `json:"duration_seconds"`
		DistanceM       float64   `json:"distance_m"`
		Calories        int32     `json:"calories"`
		RecordedAt      time.Time `json:"recorded_at"`
	}
	exportRecord struct {
		ID          uuid.UUID  `json:"id"`
		Status      string     `json:"status"`
		CreatedAt   time.Time  `json:"created_at"`
		CompletedAt *time.Time `json:"completed_at,omitempty"`
		ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	}
)

// build gathers the archive: the database part from one consistent
// snapshot, then the sessions from Redis.
func (w *DataExportWorker) build(ctx context.Context, user dbsqlc.User, exp dbsqlc.DataExport, now time.Time) (*exportArchive, error) {
	dk, err := w.MasterKeys.Unwrap(user.ID.String(), user.DataKey)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	a := &exportArchive{
		Format:      ExportFormat,
		ExportID:    exp.ID,
		GeneratedAt: now,
		Account: exportAccount{
			ID: user.ID, Email: user.Email, DisplayName: user.DisplayName, Role: user.Role,
			PasswordChangedAt: user.PasswordChangedAt, CreatedAt: user.CreatedAt, UpdatedAt: user.UpdatedAt,
		},
		BodyMetrics:   []exportBodyMetrics{},
		StaffBranches: []exportBranch{},
		Memberships:   []exportMembership{},
		Sessions:      []exportSession{},
		AuditEvents:   []exportAuditEvent{},
		DataExports:   []exportRecord{},
		GymSessions:   []exportGymSession{},
		MachineLinks:  []exportMachineLink{},
		MachineSets:   []exportMachineSet{},
	}
	_, err = db.WithReadTxV(ctx, w.Pool, func(tx pgx.Tx) (struct{}, error) {
		return struct{}{}, w.readDatabase(ctx, tx, dk, user.ID, a)
	})
	if err != nil {
		return nil, err
	}
	sessions, err := w.Sessions.List(ctx, user.ID.String())
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range sessions {
		a.Sessions = append(a.Sessions, exportSession{
			DeviceName: s.DeviceName, IP: s.IP, UserAgent: s.UserAgent,
			CreatedAt: s.CreatedAt, LastSeenAt: s.LastSeenAt, ExpiresAt: s.ExpiresAt,
		})
	}
	return a, nil
}

func (w *DataExportWorker) readDatabase(ctx context.Context, tx pgx.Tx, dk *fieldcrypt.DataKey, userID uuid.UUID, a *exportArchive) error {
	profile, err := queries.ProfileGet(ctx, tx, userID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read profile: %w", err)
	default:
		p := &exportProfile{
			FitnessGoal: profile.FitnessGoal, ActivityLevel: profile.ActivityLevel,
			UnitSystem: profile.UnitSystem, Timezone: profile.Timezone, UpdatedAt: profile.UpdatedAt,
		}
		if profile.HomeBranchID.Valid {
			p.HomeBranchID = &profile.HomeBranchID.UUID
		}
		d := decrypter{dk: dk}
		p.DateOfBirth = d.text(colDateOfBirth, profile.DateOfBirthEnc)
		p.Sex = d.text(colSex, profile.SexEnc)
		p.HeightCm = d.number(colHeightCm, profile.HeightCmEnc)
		p.Phone = d.text(colPhone, profile.PhoneEnc)
		if d.err != nil {
			return fmt.Errorf("decrypt profile: %w", d.err)
		}
		a.Profile = p
	}

	metrics, err := queries.BodyMetricsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read body metrics: %w", err)
	}
	for _, m := range metrics {
		d := decrypter{dk: dk}
		e := exportBodyMetrics{
			ID: m.ID, MeasuredAt: m.MeasuredAt, CreatedAt: m.CreatedAt,
			WeightKg:            d.number(colWeightKg, m.WeightKgEnc),
			BodyFatPercent:      d.number(colBodyFatPercent, m.BodyFatPercentEnc),
			MuscleMassKg:        d.number(colMuscleMassKg, m.MuscleMassKgEnc),
			RestingHeartRateBpm: d.number(colRestingHeartRate, m.RestingHeartRateBpmEnc),
		}
		if d.err != nil {
			return fmt.Errorf("decrypt body metrics %s: %w", m.ID, d.err)
		}
		a.BodyMetrics = append(a.BodyMetrics, e)
	}

	privacy, err := queries.PrivacyGet(ctx, tx, userID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read privacy settings: %w", err)
	default:
		a.PrivacySettings = &exportPrivacy{
			AppearOnLeaderboards: privacy.AppearOnLeaderboards, ShareAnalytics: privacy.ShareAnalytics,
			MarketingNotifications: privacy.MarketingNotifications, UpdatedAt: privacy.UpdatedAt,
		}
	}

	branches, err := queries.StaffBranchListNamed(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read staff branches: %w", err)
	}
	for _, b := range branches {
		a.StaffBranches = append(a.StaffBranches, exportBranch{ID: b.BranchID, Name: b.Name})
	}

	memberships, err := queries.MembershipsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read memberships: %w", err)
	}
	for _, m := range memberships {
		e := exportMembership{ID: m.ID, ValidFrom: m.ValidFrom}
		if m.BranchID.Valid {
			e.BranchID = &m.BranchID.UUID
		}
		if m.ValidUntil.Valid {
			e.ValidUntil = &m.ValidUntil.Time
		}
		if m.EndedAt.Valid {
			e.EndedAt = &m.EndedAt.Time
		}
		a.Memberships = append(a.Memberships, e)
	}

	ref := w.Audit.Pseudonym(userID.String())
	events, err := queries.AuditListBySubject(ctx, tx, dbsqlc.AuditListBySubjectParams{UserID: userID, Ref: ref})
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	for _, ev := range events {
		a.AuditEvents = append(a.AuditEvents, auditForExport(ev, userID, ref))
	}

	exports, err := queries.DataExportListByUser(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read exports: %w", err)
	}
	for _, e := range exports {
		r := exportRecord{ID: e.ID, Status: e.Status, CreatedAt: e.CreatedAt}
		if e.CompletedAt.Valid {
			r.CompletedAt = &e.CompletedAt.Time
		}
		if e.ExpiresAt.Valid {
			r.ExpiresAt = &e.ExpiresAt.Time
		}
		a.DataExports = append(a.DataExports, r)
	}
	if err := readGymFloor(ctx, tx, userID, a); err != nil {
		return err
	}
	if err := readWorkouts(ctx, tx, userID, a); err != nil {
		return err
	}
	return readNutrition(ctx, tx, dk, userID, a)
}

// readGymFloor adds the user's visits to branches, the machines they held
// and the sets those machines recorded.
func readGymFloor(ctx context.Context, tx pgx.Tx, userID uuid.UUID, a *exportArchive) error {
	sessions, err := queries.GymSessionsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read gym sessions: %w", err)
	}
	for _, s := range sessions {
		e := exportGymSession{ID: s.ID, BranchID: s.BranchID, Method: s.Method, StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt, EndReason: s.EndReason.String}
		if s.EndedAt.Valid {
			e.EndedAt = &s.EndedAt.Time
		}
		a.GymSessions = append(a.GymSessions, e)
	}
	links, err := queries.GymSessionLinksAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read machine links: %w", err)
	}
	for _, l := range links {
		e := exportMachineLink{
			ID: l.MachineLink.ID, GymSessionID: l.MachineLink.GymSessionID, MachineID: l.MachineLink.MachineID,
			MachineName: l.MachineName, BranchID: l.BranchID, LinkedAt: l.MachineLink.LinkedAt,
			LastActivityAt: l.MachineLink.LastActivityAt, EndReason: l.MachineLink.EndReason.String,
		}
		if l.MachineLink.EndedAt.Valid {
			e.EndedAt = &l.MachineLink.EndedAt.Time
		}
		a.MachineLinks = append(a.MachineLinks, e)
	}
	sets, err := queries.GymSessionSetsAll(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("read machine sets: %w", err)
	}
	for _, s := range sets {
		a.MachineSets = append(a.MachineSets, exportMachineSet{
			ID: s.ID, GymSessionID: s.GymSessionID, MachineID: s.MachineID, LinkID: s.LinkID, ClientSetID: s.ClientSetID,
			Reps: s.Reps, WeightKg: s.WeightKg, DurationSeconds: s.DurationSeconds, DistanceM: s.DistanceM,
			Calories: s.Calories, RecordedAt: s.RecordedAt,
		})
	}
	return nil
}

func auditForExport(ev dbsqlc.AuditEvent, userID uuid.UUID, ref string) exportAuditEvent {
	self := (ev.ActorID.Valid && ev.ActorID.UUID == userID) || ev.ActorRef == ref
	out := exportAuditEvent{
		Seq: ev.Seq, OccurredAt: ev.OccurredAt, Action: ev.Action, TargetType: ev.TargetType,
		TargetID: ev.TargetID.String, Result: ev.Result, RequestID: ev.RequestID,
	}
	switch {
	case self:
		out.Actor = "you"
		out.IP, out.UserAgent = ev.Ip.String, ev.UserAgent.String
	case ev.ActorRef == "":
		out.Actor = "system"
	default:
		out.Actor = "other"
	}
	if ev.Details != "" && ev.Details != "{}" {
		// Details are a flat JSON object of strings (audit.Event.Details);
		// anything else is passed on as one raw value.
		var m map[string]string
		if err := json.Unmarshal([]byte(ev.Details), &m); err != nil {
			m = map[string]string{"raw": ev.Details}
		}
		out.Details = m
	}
	return out
}

// decrypter opens one row's encrypted values, keeping the first error.
type decrypter struct {
	dk  *fieldcrypt.DataKey
	err error
}

func (d *decrypter) text(column string, b []byte) string {
	if d.err != nil || len(b) == 0 {
		return ""
	}
	s, err := d.dk.OpenString(column, b)
	if err != nil {
		d.err = fmt.Errorf("%s: %w", column, err)
	}
	return s
}

// number opens a value stored as decimal text; it returns nil when absent,
// the number, or the text itself when it is not a number (an archive must
// hand over what is stored rather than fail on it).
func (d *decrypter) number(column string, b []byte) any {
	s := d.text(column, b)
	if s == "" {
		return nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	return s
}
