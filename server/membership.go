package server

import (
	"context"
	"fmt"
	"strconv"
	"time"

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
	"github.com/nxg-fitness/nxg/internal/pagination"
)

// Audit actions of this service. Rows target the member ("user"), so they
// are part of the member's data export and erased with them.
const (
	actionMembershipGranted = "membership.granted"
	actionMembershipEnded   = "membership.ended"
	// actionMembershipRead records staff and admins listing memberships
	// other than their own: a read of other people's data.
	actionMembershipRead = "membership.read"
)

// membershipListName ties page tokens to this list.
const membershipListName = "memberships"

// membershipService serves nxg.v1.MembershipService. Admins manage every
// membership; staff those of the branches they work at (staff_branches),
// never network-wide ones; members may only list their own.
type membershipService struct {
	pool    *pgxpool.Pool
	audit   *audit.Log
	queries *dbsqlc.Queries
	now     func() time.Time
}

// NewMembershipService returns the MembershipService handler over pool.
func NewMembershipService(pool *pgxpool.Pool, id Identity) nxgv1connect.MembershipServiceHandler {
	return &membershipService{pool: pool, audit: id.Audit, queries: dbsqlc.New(), now: time.Now}
}

// membershipCursor is the keyset position after the last membership of a page.
type membershipCursor struct {
	CreatedAt time.Time `json:"c"`
	ID        uuid.UUID `json:"i"`
}

func (s *membershipService) GrantMembership(ctx context.Context, req *connect.Request[nxgv1.GrantMembershipRequest]) (*connect.Response[nxgv1.GrantMembershipResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsStaff() {
		return nil, apperr.PermissionDenied("only staff and admins may grant memberships")
	}
	msg := req.Msg
	// The request validator has checked these already; they are checked
	// again so the handler is safe on its own.
	userID, err := uuid.Parse(msg.GetUserId())
	if err != nil {
		return nil, apperr.InvalidArgument("user_id", "must be a UUID")
	}
	var branchID uuid.NullUUID
	if v := msg.GetBranchId(); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
		}
		branchID = uuid.NullUUID{UUID: id, Valid: true}
	}
	if msg.ValidFrom == nil || msg.GetValidFrom().CheckValid() != nil {
		return nil, apperr.InvalidArgument("valid_from", "is required and must be a valid timestamp")
	}
	validFrom := msg.GetValidFrom().AsTime()
	var validUntil pgtype.Timestamptz
	if msg.ValidUntil != nil {
		if err := msg.GetValidUntil().CheckValid(); err != nil {
			return nil, apperr.InvalidArgument("valid_until", "is not a valid timestamp")
		}
		until := msg.GetValidUntil().AsTime()
		if !until.After(validFrom) {
			return nil, apperr.InvalidArgument("valid_until", "must be later than valid_from")
		}
		validUntil = pgtype.Timestamptz{Time: until, Valid: true}
	}
	if !branchID.Valid && !p.IsAdmin() {
		return nil, apperr.PermissionDenied("only admins may grant network-wide memberships")
	}

	m, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Membership, error) {
		if branchID.Valid {
			if err := s.requireBranch(ctx, tx, p, branchID.UUID); err != nil {
				return dbsqlc.Membership{}, err
			}
		}
		// UserGet finds live accounts only: a closed account is waiting
		// for erasure and gets nothing new.
		if _, err := s.queries.UserGet(ctx, tx, userID); db.IsNotFound(err) {
			return dbsqlc.Membership{}, apperr.NotFound("user", userID.String())
		} else if err != nil {
			return dbsqlc.Membership{}, fmt.Errorf("read user: %w", err)
		}
		m, err := s.queries.MembershipCreate(ctx, tx, dbsqlc.MembershipCreateParams{
			UserID:     userID,
			BranchID:   branchID,
			ValidFrom:  validFrom,
			ValidUntil: validUntil,
			CreatedBy:  uuid.NullUUID{UUID: p.UserID, Valid: true},
		})
		if err != nil {
			return dbsqlc.Membership{}, fmt.Errorf("create membership: %w", err)
		}
		details := map[string]string{"membership_id": m.ID.String(), "branch_id": branchLabel(branchID)}
		if err := s.audit.Record(ctx, tx, s.event(ctx, p, actionMembershipGranted, userID.String(), details)); err != nil {
			return dbsqlc.Membership{}, err
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GrantMembershipResponse{Membership: membershipToProto(m)}), nil
}

