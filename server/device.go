package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
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

// Audit actions of the device service and of device sign-in. Rows target
// the device.
const (
	actionDeviceRegistered = "device.registered"
	actionDeviceRevoked    = "device.revoked"
	actionDeviceLogin      = "device.login"
)

// deviceListName ties page tokens to the device list.
const deviceListName = "devices"

// deviceSecretBytes is the entropy of a device secret: as much as a
// refresh token, since a device holds it for months.
const deviceSecretBytes = 32

// deviceService serves nxg.v1.DeviceService. Staff register and revoke the
// devices of the branches they work at (staff_branches); admins those of
// every branch. Members and devices may do neither.
type deviceService struct {
	pool    *pgxpool.Pool
	id      Identity
	logger  *slog.Logger
	queries *dbsqlc.Queries
}

// NewDeviceService returns the DeviceService handler. Revocations reach
// the streams of every process through NOTIFY, which needs only the pool.
func NewDeviceService(pool *pgxpool.Pool, id Identity, _ Floor, logger *slog.Logger) nxgv1connect.DeviceServiceHandler {
	return &deviceService{pool: pool, id: id, logger: logger, queries: dbsqlc.New()}
}

// deviceCursor is the keyset position after the last device of a page.
type deviceCursor struct {
	CreatedAt time.Time `json:"c"`
	ID        uuid.UUID `json:"i"`
}

var deviceKinds = map[nxgv1.DeviceKind]string{
	nxgv1.DeviceKind_DEVICE_KIND_MACHINE:    auth.DeviceMachine,
	nxgv1.DeviceKind_DEVICE_KIND_NFC_READER: auth.DeviceNFCReader,
	nxgv1.DeviceKind_DEVICE_KIND_KIOSK:      auth.DeviceKiosk,
}

func (s *deviceService) RegisterDevice(ctx context.Context, req *connect.Request[nxgv1.RegisterDeviceRequest]) (*connect.Response[nxgv1.RegisterDeviceResponse], error) {
	p, err := staffCaller(ctx, "register devices")
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	// The request validator has checked these already; they are checked
	// again so the handler is safe on its own.
	branchID, err := uuid.Parse(msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	kind, ok := deviceKinds[msg.GetKind()]
	if !ok {
		return nil, apperr.InvalidArgument("kind", "must be a defined device kind")
	}
	var machineID uuid.NullUUID
	if v := msg.GetMachineId(); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return nil, apperr.InvalidArgument("machine_id", "must be a UUID")
		}
		machineID = uuid.NullUUID{UUID: id, Valid: true}
	}
	if (kind == auth.DeviceMachine) != machineID.Valid {
		return nil, apperr.InvalidArgument("machine_id", "is required for DEVICE_KIND_MACHINE and must be empty for other kinds")
	}

	secret, secretHash := newDeviceSecret()
	d, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Device, error) {
		if err := s.requireBranch(ctx, tx, p, branchID, "register devices"); err != nil {
			return dbsqlc.Device{}, err
		}
		if machineID.Valid {
			branch, err := s.queries.DeviceMachineBranch(ctx, tx, machineID.UUID)
			if db.IsNotFound(err) {
				return dbsqlc.Device{}, apperr.NotFound("machine", machineID.UUID.String())
			}
			if err != nil {
				return dbsqlc.Device{}, fmt.Errorf("read machine: %w", err)
			}
			if branch != branchID {
				return dbsqlc.Device{}, apperr.InvalidArgument("machine_id", "is a machine of another branch")
			}
		}
		d, err := s.queries.DeviceCreate(ctx, tx, dbsqlc.DeviceCreateParams{
			BranchID:   branchID,
			Kind:       kind,
			MachineID:  machineID,
			Name:       msg.GetName(),
			SecretHash: secretHash,
			CreatedBy:  uuid.NullUUID{UUID: p.UserID, Valid: true},
		})
		if uniqueViolationOn(err, "devices_machine_live_key") {
			return dbsqlc.Device{}, apperr.FailedPrecondition("machine %s already has a console; revoke it before registering another", machineID.UUID)
		}
		if err != nil {
			return dbsqlc.Device{}, fmt.Errorf("create device: %w", err)
		}
		details := map[string]string{"branch_id": branchID.String(), "kind": kind}
		if machineID.Valid {
			details["machine_id"] = machineID.UUID.String()
		}
		if err := s.id.Audit.Record(ctx, tx, deviceEvent(ctx, p.UserID, actionDeviceRegistered, d.ID, audit.ResultSuccess, details)); err != nil {
			return dbsqlc.Device{}, err
		}
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.RegisterDeviceResponse{Device: deviceToProto(d), DeviceSecret: secret}), nil
}

