package push_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/push"
)

type testBundle struct {
	fcm    *devstack.FCM
	client *push.Client
}

// setup starts the FCM stand-in of cmd/nxg-dev and a client configured for
// it the way the dev server configures one.
func setup(t *testing.T) *testBundle {
	t.Helper()
	f, err := devstack.StartFCM(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("StartFCM: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	c, err := push.New(context.Background(), push.Config{ProjectID: f.ProjectID(), Endpoint: f.Endpoint()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testBundle{fcm: f, client: c}
}

func TestSend(t *testing.T) {
	ctx := context.Background()

	t.Run("Delivered", func(t *testing.T) {
		b := setup(t)
		id, err := b.client.Send(ctx, push.Message{
			Token: "tok-1", Title: "Workout plan ready", Body: "Your 4-day plan is waiting",
			Data: map[string]string{"plan_id": "p1", "screen": "plans"},
		})
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		msgs := b.fcm.Messages()
		if len(msgs) != 1 {
			t.Fatalf("FCM received %d messages, want 1", len(msgs))
		}
		m := msgs[0]
		if id != m.Name || !strings.HasPrefix(id, "projects/"+b.fcm.ProjectID()+"/messages/") {
			t.Fatalf("Send returned %q, FCM named it %q; want the same projects/.../messages/ id", id, m.Name)
		}
		if m.Token != "tok-1" || m.Title != "Workout plan ready" || m.Body != "Your 4-day plan is waiting" ||
			m.Data["plan_id"] != "p1" || m.Data["screen"] != "plans" || m.ValidateOnly {
			t.Fatalf("FCM received %+v", m)
		}
	})

	t.Run("DataOnly", func(t *testing.T) {
		// Without a title or body no notification block is sent, so the app
		// handles the message silently.
		b := setup(t)
		if _, err := b.client.Send(ctx, push.Message{Token: "tok-2", Data: map[string]string{"sync": "1"}}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		m := b.fcm.Messages()[0]
		if strings.Contains(string(m.Raw), "notification") || m.Data["sync"] != "1" {
			t.Fatalf("data-only message sent as %s", m.Raw)
		}
	})

	t.Run("Unregistered", func(t *testing.T) {
		b := setup(t)
		_, err := b.client.Send(ctx, push.Message{Token: devstack.InvalidTokenPrefix + "gone", Title: "t"})
		if !errors.Is(err, push.ErrUnregistered) {
			t.Fatalf("Send to a dead token = %v, want ErrUnregistered", err)
		}
		if errors.Is(err, push.ErrInvalidMessage) {
			t.Fatalf("a dead token was also classified as an invalid message: %v", err)
		}
		if got := b.fcm.Messages(); len(got) != 1 || got[0].Status != 404 {
			t.Fatalf("FCM saw %+v, want one refused message", got)
		}
	})

	t.Run("InvalidMessage", func(t *testing.T) {
		b := setup(t)
		_, err := b.client.Send(ctx, push.Message{Token: "tok-3", Data: map[string]string{"from": "x"}})
		if !errors.Is(err, push.ErrInvalidMessage) || errors.Is(err, push.ErrUnregistered) {
			t.Fatalf("Send with a reserved data key = %v, want ErrInvalidMessage only", err)
		}
	})

	t.Run("EmptyToken", func(t *testing.T) {
		b := setup(t)
		if _, err := b.client.Send(ctx, push.Message{Title: "t"}); err == nil {
			t.Fatal("Send without a token succeeded")
		}
		if n := len(b.fcm.Messages()); n != 0 {
			t.Fatalf("a message without a token reached FCM (%d messages)", n)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		// A transport failure is neither a dead token nor a bad message: the
		// caller should retry later. (The SDK itself retries connection errors
		// with backoff until the context ends.)
		b := setup(t)
		endpoint := b.fcm.Endpoint()
		if err := b.fcm.Close(); err != nil {
			t.Fatal(err)
		}
		c, err := push.New(ctx, push.Config{ProjectID: b.fcm.ProjectID(), Endpoint: endpoint})
		if err != nil {
			t.Fatal(err)
		}
		sendCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err = c.Send(sendCtx, push.Message{Token: "tok-4", Title: "t"})
		if err == nil || errors.Is(err, push.ErrUnregistered) || errors.Is(err, push.ErrInvalidMessage) {
			t.Fatalf("Send to a stopped server = %v, want a retryable error", err)
		}
	})
}

func TestNew(t *testing.T) {
	ctx := context.Background()
	if _, err := push.New(ctx, push.Config{Endpoint: "http://127.0.0.1:1/v1"}); err == nil || !strings.Contains(err.Error(), "project id") {
		t.Fatalf("New with an endpoint but no project = %v, want an error naming the project id", err)
	}
	missing := filepath.Join(t.TempDir(), "no-such-service-account.json")
	if _, err := push.New(ctx, push.Config{ProjectID: "p", CredentialsFile: missing}); err == nil {
		t.Fatal("New with a missing credentials file succeeded, want the error at start-up")
	}
}