// requireBranch checks that the branch exists (for admins) or that the staff
// caller works at it. Staff get permission_denied for any other branch,
// existing or not, so they learn nothing about branches outside their own.
func (s *membershipService) requireBranch(ctx context.Context, tx pgx.Tx, p auth.Principal, branchID uuid.UUID) error {
	if !p.IsAdmin() {
		has, err := s.queries.StaffBranchHas(ctx, tx, dbsqlc.StaffBranchHasParams{UserID: p.UserID, BranchID: branchID})
		if err != nil {
			return fmt.Errorf("read staff branches: %w", err)
		}
		if !has {
			return apperr.PermissionDenied("staff may only manage memberships of the branches they work at")
		}
	}
	if _, err := s.queries.BranchGet(ctx, tx, branchID); db.IsNotFound(err) {
		return apperr.NotFound("branch", branchID.String())
	} else if err != nil {
		return fmt.Errorf("read branch: %w", err)
	}
	return nil
}

func (s *membershipService) ListMemberships(ctx context.Context, req *connect.Request[nxgv1.ListMembershipsRequest]) (*connect.Response[nxgv1.ListMembershipsResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	var cursor membershipCursor
	after, err := pagination.Decode(membershipListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.MembershipListParams{RowLimit: size + 1}
	details := map[string]string{"page_size": strconv.Itoa(int(size))}
	if after {
		params.AfterCreatedAt = pgtype.Timestamptz{Time: cursor.CreatedAt, Valid: true}
		params.AfterID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	if v := msg.GetUserId(); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return nil, apperr.InvalidArgument("user_id", "must be a UUID")
		}
		params.UserID = uuid.NullUUID{UUID: id, Valid: true}
	}
	if v := msg.GetBranchId(); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
		}
		params.BranchID = uuid.NullUUID{UUID: id, Valid: true}
		details["branch_id"] = id.String()
	}
	if msg.GetActiveOnly() {
		params.ActiveAt = pgtype.Timestamptz{Time: s.now(), Valid: true}
		details["active_only"] = "true"
	}

	switch {
	case !p.IsStaff():
		// Members see their own memberships only.
		if params.UserID.Valid && params.UserID.UUID != p.UserID {
			return nil, apperr.PermissionDenied("members may only list their own memberships")
		}
		params.UserID = uuid.NullUUID{UUID: p.UserID, Valid: true}
	case !p.IsAdmin() && !params.BranchID.Valid:
		// Staff without a branch filter see their branches' memberships.
		params.StaffUserID = uuid.NullUUID{UUID: p.UserID, Valid: true}
	}
	// Anything but a caller's own memberships is other people's data:
	// staff and admins reading it are audited.
	own := params.UserID.Valid && params.UserID.UUID == p.UserID
	var target string
	if params.UserID.Valid {
		target = params.UserID.UUID.String()
	}

	rows, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) ([]dbsqlc.Membership, error) {
		if p.IsStaff() && !p.IsAdmin() && params.BranchID.Valid {
			has, err := s.queries.StaffBranchHas(ctx, tx, dbsqlc.StaffBranchHasParams{UserID: p.UserID, BranchID: params.BranchID.UUID})
			if err != nil {
				return nil, fmt.Errorf("read staff branches: %w", err)
			}
			if !has {
				return nil, apperr.PermissionDenied("staff may only list memberships of the branches they work at")
			}
		}
		rows, err := s.queries.MembershipList(ctx, tx, params)
		if err != nil {
			return nil, fmt.Errorf("list memberships: %w", err)
		}
		if own {
			return rows, nil
		}
		details["returned"] = strconv.Itoa(min(len(rows), int(size)))
		targetType := "user"
		if target == "" {
			targetType = "memberships"
		}
		e := s.event(ctx, p, actionMembershipRead, target, details)
		e.TargetType = targetType
		// Last in the transaction: if the read cannot be recorded, the
		// caller gets no rows.
		if err := s.audit.Record(ctx, tx, e); err != nil {
			return nil, err
		}
		return rows, nil
	})
	if err != nil {
		return nil, err
	}

	resp := &nxgv1.ListMembershipsResponse{}
	rows, resp.NextPageToken = pagination.Page(membershipListName, rows, size, func(last dbsqlc.Membership) any {
		return membershipCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	})
	resp.Memberships = make([]*nxgv1.Membership, len(rows))
	for i, m := range rows {
		resp.Memberships[i] = membershipToProto(m)
	}
	return connect.NewResponse(resp), nil
}

