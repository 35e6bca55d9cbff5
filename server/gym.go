package server

import (
	"context"
	"fmt"

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
	"github.com/nxg-fitness/nxg/internal/pagination"
)

// gymService serves nxg.v1.GymService: the public branch directory.
type gymService struct {
	pool    *pgxpool.Pool
	queries *dbsqlc.Queries
}

// NewGymService returns the GymService handler over pool.
func NewGymService(pool *pgxpool.Pool) nxgv1connect.GymServiceHandler {
	return &gymService{pool: pool, queries: dbsqlc.New()}
}

// branchCursor is the keyset position after the last branch of a page.
type branchCursor struct {
	Name string    `json:"n"`
	ID   uuid.UUID `json:"i"`
}

func (s *gymService) ListBranches(ctx context.Context, req *connect.Request[nxgv1.ListBranchesRequest]) (*connect.Response[nxgv1.ListBranchesResponse], error) {
	var cursor branchCursor
	after, err := pagination.Decode("branches", req.Msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(req.Msg.GetPageSize())
	params := dbsqlc.BranchListParams{RowLimit: size + 1}
	if after {
		params.AfterName = pgtype.Text{String: cursor.Name, Valid: true}
		params.AfterID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}

	// One read-only snapshot, so the branches and their hours agree.
	type page struct {
		branches []dbsqlc.Branch
		hours    []dbsqlc.BranchOpeningHour
	}
	p, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (page, error) {
		rows, err := s.queries.BranchList(ctx, tx, params)
		if err != nil {
			return page{}, fmt.Errorf("list branches: %w", err)
		}
		ids := make([]uuid.UUID, len(rows))
		for i, b := range rows {
			ids[i] = b.ID
		}
		hours, err := s.queries.BranchOpeningHoursList(ctx, tx, ids)
		if err != nil {
			return page{}, fmt.Errorf("list opening hours: %w", err)
		}
		return page{branches: rows, hours: hours}, nil
	})
	if err != nil {
		return nil, err
	}

	resp := &nxgv1.ListBranchesResponse{}
	rows := p.branches
	rows, resp.NextPageToken = pagination.Page("branches", rows, size, func(last dbsqlc.Branch) any {
		return branchCursor{Name: last.Name, ID: last.ID}
	})
	byBranch := groupHours(p.hours)
	resp.Branches = make([]*nxgv1.Branch, len(rows))
	for i, b := range rows {
		resp.Branches[i] = branchToProto(b, byBranch[b.ID])
	}
	return connect.NewResponse(resp), nil
}

func (s *gymService) GetBranch(ctx context.Context, req *connect.Request[nxgv1.GetBranchRequest]) (*connect.Response[nxgv1.GetBranchResponse], error) {
	// The request validator has checked the id is a UUID already.
	id, err := uuid.Parse(req.Msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	branch, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.Branch, error) {
		b, err := s.queries.BranchGet(ctx, tx, id)
		if db.IsNotFound(err) {
			return nil, apperr.NotFound("branch", id.String())
		}
		if err != nil {
			return nil, fmt.Errorf("get branch: %w", err)
		}
		hours, err := s.queries.BranchOpeningHoursList(ctx, tx, []uuid.UUID{id})
		if err != nil {
			return nil, fmt.Errorf("list opening hours: %w", err)
		}
		return branchToProto(b, hours), nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.GetBranchResponse{Branch: branch}), nil
}

func groupHours(hours []dbsqlc.BranchOpeningHour) map[uuid.UUID][]dbsqlc.BranchOpeningHour {
	m := make(map[uuid.UUID][]dbsqlc.BranchOpeningHour)
	for _, h := range hours {
		m[h.BranchID] = append(m[h.BranchID], h)
	}
	return m
}

func branchToProto(b dbsqlc.Branch, hours []dbsqlc.BranchOpeningHour) *nxgv1.Branch {
	out := &nxgv1.Branch{
		Id:           b.ID.String(),
		Name:         b.Name,
		Address:      b.Address,
		Timezone:     b.Timezone,
		Capacity:     b.Capacity,
		CreatedAt:    timestamppb.New(b.CreatedAt),
		UpdatedAt:    timestamppb.New(b.UpdatedAt),
		OpeningHours: make([]*nxgv1.OpeningHours, len(hours)),
	}
	for i, h := range hours {
		out.OpeningHours[i] = &nxgv1.OpeningHours{
			Weekday:  nxgv1.Weekday(h.Weekday),
			OpensAt:  clockString(h.OpensAt),
			ClosesAt: clockString(h.ClosesAt),
		}
	}
	return out
}

// clockString renders a time of day as "HH:MM"; PostgreSQL's 24:00 stays 24:00.
func clockString(t pgtype.Time) string {
	minutes := t.Microseconds / 60_000_000
	return fmt.Sprintf("%02d:%02d", minutes/60, minutes%60)
}
