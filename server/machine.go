package server

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
)

// machineService serves nxg.v1.MachineService. SCAFFOLD: being built.
type machineService struct {
	nxgv1connect.UnimplementedMachineServiceHandler
	console *machineConsole
}

// NewMachineService returns the MachineService handler.
func NewMachineService(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, logger *slog.Logger) *machineService {
	return &machineService{console: newMachineConsole(pool, id, fl, guard, logger)}
}