func (s *membershipService) EndMembership(ctx context.Context, req *connect.Request[nxgv1.EndMembershipRequest]) (*connect.Response[nxgv1.EndMembershipResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsStaff() {
		return nil, apperr.PermissionDenied("only staff and admins may end memberships")
	}
	id, err := uuid.Parse(req.Msg.GetMembershipId())
	if err != nil {
		return nil, apperr.InvalidArgument("membership_id", "must be a UUID")
	}
	m, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Membership, error) {
		m, err := s.queries.MembershipGetForUpdate(ctx, tx, id)
		if db.IsNotFound(err) {
			return dbsqlc.Membership{}, apperr.NotFound("membership", id.String())
		}
		if err != nil {
			return dbsqlc.Membership{}, fmt.Errorf("read membership: %w", err)
		}
		if !p.IsAdmin() {
			if !m.BranchID.Valid {
				return dbsqlc.Membership{}, apperr.PermissionDenied("only admins may end network-wide memberships")
			}
			has, err := s.queries.StaffBranchHas(ctx, tx, dbsqlc.StaffBranchHasParams{UserID: p.UserID, BranchID: m.BranchID.UUID})
			if err != nil {
				return dbsqlc.Membership{}, fmt.Errorf("read staff branches: %w", err)
			}
			if !has {
				return dbsqlc.Membership{}, apperr.PermissionDenied("staff may only manage memberships of the branches they work at")
			}
		}
		if m.EndedAt.Valid {
			return dbsqlc.Membership{}, apperr.FailedPrecondition("membership %s was already ended", id)
		}
		m, err = s.queries.MembershipEnd(ctx, tx, id)
		if err != nil {
			// The row is locked and was not ended: finding nothing here
			// is a fault, not a race.
			return dbsqlc.Membership{}, fmt.Errorf("end membership: %w", err)
		}
		details := map[string]string{"membership_id": m.ID.String(), "branch_id": branchLabel(m.BranchID)}
		if err := s.audit.Record(ctx, tx, s.event(ctx, p, actionMembershipEnded, m.UserID.String(), details)); err != nil {
			return dbsqlc.Membership{}, err
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.EndMembershipResponse{Membership: membershipToProto(m)}), nil
}

// event is an audit row of this service about the member targetUserID.
func (s *membershipService) event(ctx context.Context, p auth.Principal, action, targetUserID string, details map[string]string) audit.Event {
	return requestEvent(ctx, audit.Event{
		ActorID:    p.UserID,
		Action:     action,
		TargetType: "user",
		TargetID:   targetUserID,
		Result:     audit.ResultSuccess,
		Details:    details,
	})
}

// branchLabel names a membership's branch in audit details.
func branchLabel(id uuid.NullUUID) string {
	if !id.Valid {
		return "network"
	}
	return id.UUID.String()
}

func membershipToProto(m dbsqlc.Membership) *nxgv1.Membership {
	out := &nxgv1.Membership{
		Id:        m.ID.String(),
		UserId:    m.UserID.String(),
		ValidFrom: timestamppb.New(m.ValidFrom),
		CreatedAt: timestamppb.New(m.CreatedAt),
	}
	if m.BranchID.Valid {
		out.BranchId = m.BranchID.UUID.String()
	}
	if m.ValidUntil.Valid {
		out.ValidUntil = timestamppb.New(m.ValidUntil.Time)
	}
	if m.EndedAt.Valid {
		out.EndedAt = timestamppb.New(m.EndedAt.Time)
	}
	if m.CreatedBy.Valid {
		out.CreatedBy = m.CreatedBy.UUID.String()
	}
	return out
}
