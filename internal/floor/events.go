// Package floor holds the gym floor's shared domain: the notifications that
// tell every server process what changed, and the writes that several
// services and jobs make (ending a session, ending a machine link), so each
// always leaves the session, the link, the machine and the streams in step.
//
// Every notification is sent with realtime.Notify inside the writer's
// transaction, so a rolled-back write sends nothing, and carries ids and
// versions only: readers fetch the rows they need.
package floor

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/internal/realtime"
)

// Channels the hub of every process listens to.
const (
	// ChannelMachines carries MachinesChanged: machines whose status or
	// details changed.
	ChannelMachines = "nxg_machines"
	// ChannelMembers carries MemberEvent: a member's session, link or set.
	ChannelMembers = "nxg_members"
	// ChannelRevocations carries Revocation: sessions or devices whose
	// streams must end now.
	ChannelRevocations = "nxg_revocations"
	// ChannelWorkouts carries WorkoutEvent: a workout started, a set
	// logged in it (from the app or a machine), its completion.
	ChannelWorkouts = "nxg_workouts"
)

// Channels lists every channel of the gym floor, for realtime.Options.
var Channels = []string{ChannelMachines, ChannelMembers, ChannelRevocations, ChannelWorkouts}

// MachineVersion names one machine at one version.
type MachineVersion struct {
	ID      uuid.UUID `json:"id"`
	Version int64     `json:"v"`
}

// MachinesChanged says that machines of one branch changed. Readers load
// the machines and skip any whose version they have already sent.
type MachinesChanged struct {
	Branch   uuid.UUID        `json:"b"`
	Machines []MachineVersion `json:"m"`
}

// Kinds of MemberEvent.
const (
	MemberSessionStarted  = "session_started"
	MemberSessionEnded    = "session_ended"
	MemberMachineLinked   = "machine_linked"
	MemberMachineUnlinked = "machine_unlinked"
	MemberSetReported     = "set_reported"
)

// MemberEvent says that something of one member's visit changed. ID is the
// session's id for session events, the link's for link events and the set's
// for set events.
type MemberEvent struct {
	User uuid.UUID `json:"u"`
	Kind string    `json:"k"`
	ID   uuid.UUID `json:"id"`
}

// Kinds of WorkoutEvent.
const (
	WorkoutStarted   = "started"
	WorkoutSetLogged = "set_logged"
	WorkoutCompleted = "completed"
)

// WorkoutEvent says that one member's workout changed. ID is the set's id
// for set_logged and the workout's otherwise.
type WorkoutEvent struct {
	User    uuid.UUID `json:"u"`
	Workout uuid.UUID `json:"w"`
	Kind    string    `json:"k"`
	ID      uuid.UUID `json:"id"`
}

// NotifyWorkout sends one WorkoutEvent.
func NotifyWorkout(ctx context.Context, tx pgx.Tx, ev WorkoutEvent) error {
	if err := realtime.Notify(ctx, tx, ChannelWorkouts, ev); err != nil {
		return fmt.Errorf("floor: notify workout: %w", err)
	}
	return nil
}

// Revocation says that a subject's sessions ended: every stream held by
// Subject (a user or device id) ends, or only those of SessionID when set.
type Revocation struct {
	Subject   uuid.UUID `json:"s"`
	SessionID string    `json:"sid,omitempty"`
}

// machinesPerNotification is the most machines one MachinesChanged names.
// A NOTIFY payload holds at most realtime.MaxPayload bytes, about 150
// machines' ids and versions, while one change can touch many more (a
// network cut silencing every console of a big branch, a batch of
// reports); a hundred leaves room to spare.
const machinesPerNotification = 100

// NotifyMachines tells watchers that machines of a branch changed: one
// MachinesChanged, or several in the same transaction when there are more
// machines than one notification holds.
func NotifyMachines(ctx context.Context, tx pgx.Tx, branch uuid.UUID, machines ...MachineVersion) error {
	for part := range slices.Chunk(machines, machinesPerNotification) {
		if err := realtime.Notify(ctx, tx, ChannelMachines, MachinesChanged{Branch: branch, Machines: part}); err != nil {
			return fmt.Errorf("floor: notify machines: %w", err)
		}
	}
	return nil
}

// NotifyMember sends one MemberEvent.
func NotifyMember(ctx context.Context, tx pgx.Tx, user uuid.UUID, kind string, id uuid.UUID) error {
	return realtime.Notify(ctx, tx, ChannelMembers, MemberEvent{User: user, Kind: kind, ID: id})
}

// NotifyRevocation sends one Revocation. It needs no transaction of its
// own: a revocation is not tied to a row, so a plain statement sends it.
func NotifyRevocation(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, r Revocation) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := realtime.Notify(ctx, tx, ChannelRevocations, r); err != nil {
			return fmt.Errorf("floor: notify revocation: %w", err)
		}
		return nil
	})
}