func (s *deviceService) RevokeDevice(ctx context.Context, req *connect.Request[nxgv1.RevokeDeviceRequest]) (*connect.Response[nxgv1.RevokeDeviceResponse], error) {
	p, err := staffCaller(ctx, "revoke devices")
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetDeviceId())
	if err != nil {
		return nil, apperr.InvalidArgument("device_id", "must be a UUID")
	}
	d, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Device, error) {
		d, err := s.queries.DeviceGetForUpdate(ctx, tx, id)
		if db.IsNotFound(err) {
			return dbsqlc.Device{}, apperr.NotFound("device", id.String())
		}
		if err != nil {
			return dbsqlc.Device{}, fmt.Errorf("read device: %w", err)
		}
		if err := requireStaffOf(ctx, tx, p, d.BranchID, "revoke devices"); err != nil {
			return dbsqlc.Device{}, err
		}
		if d.RevokedAt.Valid {
			return dbsqlc.Device{}, apperr.FailedPrecondition("device %s was already revoked", id)
		}
		d, err = s.queries.DeviceRevoke(ctx, tx, dbsqlc.DeviceRevokeParams{ID: id, RevokedBy: uuid.NullUUID{UUID: p.UserID, Valid: true}})
		if err != nil {
			// The row is locked and was not revoked: finding nothing here
			// is a fault, not a race.
			return dbsqlc.Device{}, fmt.Errorf("revoke device: %w", err)
		}
		details := map[string]string{"branch_id": d.BranchID.String(), "kind": d.Kind}
		if err := s.id.Audit.Record(ctx, tx, deviceEvent(ctx, p.UserID, actionDeviceRevoked, d.ID, audit.ResultSuccess, details)); err != nil {
			return dbsqlc.Device{}, err
		}
		return d, nil
	})
	if err != nil {
		return nil, err
	}

	// The sessions end after the commit: a DeviceLogin racing with this
	// revocation either sees the device revoked when it records the
	// sign-in (and ends its own session), or made its session before
	// this point, and then RevokeAll ends it. The revocation runs even if
	// the caller has gone, hence WithoutCancel.
	ctx = context.WithoutCancel(ctx)
	if _, err := s.id.Sessions.RevokeAll(ctx, d.ID.String(), ""); err != nil {
		// The device is revoked in the database: it cannot sign in again,
		// and its access tokens die within 15 minutes. Report the failure
		// so staff retry, which finds the device revoked.
		return nil, sessionStoreFailure(err)
	}
	notifyRevoked(ctx, s.pool, s.logger, d.ID)
	return connect.NewResponse(&nxgv1.RevokeDeviceResponse{Device: deviceToProto(d)}), nil
}

