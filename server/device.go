package server

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
)

// deviceService serves nxg.v1.DeviceService. SCAFFOLD: being built.
type deviceService struct {
	nxgv1connect.UnimplementedDeviceServiceHandler
}

// NewDeviceService returns the DeviceService handler.
func NewDeviceService(pool *pgxpool.Pool, id Identity, fl Floor) nxgv1connect.DeviceServiceHandler {
	return &deviceService{}
}
