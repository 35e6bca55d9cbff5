package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

func newTestAuthenticator(t *testing.T) (*Authenticator, *token.Issuer, *session.Store) {
	t.Helper()
	ring, err := token.ParseKeyRing([]byte(testkit.AuthEnv(t)["NXG_JWT_KEYS"]))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := token.NewIssuer(token.IssuerConfig{Keys: ring, Issuer: "https://auth.test", Audience: "auth-test"})
	if err != nil {
		t.Fatal(err)
	}
	r := testkit.NewRedis(t)
	sessions := session.NewStore(r.Client, r.Prefix, session.Options{})
	return NewAuthenticator(tokens, sessions), tokens, sessions
}

func TestAuthenticateDevices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	authn, tokens, sessions := newTestAuthenticator(t)

	signIn := func(t *testing.T, d Device) string {
		t.Helper()
		sess, _, err := sessions.Create(ctx, d.ID.String(), string(token.RoleDevice), "console", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := tokens.IssueDevice(d.ID.String(), sess.ID, d.Claims())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	for name, d := range map[string]Device{
		"Console": {ID: uuid.Must(uuid.NewV7()), BranchID: uuid.Must(uuid.NewV7()), Kind: DeviceMachine, MachineID: uuid.Must(uuid.NewV7())},
		"Reader":  {ID: uuid.Must(uuid.NewV7()), BranchID: uuid.Must(uuid.NewV7()), Kind: DeviceNFCReader},
		"Kiosk":   {ID: uuid.Must(uuid.NewV7()), BranchID: uuid.Must(uuid.NewV7()), Kind: DeviceKiosk},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := authn.Authenticate(ctx, "Bearer "+signIn(t, d))
			if err != nil {
				t.Fatal(err)
			}
			if !p.IsDevice() || p.IsStaff() || p.IsAdmin() || p.IsMember() || p.UserID != d.ID || p.Device == nil || *p.Device != d {
				t.Fatalf("principal %+v (device %+v), want device %+v", p, p.Device, d)
			}
		})
	}

	t.Run("PersonIsNoDevice", func(t *testing.T) {
		uid := uuid.Must(uuid.NewV7())
		sess, _, err := sessions.Create(ctx, uid.String(), string(token.RoleMember), "phone", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := tokens.Issue(uid.String(), sess.ID, token.RoleMember)
		if err != nil {
			t.Fatal(err)
		}
		p, err := authn.Authenticate(ctx, "Bearer "+tok)
		if err != nil {
			t.Fatal(err)
		}
		if p.IsDevice() || p.Device != nil || !p.IsMember() {
			t.Fatalf("principal %+v", p)
		}
	})

	t.Run("ClaimsThatAreNotUUIDs", func(t *testing.T) {
		// Only a token made with our key outside IssueDevice could carry
		// these; it is refused like any bad token.
		id := uuid.Must(uuid.NewV7())
		sess, _, err := sessions.Create(ctx, id.String(), string(token.RoleDevice), "console", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]token.DeviceClaims{
			"Branch":  {BranchID: "branch-1", Kind: DeviceKiosk},
			"Machine": {BranchID: uuid.NewString(), Kind: DeviceMachine, MachineID: "machine-1"},
		} {
			tok, _, err := tokens.IssueDevice(id.String(), sess.ID, c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = authn.Authenticate(ctx, "Bearer "+tok)
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != apperr.CodeUnauthenticated {
				t.Errorf("%s: Authenticate = %v, want unauthenticated", name, err)
			}
		}
	})

	t.Run("RevokedDeviceRefused", func(t *testing.T) {
		d := Device{ID: uuid.Must(uuid.NewV7()), BranchID: uuid.Must(uuid.NewV7()), Kind: DeviceKiosk}
		tok := signIn(t, d)
		if _, err := sessions.RevokeAll(ctx, d.ID.String(), ""); err != nil {
			t.Fatal(err)
		}
		_, err := authn.Authenticate(ctx, "Bearer "+tok)
		if !errors.Is(err, errSessionEnded) {
			t.Fatalf("Authenticate = %v, want the session-ended error", err)
		}
	})
}
