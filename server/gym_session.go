package server

import (
	"log/slog"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/floor"
)

// gymSessionService serves nxg.v1.GymSessionService. SCAFFOLD: being built.
type gymSessionService struct {
	nxgv1connect.UnimplementedGymSessionServiceHandler
}

// NewGymSessionService returns the GymSessionService handler.
func NewGymSessionService(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, logger *slog.Logger) *gymSessionService {
	return &gymSessionService{}
}

// linkEndReasons maps machine_links.end_reason to the API's enum.
var linkEndReasons = map[string]nxgv1.LinkEndReason{
	floor.LinkEndMember:       nxgv1.LinkEndReason_LINK_END_REASON_MEMBER,
	floor.LinkEndReplaced:     nxgv1.LinkEndReason_LINK_END_REASON_REPLACED,
	floor.LinkEndIdle:         nxgv1.LinkEndReason_LINK_END_REASON_IDLE,
	floor.LinkEndSessionEnded: nxgv1.LinkEndReason_LINK_END_REASON_SESSION_ENDED,
	floor.LinkEndMaintenance:  nxgv1.LinkEndReason_LINK_END_REASON_MAINTENANCE,
	floor.LinkEndStaff:        nxgv1.LinkEndReason_LINK_END_REASON_STAFF,
}

// machineLinkProto converts a machine link; branchID and machineName come
// from the machine, which the link row does not carry. MachineService
// shares it, so a link looks the same on every stream and RPC.
func machineLinkProto(l dbsqlc.MachineLink, branchID uuid.UUID, machineName string) *nxgv1.MachineLink {
	out := &nxgv1.MachineLink{
		Id:          l.ID.String(),
		MachineId:   l.MachineID.String(),
		BranchId:    branchID.String(),
		SessionId:   l.GymSessionID.String(),
		LinkedAt:    timestamppb.New(l.LinkedAt),
		MachineName: machineName,
	}
	if l.EndedAt.Valid {
		out.EndedAt = timestamppb.New(l.EndedAt.Time)
	}
	if l.EndReason.Valid {
		out.EndReason = linkEndReasons[l.EndReason.String]
	}
	return out
}

// machineSetProto converts a set a machine reported.
func machineSetProto(s dbsqlc.MachineSet) *nxgv1.MachineSet {
	return &nxgv1.MachineSet{
		Id:              s.ID.String(),
		SessionId:       s.GymSessionID.String(),
		MachineId:       s.MachineID.String(),
		ClientSetId:     s.ClientSetID,
		Reps:            s.Reps,
		WeightKg:        s.WeightKg,
		DurationSeconds: s.DurationSeconds,
		DistanceM:       s.DistanceM,
		Calories:        s.Calories,
		RecordedAt:      timestamppb.New(s.RecordedAt),
	}
}
