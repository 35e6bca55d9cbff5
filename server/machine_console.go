package server

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
)

// machineConsole serves the machine consoles' side of MachineService:
// Attach and ReportActivity. SCAFFOLD: being built.
type machineConsole struct{}

func newMachineConsole(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, logger *slog.Logger) *machineConsole {
	return &machineConsole{}
}
