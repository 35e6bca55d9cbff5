package ticket

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

func TestTickets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	member := auth.Principal{UserID: uuid.Must(uuid.NewV7()), SessionID: uuid.Must(uuid.NewV7()).String(), Role: token.RoleMember}
	deviceID := uuid.Must(uuid.NewV7())
	console := auth.Principal{UserID: deviceID, SessionID: uuid.Must(uuid.NewV7()).String(), Role: token.RoleDevice,
		Device: &auth.Device{ID: deviceID, BranchID: uuid.Must(uuid.NewV7()), Kind: auth.DeviceMachine, MachineID: uuid.Must(uuid.NewV7())}}

	t.Run("RedeemedOnceForWhoItWasIssuedTo", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
		s := NewStore(r.Client, r.Prefix, Options{Now: func() time.Time { return now }})
		for name, p := range map[string]auth.Principal{"Member": member, "Device": console} {
			t.Run(name, func(t *testing.T) {
				tk, expires, err := s.Issue(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				if len(tk) != ticketLen || !expires.Equal(now.Add(DefaultTTL)) {
					t.Fatalf("ticket %q expires %v", tk, expires)
				}
				got, err := s.Redeem(ctx, tk)
				if err != nil {
					t.Fatal(err)
				}
				if got.UserID != p.UserID || got.SessionID != p.SessionID || got.Role != p.Role {
					t.Fatalf("redeemed %+v, want %+v", got, p)
				}
				if (got.Device == nil) != (p.Device == nil) || (p.Device != nil && *got.Device != *p.Device) {
					t.Fatalf("redeemed device %+v, want %+v", got.Device, p.Device)
				}
				if _, err := s.Redeem(ctx, tk); !errors.Is(err, ErrInvalid) {
					t.Fatalf("second Redeem = %v, want ErrInvalid", err)
				}
			})
		}
	})

	t.Run("StoredHashedOnly", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		tk, _, err := s.Issue(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := r.Client.Keys(ctx, r.Prefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || !strings.HasPrefix(keys[0], r.Prefix+"ws-ticket:") || strings.Contains(keys[0], tk) {
			t.Fatalf("keys = %q for ticket %q", keys, tk)
		}
		ttl, err := r.Client.PTTL(ctx, keys[0]).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > DefaultTTL {
			t.Fatalf("TTL = %v, want (0, %v]", ttl, DefaultTTL)
		}
	})

	t.Run("Expires", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{TTL: 50 * time.Millisecond})
		tk, _, err := s.Issue(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		// Redis expires the key on its own clock: poll until it has.
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := r.Client.Exists(ctx, s.key(hashOf(mustDecode(t, tk)))).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("ticket never expired")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := s.Redeem(ctx, tk); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Redeem after expiry = %v, want ErrInvalid", err)
		}
	})

	t.Run("ConcurrentRedeemsHaveOneWinner", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		tk, _, err := s.Issue(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 8 {
			wg.Go(func() {
				if _, err := s.Redeem(ctx, tk); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d redeems won, want 1", wins)
		}
	})

	t.Run("RejectsMalformed", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		for _, tk := range []string{"", "short", strings.Repeat("A", ticketLen+1), strings.Repeat("!", ticketLen), strings.Repeat("A", ticketLen)} {
			if _, err := s.Redeem(ctx, tk); !errors.Is(err, ErrInvalid) {
				t.Errorf("Redeem(%q) = %v, want ErrInvalid", tk, err)
			}
		}
	})

	t.Run("RefusesIncompletePrincipal", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		for _, p := range []auth.Principal{{}, {UserID: member.UserID, Role: token.RoleMember}, {UserID: member.UserID, SessionID: "s"}} {
			if _, _, err := s.Issue(ctx, p); err == nil {
				t.Errorf("Issue(%+v) succeeded", p)
			}
		}
	})

	t.Run("RedisDown", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		tk, _, err := s.Issue(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := s.Issue(cancelled, member); err == nil {
			t.Error("Issue on a cancelled context succeeded")
		}
		if _, err := s.Redeem(cancelled, tk); err == nil || errors.Is(err, ErrInvalid) {
			t.Errorf("Redeem on a cancelled context = %v, want a store error", err)
		}
	})

	t.Run("CorruptStoredValue", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		s := NewStore(r.Client, r.Prefix, Options{})
		tk, _, err := s.Issue(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Client.Set(ctx, s.key(hashOf(mustDecode(t, tk))), "{not json", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Redeem(ctx, tk); err == nil || errors.Is(err, ErrInvalid) {
			t.Fatalf("Redeem of a corrupt value = %v, want a decoding error", err)
		}
	})
}

func mustDecode(t testing.TB, tk string) []byte {
	t.Helper()
	raw, err := encoding.DecodeString(tk)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
