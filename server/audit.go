package server

import (
	"context"
	"encoding/json"
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

// Audit actions of this service.
const (
	// actionAuditRead records every attempt to read the trail, allowed or
	// not: who watches the watchers is part of the trail too.
	actionAuditRead = "audit.read"
)

// auditService serves nxg.v1.AuditService: the audit trail, for admins.
type auditService struct {
	pool    *pgxpool.Pool
	audit   *audit.Log
	queries *dbsqlc.Queries
}

// NewAuditService returns the AuditService handler over pool.
func NewAuditService(pool *pgxpool.Pool, id Identity) nxgv1connect.AuditServiceHandler {
	return &auditService{pool: pool, audit: id.Audit, queries: dbsqlc.New()}
}

// auditCursor is the keyset position after the last event of a page.
type auditCursor struct {
	Seq int64 `json:"s"`
}

// auditListName ties page tokens to this list.
const auditListName = "audit_events"

func (s *auditService) ListAuditEvents(ctx context.Context, req *connect.Request[nxgv1.ListAuditEventsRequest]) (*connect.Response[nxgv1.ListAuditEventsResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsAdmin() {
		// The refusal is recorded in its own transaction: it must stay
		// in the trail although the RPC fails.
		if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			return s.audit.Record(ctx, tx, s.readEvent(ctx, p, audit.ResultDenied, map[string]string{"role": string(p.Role)}))
		}); err != nil {
			return nil, fmt.Errorf("record denied audit read: %w", err)
		}
		return nil, apperr.PermissionDenied("only admins may read the audit trail")
	}

	params, details, err := auditListParams(req.Msg)
	if err != nil {
		return nil, err
	}

	rows, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) ([]dbsqlc.AuditEvent, error) {
		rows, err := s.queries.AuditList(ctx, tx, params)
		if err != nil {
			return nil, fmt.Errorf("list audit events: %w", err)
		}
		details["returned"] = strconv.Itoa(min(len(rows), int(params.RowLimit-1)))
		// Reading the trail is audited in the same transaction, last, so
		// the chain lock is held as briefly as possible; if the record
		// fails the admin gets no rows.
		if err := s.audit.Record(ctx, tx, s.readEvent(ctx, p, audit.ResultSuccess, details)); err != nil {
			return nil, err
		}
		return rows, nil
	})
	if err != nil {
		return nil, err
	}

	resp := &nxgv1.ListAuditEventsResponse{}
	rows, resp.NextPageToken = pagination.Page(auditListName, rows, params.RowLimit-1, func(last dbsqlc.AuditEvent) any {
		return auditCursor{Seq: last.Seq}
	})
	resp.Events = make([]*nxgv1.AuditEvent, len(rows))
	for i, r := range rows {
		resp.Events[i] = auditEventToProto(r)
	}
	return connect.NewResponse(resp), nil
}

// readEvent is the audit row of one read of the trail.
func (s *auditService) readEvent(ctx context.Context, p auth.Principal, result audit.Result, details map[string]string) audit.Event {
	return requestEvent(ctx, audit.Event{
		ActorID:    p.UserID,
		Action:     actionAuditRead,
		TargetType: "audit_trail",
		Result:     result,
		Details:    details,
	})
}

// auditListParams turns the request into query parameters (asking for one
// row more than the page, to know whether another page follows) and the
// filters as audit details.
func auditListParams(msg *nxgv1.ListAuditEventsRequest) (dbsqlc.AuditListParams, map[string]string, error) {
	var cursor auditCursor
	after, err := pagination.Decode(auditListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return dbsqlc.AuditListParams{}, nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.AuditListParams{RowLimit: size + 1}
	details := map[string]string{"page_size": strconv.Itoa(int(size))}
	if after {
		params.BeforeSeq = pgtype.Int8{Int64: cursor.Seq, Valid: true}
		details["before_seq"] = strconv.FormatInt(cursor.Seq, 10)
	}
	if v := msg.GetActorId(); v != "" {
		// The request validator has checked it is a UUID already.
		id, err := uuid.Parse(v)
		if err != nil {
			return dbsqlc.AuditListParams{}, nil, apperr.InvalidArgument("actor_id", "must be a UUID")
		}
		params.ActorID = uuid.NullUUID{UUID: id, Valid: true}
		details["actor_id"] = id.String()
	}
	if v := msg.GetTargetId(); v != "" {
		params.TargetID = pgtype.Text{String: v, Valid: true}
		details["target_id"] = v
	}
	if v := msg.GetAction(); v != "" {
		params.Action = pgtype.Text{String: v, Valid: true}
		details["action"] = v
	}
	var since, until time.Time
	if msg.Since != nil {
		if err := msg.GetSince().CheckValid(); err != nil {
			return dbsqlc.AuditListParams{}, nil, apperr.InvalidArgument("since", "is not a valid timestamp")
		}
		since = msg.GetSince().AsTime()
		params.Since = pgtype.Timestamptz{Time: since, Valid: true}
		details["since"] = since.Format(time.RFC3339Nano)
	}
	if msg.Until != nil {
		if err := msg.GetUntil().CheckValid(); err != nil {
			return dbsqlc.AuditListParams{}, nil, apperr.InvalidArgument("until", "is not a valid timestamp")
		}
		until = msg.GetUntil().AsTime()
		params.Until = pgtype.Timestamptz{Time: until, Valid: true}
		details["until"] = until.Format(time.RFC3339Nano)
	}
	if msg.Since != nil && msg.Until != nil && !since.Before(until) {
		return dbsqlc.AuditListParams{}, nil, apperr.InvalidArgument("until", "must be later than since")
	}
	return params, details, nil
}

func auditEventToProto(r dbsqlc.AuditEvent) *nxgv1.AuditEvent {
	out := &nxgv1.AuditEvent{
		Seq:        r.Seq,
		OccurredAt: timestamppb.New(r.OccurredAt),
		ActorRef:   r.ActorRef,
		Action:     r.Action,
		TargetType: r.TargetType,
		TargetId:   r.TargetID.String,
		TargetRef:  r.TargetRef,
		Result:     r.Result,
		Ip:         r.Ip.String,
		UserAgent:  r.UserAgent.String,
		RequestId:  r.RequestID,
	}
	if r.ActorID.Valid {
		out.ActorId = r.ActorID.UUID.String()
	}
	if r.Details != "" && r.Details != "{}" {
		var details map[string]string
		if err := json.Unmarshal([]byte(r.Details), &details); err != nil {
			// Only the application writes details, as a JSON object of
			// strings; anything else is shown as it is rather than hiding
			// the row from the admin investigating it.
			details = map[string]string{"raw": r.Details}
		}
		out.Details = details
	}
	return out
}