func (s *deviceService) ListDevices(ctx context.Context, req *connect.Request[nxgv1.ListDevicesRequest]) (*connect.Response[nxgv1.ListDevicesResponse], error) {
	p, err := staffCaller(ctx, "list devices")
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	branchID, err := uuid.Parse(msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	var cursor deviceCursor
	after, err := pagination.Decode(deviceListName, msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(msg.GetPageSize())
	params := dbsqlc.DeviceListByBranchParams{BranchID: branchID, IncludeRevoked: msg.GetIncludeRevoked(), RowLimit: size + 1}
	if after {
		params.AfterCreatedAt = pgtype.Timestamptz{Time: cursor.CreatedAt, Valid: true}
		params.AfterID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	rows, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) ([]dbsqlc.Device, error) {
		if err := s.requireBranch(ctx, tx, p, branchID, "list devices"); err != nil {
			return nil, err
		}
		rows, err := s.queries.DeviceListByBranch(ctx, tx, params)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		return rows, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &nxgv1.ListDevicesResponse{}
	rows, resp.NextPageToken = pagination.Page(deviceListName, rows, size, func(last dbsqlc.Device) any {
		return deviceCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	})
	resp.Devices = make([]*nxgv1.Device, len(rows))
	for i, d := range rows {
		resp.Devices[i] = deviceToProto(d)
	}
	return connect.NewResponse(resp), nil
}

// staffCaller returns the calling staff member or admin; anyone else may
// not do what names.
func staffCaller(ctx context.Context, what string) (auth.Principal, error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return auth.Principal{}, err
	}
	if !p.IsStaff() {
		return auth.Principal{}, apperr.PermissionDenied("only staff and admins may %s", what)
	}
	return p, nil
}

// requireBranch checks that staff work at the branch and that it exists.
// Staff get permission_denied for any other branch, existing or not, so
// they learn nothing about branches outside their own.
func (s *deviceService) requireBranch(ctx context.Context, tx pgx.Tx, p auth.Principal, branchID uuid.UUID, what string) error {
	if err := requireStaffOf(ctx, tx, p, branchID, what); err != nil {
		return err
	}
	if _, err := s.queries.BranchGet(ctx, tx, branchID); db.IsNotFound(err) {
		return apperr.NotFound("branch", branchID.String())
	} else if err != nil {
		return fmt.Errorf("read branch: %w", err)
	}
	return nil
}

// newDeviceSecret returns a fresh secret (shown once) and the SHA-256 that
// is stored. The secret is random, not chosen by a person, so a fast hash
// is enough: there is nothing to guess from it.
func newDeviceSecret() (secret string, hash []byte) {
	var raw [deviceSecretBytes]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (it crashes instead)
	sum := sha256.Sum256(raw[:])
	return base64.RawURLEncoding.EncodeToString(raw[:]), sum[:]
}

// deviceSecretHash is the stored form of a presented secret. Anything that
// is not a well-formed secret hashes to something no device has, so every
// wrong secret takes the same path.
func deviceSecretHash(secret string) []byte {
	raw, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil || len(raw) != deviceSecretBytes {
		raw = []byte("not a device secret: " + secret)
	}
	sum := sha256.Sum256(raw)
	return sum[:]
}

// deviceEvent is an audit row about device, for the current request.
func deviceEvent(ctx context.Context, actor uuid.UUID, action string, device uuid.UUID, result audit.Result, details map[string]string) audit.Event {
	return requestEvent(ctx, audit.Event{
		ActorID:    actor,
		Action:     action,
		TargetType: "device",
		TargetID:   device.String(),
		Result:     result,
		Details:    details,
	})
}

// deviceOfRow is the calling Device a device row signs in as.
func deviceOfRow(d dbsqlc.Device) auth.Device {
	return auth.Device{ID: d.ID, BranchID: d.BranchID, Kind: d.Kind, MachineID: d.MachineID.UUID}
}

func deviceToProto(d dbsqlc.Device) *nxgv1.Device {
	out := &nxgv1.Device{
		Id:        d.ID.String(),
		BranchId:  d.BranchID.String(),
		Name:      d.Name,
		CreatedAt: timestamppb.New(d.CreatedAt),
	}
	for k, v := range deviceKinds {
		if v == d.Kind {
			out.Kind = k
		}
	}
	if d.MachineID.Valid {
		out.MachineId = d.MachineID.UUID.String()
	}
	if d.LastLoginAt.Valid {
		out.LastLoginAt = timestamppb.New(d.LastLoginAt.Time)
	}
	if d.RevokedAt.Valid {
		out.RevokedAt = timestamppb.New(d.RevokedAt.Time)
	}
	return out
}
