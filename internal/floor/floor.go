package floor

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
)

// Session end reasons, as stored in gym_sessions.end_reason.
const (
	SessionEndMember     = "member"
	SessionEndTimeout    = "timeout"
	SessionEndSuperseded = "superseded"
	SessionEndStaff      = "staff"
)

// Link end reasons, as stored in machine_links.end_reason.
const (
	LinkEndMember       = "member"
	LinkEndReplaced     = "replaced"
	LinkEndIdle         = "idle"
	LinkEndSessionEnded = "session_ended"
	LinkEndMaintenance  = "maintenance"
	LinkEndStaff        = "staff"
)

// ErrAlreadyEnded is returned by EndSession and EndLink when the session or
// link had ended before: callers that race (a member checking out while the
// timeout job fires) treat it as done.
var ErrAlreadyEnded = errors.New("floor: already ended")

var queries = dbsqlc.New()

// EndSession ends an open gym session with reason, and the machine link it
// holds (reason session_ended), notifying the member's streams and the
// machine's watchers, all in tx. endedBy is who ended it when that was not
// the member (staff); uuid.Nil otherwise.
func EndSession(ctx context.Context, tx pgx.Tx, sessionID uuid.UUID, reason string, endedBy uuid.UUID) (dbsqlc.GymSession, error) {
	// The link goes first: the member's stream then sees the machine
	// unlinked before the session ends, the order things happen on the floor.
	links, err := queries.FloorLinkOpenForSession(ctx, tx, sessionID)
	if err != nil {
		return dbsqlc.GymSession{}, fmt.Errorf("floor: find links of session: %w", err)
	}
	for _, l := range links {
		if _, err := EndLink(ctx, tx, l.ID, LinkEndSessionEnded); err != nil && !errors.Is(err, ErrAlreadyEnded) {
			return dbsqlc.GymSession{}, err
		}
	}
	s, err := queries.FloorSessionEnd(ctx, tx, dbsqlc.FloorSessionEndParams{
		ID:        sessionID,
		EndReason: pgtype.Text{String: reason, Valid: true},
		EndedBy:   uuid.NullUUID{UUID: endedBy, Valid: endedBy != uuid.Nil},
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return dbsqlc.GymSession{}, ErrAlreadyEnded
	}
	if err != nil {
		return dbsqlc.GymSession{}, fmt.Errorf("floor: end session: %w", err)
	}
	if err := NotifyMember(ctx, tx, s.UserID, MemberSessionEnded, s.ID); err != nil {
		return dbsqlc.GymSession{}, err
	}
	return s, nil
}

// EndLink ends an open machine link with reason and frees its machine,
// notifying the member's streams and the machine's watchers, all in tx.
func EndLink(ctx context.Context, tx pgx.Tx, linkID uuid.UUID, reason string) (dbsqlc.MachineLink, error) {
	l, err := queries.FloorLinkEnd(ctx, tx, dbsqlc.FloorLinkEndParams{ID: linkID, EndReason: pgtype.Text{String: reason, Valid: true}})
	if errors.Is(err, pgx.ErrNoRows) {
		return dbsqlc.MachineLink{}, ErrAlreadyEnded
	}
	if err != nil {
		return dbsqlc.MachineLink{}, fmt.Errorf("floor: end link: %w", err)
	}
	m, err := queries.FloorMachineReleaseLink(ctx, tx, dbsqlc.FloorMachineReleaseLinkParams{MachineID: l.MachineID, LinkID: uuid.NullUUID{UUID: l.ID, Valid: true}})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// The machine no longer points at this link (it was deleted or
		// re-pointed); nothing to free.
	case err != nil:
		return dbsqlc.MachineLink{}, fmt.Errorf("floor: free machine: %w", err)
	default:
		if err := NotifyMachines(ctx, tx, m.BranchID, MachineVersion{ID: m.ID, Version: m.Version}); err != nil {
			return dbsqlc.MachineLink{}, err
		}
	}
	if err := NotifyMember(ctx, tx, l.UserID, MemberMachineUnlinked, l.ID); err != nil {
		return dbsqlc.MachineLink{}, err
	}
	return l, nil
}
