package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/token"
)

// deviceTestKinds maps the kinds tests name to the contract's enum.
var deviceTestKinds = map[string]nxgv1.DeviceKind{
	"machine":    nxgv1.DeviceKind_DEVICE_KIND_MACHINE,
	"nfc_reader": nxgv1.DeviceKind_DEVICE_KIND_NFC_READER,
	"kiosk":      nxgv1.DeviceKind_DEVICE_KIND_KIOSK,
}

// deviceClient is a DeviceService client over Connect JSON.
func (b *apiTestBundle) deviceClient() nxgv1connect.DeviceServiceClient {
	return nxgv1connect.NewDeviceServiceClient(http.DefaultClient, b.server.URL, connect.WithProtoJSON())
}

// authClient is an AuthService client over Connect (binary).
func (b *apiTestBundle) authClient() nxgv1connect.AuthServiceClient {
	return nxgv1connect.NewAuthServiceClient(http.DefaultClient, b.server.URL)
}

// registerDevice registers a device through the RPC as the caller holding
// staffToken; kind is "machine", "nfc_reader" or "kiosk", machineID is
// given for "machine" only.
func (b *apiTestBundle) registerDevice(staffToken, branchID, kind, machineID string) (*nxgv1.RegisterDeviceResponse, error) {
	res, err := b.deviceClient().RegisterDevice(context.Background(), authBearer(&nxgv1.RegisterDeviceRequest{
		BranchId: branchID, Kind: deviceTestKinds[kind], MachineId: machineID, Name: "Test " + kind,
	}, staffToken))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// deviceLogin signs a device in through AuthService.DeviceLogin.
func (b *apiTestBundle) deviceLogin(deviceID, secret string) (*nxgv1.DeviceLoginResponse, error) {
	res, err := b.authClient().DeviceLogin(context.Background(), connect.NewRequest(&nxgv1.DeviceLoginRequest{
		DeviceId: deviceID, DeviceSecret: secret,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// signInDevice registers a device of branchID through DeviceService with
// staffToken (a staff member of that branch or an admin) and signs it in
// through AuthService.DeviceLogin. kind is "machine" (give machineID),
// "nfc_reader" or "kiosk". It returns the device's id and access token.
func (b *apiTestBundle) signInDevice(t testing.TB, staffToken, branchID, kind string, machineID string) (deviceID, accessToken string) {
	t.Helper()
	if _, ok := deviceTestKinds[kind]; !ok {
		t.Fatalf("signInDevice: unknown kind %q", kind)
	}
	reg, err := b.registerDevice(staffToken, branchID, kind, machineID)
	if err != nil {
		t.Fatalf("RegisterDevice(%s at %s): %v", kind, branchID, err)
	}
	login, err := b.deviceLogin(reg.GetDevice().GetId(), reg.GetDeviceSecret())
	if err != nil {
		t.Fatalf("DeviceLogin(%s): %v", reg.GetDevice().GetId(), err)
	}
	return reg.GetDevice().GetId(), login.GetAccessToken()
}

// deviceTestMachine inserts a machine of branch and returns its id.
func deviceTestMachine(t testing.TB, b *apiTestBundle, branch, name string) string {
	t.Helper()
	var id string
	if err := b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, $2, 'rower', $3) RETURNING id::text`,
		branch, name, "tag-"+uuid.NewString()).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// deviceFixture is a bundle with two branches, a machine in each, a staff
// member of each, an admin and a member.
type deviceFixture struct {
	*apiTestBundle
	branchA, branchB   string
	machineA, machineB string
	staffA, staffB     auditTestCaller
	admin, member      auditTestCaller
}

func setupDevices(t *testing.T) *deviceFixture {
	t.Helper()
	b := setupAPI(t)
	f := &deviceFixture{apiTestBundle: b}
	f.branchA = b.insertBranch(t, "NXG Devices A")
	f.branchB = b.insertBranch(t, "NXG Devices B")
	f.machineA = deviceTestMachine(t, b, f.branchA, "Rower A")
	f.machineB = deviceTestMachine(t, b, f.branchB, "Rower B")
	f.staffA = auditTestUser(t, b, token.RoleStaff)
	f.staffB = auditTestUser(t, b, token.RoleStaff)
	f.admin = auditTestUser(t, b, token.RoleAdmin)
	f.member = auditTestUser(t, b, token.RoleMember)
	addStaffBranch(t, b, f.staffA.ID, f.branchA)
	addStaffBranch(t, b, f.staffB.ID, f.branchB)
	return f
}

func (f *deviceFixture) list(caller auditTestCaller, msg *nxgv1.ListDevicesRequest) (*nxgv1.ListDevicesResponse, error) {
	res, err := f.deviceClient().ListDevices(context.Background(), authBearer(msg, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (f *deviceFixture) revoke(caller auditTestCaller, id string) (*nxgv1.Device, error) {
	res, err := f.deviceClient().RevokeDevice(context.Background(), authBearer(&nxgv1.RevokeDeviceRequest{DeviceId: id}, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetDevice(), nil
}

// deviceAuditRows returns "action actor target result" of the device audit rows, oldest first.
func deviceAuditRows(t testing.TB, b *apiTestBundle, action string) []string {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(),
		`SELECT coalesce(actor_id::text, '-') || ' ' || target_type || ' ' || coalesce(target_id, '') || ' ' || result
		 FROM audit_events WHERE action = $1 ORDER BY seq`, action)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeviceService(t *testing.T) {
	t.Parallel()

	t.Run("RegisterEveryKind", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		for kind, machine := range map[string]string{"machine": f.machineA, "nfc_reader": "", "kiosk": ""} {
			reg, err := f.registerDevice(f.staffA.Token, f.branchA, kind, machine)
			if err != nil {
				t.Fatalf("register %s: %v", kind, err)
			}
			d := reg.GetDevice()
			if d.GetBranchId() != f.branchA || d.GetKind() != deviceTestKinds[kind] || d.GetMachineId() != machine ||
				d.GetName() != "Test "+kind || d.GetCreatedAt() == nil || d.GetRevokedAt() != nil || d.GetLastLoginAt() != nil {
				t.Fatalf("device = %v", d)
			}
			raw, err := base64.RawURLEncoding.DecodeString(reg.GetDeviceSecret())
			if err != nil || len(raw) != 32 {
				t.Fatalf("secret %q is not 32 base64url bytes (%v)", reg.GetDeviceSecret(), err)
			}
			// Only the SHA-256 is stored: no column holds the secret.
			var stored []byte
			var whole string
			if err := f.db.Pool.QueryRow(context.Background(),
				`SELECT secret_hash, d::text FROM devices d WHERE id = $1`, d.GetId()).Scan(&stored, &whole); err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(raw); string(stored) != string(sum[:]) {
				t.Fatalf("secret_hash is not the SHA-256 of the secret")
			}
			if strings.Contains(whole, reg.GetDeviceSecret()) || strings.Contains(whole, string(raw)) {
				t.Fatalf("the device row holds the secret: %s", whole)
			}
		}
		if rows := deviceAuditRows(t, f.apiTestBundle, "device.registered"); len(rows) != 3 ||
			!strings.HasPrefix(rows[0], f.staffA.ID.String()+" device ") || !strings.HasSuffix(rows[0], " success") {
			t.Fatalf("device.registered audit rows = %q", rows)
		}
	})

	t.Run("SecretsDiffer", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		a, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		b, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		if a.GetDeviceSecret() == b.GetDeviceSecret() || a.GetDevice().GetId() == b.GetDevice().GetId() {
			t.Fatal("two devices share a secret or an id")
		}
	})

	t.Run("AdminRegistersAnywhere", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		if _, err := f.registerDevice(f.admin.Token, f.branchB, "machine", f.machineB); err != nil {
			t.Fatal(err)
		}
		_, err := f.registerDevice(f.admin.Token, uuid.NewString(), "kiosk", "")
		requireAuthCode(t, err, connect.CodeNotFound, "branch")
	})

	t.Run("RegisterRefusals", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		_, err := f.registerDevice(f.member.Token, f.branchA, "kiosk", "")
		requireAuthCode(t, err, connect.CodePermissionDenied, "only staff and admins")
		_, err = f.registerDevice(f.staffB.Token, f.branchA, "kiosk", "")
		requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
		// Another branch that does not exist looks the same to staff.
		_, err = f.registerDevice(f.staffA.Token, uuid.NewString(), "kiosk", "")
		requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = f.registerDevice(f.staffA.Token, f.branchA, "machine", f.machineB)
		requireAuthCode(t, err, connect.CodeInvalidArgument, "another branch")
		_, err = f.registerDevice(f.staffA.Token, f.branchA, "machine", uuid.NewString())
		requireAuthCode(t, err, connect.CodeNotFound, "machine")
		_, err = f.registerDevice(f.staffA.Token, f.branchA, "machine", "")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "machine_id")
		_, err = f.registerDevice(f.staffA.Token, f.branchA, "kiosk", f.machineA)
		requireAuthCode(t, err, connect.CodeInvalidArgument, "machine_id")
		_, err = f.registerDevice("", f.branchA, "kiosk", "")
		requireAuthCode(t, err, connect.CodeUnauthenticated, "")
		if rows := deviceAuditRows(t, f.apiTestBundle, "device.registered"); len(rows) != 0 {
			t.Fatalf("refused registrations were audited as done: %q", rows)
		}
		var n int
		if err := f.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM devices`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d devices after refused registrations (%v)", n, err)
		}
	})

	t.Run("OneLiveConsolePerMachine", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		first, err := f.registerDevice(f.staffA.Token, f.branchA, "machine", f.machineA)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.registerDevice(f.staffA.Token, f.branchA, "machine", f.machineA)
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "already has a console")
		if _, err := f.revoke(f.staffA, first.GetDevice().GetId()); err != nil {
			t.Fatal(err)
		}
		// A replacement is registered once the old console is revoked.
		if _, err := f.registerDevice(f.staffA.Token, f.branchA, "machine", f.machineA); err != nil {
			t.Fatalf("register the replacement: %v", err)
		}
	})

	t.Run("ListNewestFirstPaged", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		var want []string
		for range 5 {
			reg, err := f.registerDevice(f.staffA.Token, f.branchA, "nfc_reader", "")
			if err != nil {
				t.Fatal(err)
			}
			want = append([]string{reg.GetDevice().GetId()}, want...)
		}
		if _, err := f.registerDevice(f.staffB.Token, f.branchB, "kiosk", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := f.revoke(f.staffA, want[1]); err != nil {
			t.Fatal(err)
		}
		listAll := func(caller auditTestCaller, includeRevoked bool) []string {
			t.Helper()
			msg := &nxgv1.ListDevicesRequest{BranchId: f.branchA, PageSize: 2, IncludeRevoked: includeRevoked}
			var got []string
			for range 10 {
				res, err := f.list(caller, msg)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.GetDevices()) > 2 {
					t.Fatalf("page of %d devices, asked for 2", len(res.GetDevices()))
				}
				for _, d := range res.GetDevices() {
					got = append(got, d.GetId())
				}
				if res.GetNextPageToken() == "" {
					return got
				}
				msg.PageToken = res.GetNextPageToken()
			}
			t.Fatal("too many pages")
			return nil
		}
		sameIDs(t, "all devices", listAll(f.staffA, true), want)
		sameIDs(t, "live devices", listAll(f.admin, false), append([]string{want[0]}, want[2:]...))

		_, err := f.list(f.staffB, &nxgv1.ListDevicesRequest{BranchId: f.branchA})
		requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = f.list(f.member, &nxgv1.ListDevicesRequest{BranchId: f.branchA})
		requireAuthCode(t, err, connect.CodePermissionDenied, "only staff and admins")
		_, err = f.list(f.staffA, &nxgv1.ListDevicesRequest{BranchId: f.branchA, PageToken: "garbage"})
		requireAuthCode(t, err, connect.CodeInvalidArgument, "page_token")
		_, err = f.list(f.admin, &nxgv1.ListDevicesRequest{BranchId: uuid.NewString()})
		requireAuthCode(t, err, connect.CodeNotFound, "branch")
	})

	t.Run("RevokeRules", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		reg, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		id := reg.GetDevice().GetId()
		_, err = f.revoke(f.member, id)
		requireAuthCode(t, err, connect.CodePermissionDenied, "only staff and admins")
		_, err = f.revoke(f.staffB, id)
		requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = f.revoke(f.staffA, uuid.NewString())
		requireAuthCode(t, err, connect.CodeNotFound, "device")
		d, err := f.revoke(f.staffA, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.GetRevokedAt() == nil || d.GetId() != id {
			t.Fatalf("revoked device = %v", d)
		}
		var revokedBy string
		if err := f.db.Pool.QueryRow(context.Background(), `SELECT revoked_by::text FROM devices WHERE id = $1`, id).Scan(&revokedBy); err != nil {
			t.Fatal(err)
		}
		if revokedBy != f.staffA.ID.String() {
			t.Fatalf("revoked_by = %s, want %s", revokedBy, f.staffA.ID)
		}
		_, err = f.revoke(f.admin, id)
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "already revoked")
		if rows := deviceAuditRows(t, f.apiTestBundle, "device.revoked"); len(rows) != 1 ||
			rows[0] != f.staffA.ID.String()+" device "+id+" success" {
			t.Fatalf("device.revoked audit rows = %q", rows)
		}
	})

	t.Run("DevicesMayNotManageDevices", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		_, tok := f.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")
		_, err := f.registerDevice(tok, f.branchA, "kiosk", "")
		requireAuthCode(t, err, connect.CodePermissionDenied, "devices may not call nxg.v1.DeviceService/RegisterDevice")
	})
}
