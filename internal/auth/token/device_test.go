package token

import (
	"errors"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
)

func TestIssueDevice(t *testing.T) {
	k := newTestKey(t, "k1")
	iss := newTestIssuer(t, ringOf(t, k), &clock{now: t0})

	for name, d := range map[string]DeviceClaims{
		"Machine":   {BranchID: "branch-1", Kind: "machine", MachineID: "machine-1"},
		"NFCReader": {BranchID: "branch-1", Kind: "nfc_reader"},
		"Kiosk":     {BranchID: "branch-1", Kind: "kiosk"},
	} {
		t.Run(name, func(t *testing.T) {
			tok, issued, err := iss.IssueDevice("device-9", "sess-3", d)
			if err != nil {
				t.Fatalf("IssueDevice: %v", err)
			}
			if issued.Role != RoleDevice || issued.Subject != "device-9" || issued.Device == nil || *issued.Device != d {
				t.Fatalf("issued claims = %+v", issued)
			}
			got, err := iss.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Role != RoleDevice || got.Subject != "device-9" || got.SessionID != "sess-3" || got.Device == nil || *got.Device != d {
				t.Fatalf("verified claims = %+v (device %+v), want device %+v", got, got.Device, d)
			}
			payload := decodeSegment(t, strings.Split(tok, ".")[1])
			if payload["branch_id"] != d.BranchID || payload["device_kind"] != d.Kind {
				t.Fatalf("payload = %v", payload)
			}
			if _, has := payload["machine_id"]; has != (d.MachineID != "") {
				t.Fatalf("payload machine_id presence = %v for %+v", has, d)
			}
		})
	}

	t.Run("PersonTokensCarryNoDevice", func(t *testing.T) {
		tok, _, err := iss.Issue("user-1", "s", RoleStaff)
		if err != nil {
			t.Fatal(err)
		}
		c, err := iss.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if c.Device != nil {
			t.Fatalf("device claims %+v on a staff token", c.Device)
		}
	})

	t.Run("RejectsInvalidDeviceClaims", func(t *testing.T) {
		for name, d := range map[string]DeviceClaims{
			"NoBranch":          {Kind: "kiosk"},
			"UnknownKind":       {BranchID: "b", Kind: "toaster"},
			"ConsoleNoMachine":  {BranchID: "b", Kind: "machine"},
			"ReaderWithMachine": {BranchID: "b", Kind: "nfc_reader", MachineID: "m"},
		} {
			if tok, _, err := iss.IssueDevice("d", "s", d); err == nil {
				t.Errorf("%s: IssueDevice succeeded: %s", name, tok)
			}
		}
	})
}

func TestVerifyRejectsForgedDeviceClaims(t *testing.T) {
	k := newTestKey(t, "k1")
	iss := newTestIssuer(t, ringOf(t, k), &clock{now: t0})
	device := with(validClaims(t0), "role", "device", "branch_id", "b1", "device_kind", "kiosk")

	// The control: a correctly signed device token with these claims verifies.
	if c, err := iss.Verify(signRaw(t, jwa.EdDSA(), k.priv, validHeader("k1"), device)); err != nil || c.Device == nil || c.Device.Kind != "kiosk" {
		t.Fatalf("control: claims %+v, err %v", c, err)
	}
	for name, claims := range map[string]map[string]any{
		"DeviceRoleWithoutClaims": with(validClaims(t0), "role", "device"),
		"MemberWithDeviceClaims":  with(device, "role", "member"),
		"StaffWithMachine":        with(validClaims(t0), "role", "staff", "machine_id", "m1"),
		"UnknownKind":             with(device, "device_kind", "toaster"),
		"KindNotAString":          with(device, "device_kind", 7),
		"BranchNotAString":        with(device, "branch_id", []string{"b1"}),
		"EmptyBranch":             with(device, "branch_id", ""),
		"ConsoleWithoutMachine":   with(device, "device_kind", "machine"),
		"ReaderWithMachine":       with(device, "device_kind", "nfc_reader", "machine_id", "m1"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := iss.Verify(signRaw(t, jwa.EdDSA(), k.priv, validHeader("k1"), claims))
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
}
