package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/push"
)

func startFCM(t *testing.T) *devstack.FCM {
	t.Helper()
	f, err := devstack.StartFCM(testLogger(t))
	if err != nil {
		t.Fatalf("StartFCM: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("FCM.Close: %v", err)
		}
	})
	return f
}

// TestFCM sends through the production push client (the Firebase Admin SDK)
// and checks what the fake answered and recorded.
func TestFCM(t *testing.T) {
	ctx := context.Background()
	f := startFCM(t)
	if !strings.HasSuffix(f.Endpoint(), "/v1") || f.ProjectID() == "" {
		t.Fatalf("Endpoint() = %q, ProjectID() = %q; want a /v1 root and a project", f.Endpoint(), f.ProjectID())
	}
	client, err := push.New(ctx, push.Config{ProjectID: f.ProjectID(), Endpoint: f.Endpoint()})
	if err != nil {
		t.Fatalf("push.New: %v", err)
	}

	id, err := client.Send(ctx, push.Message{
		Token: "device-1", Title: "Machine free", Body: "Leg press 3 is free now",
		Data: map[string]string{"machine_id": "m3"},
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !strings.HasPrefix(id, "projects/"+f.ProjectID()+"/messages/") {
		t.Fatalf("message id = %q, want projects/%s/messages/...", id, f.ProjectID())
	}

	_, err = client.Send(ctx, push.Message{Token: devstack.InvalidTokenPrefix + "uninstalled", Title: "t"})
	if !errors.Is(err, push.ErrUnregistered) {
		t.Fatalf("Send to an invalid- token = %v, want ErrUnregistered", err)
	}

	// A reserved data key is the caller's bug, not a dead token.
	_, err = client.Send(ctx, push.Message{Token: "device-1", Data: map[string]string{"google.sent_time": "1"}})
	if !errors.Is(err, push.ErrInvalidMessage) || errors.Is(err, push.ErrUnregistered) {
		t.Fatalf("Send with a reserved data key = %v, want ErrInvalidMessage and not ErrUnregistered", err)
	}

	msgs := f.Messages()
	if len(msgs) != 3 {
		t.Fatalf("recorded %d messages, want 3: %+v", len(msgs), msgs)
	}
	ok, dead, bad := msgs[0], msgs[1], msgs[2]
	if ok.Name != id || ok.Status != http.StatusOK || ok.Token != "device-1" || ok.Title != "Machine free" ||
		ok.Body != "Leg press 3 is free now" || ok.Data["machine_id"] != "m3" || ok.Project != f.ProjectID() || ok.ValidateOnly {
		t.Fatalf("first message recorded as %+v", ok)
	}
	var raw map[string]any
	if err := json.Unmarshal(ok.Raw, &raw); err != nil || raw["token"] != "device-1" {
		t.Fatalf("Raw = %s (%v), want the message object as sent", ok.Raw, err)
	}
	if dead.Status != http.StatusNotFound || dead.Name != "" || dead.Token != "invalid-uninstalled" {
		t.Fatalf("dead-token message recorded as %+v, want status 404 and no name", dead)
	}
	if bad.Status != http.StatusBadRequest {
		t.Fatalf("reserved-key message recorded with status %d, want 400", bad.Status)
	}

	// A client configured for another project is refused like Google does.
	other, err := push.New(ctx, push.Config{ProjectID: "someone-else", Endpoint: f.Endpoint()})
	if err != nil {
		t.Fatalf("push.New: %v", err)
	}
	_, err = other.Send(ctx, push.Message{Token: "device-1", Title: "t"})
	if err == nil || errors.Is(err, push.ErrUnregistered) || errors.Is(err, push.ErrInvalidMessage) ||
		!strings.Contains(err.Error(), "cloudmessaging.messages.create") {
		t.Fatalf("Send to another project = %v, want Google's permission error", err)
	}
	if n := len(f.Messages()); n != 3 {
		t.Fatalf("a request for another project was recorded: %d messages", n)
	}
}

// TestFCMWireFormat checks the fake's answers at the HTTP level, where the
// Admin SDK's own validation cannot get in the way.
func TestFCMWireFormat(t *testing.T) {
	f := startFCM(t)
	url := f.Endpoint() + "/projects/" + f.ProjectID() + "/messages:send"

	for _, tc := range []struct {
		name       string
		body       string
		wantStatus int
		wantCode   string // google.rpc status
		wantFCM    string // FcmError errorCode
	}{
		{"Token", `{"message":{"token":"abc","notification":{"title":"T","body":"B"}}}`, 200, "", ""},
		{"TopicCamelCaseValidateOnly", `{"validateOnly":true,"message":{"topic":"news"}}`, 200, "", ""},
		{"Unregistered", `{"message":{"token":"invalid-1"}}`, 404, "NOT_FOUND", "UNREGISTERED"},
		{"NoTarget", `{"message":{"data":{"a":"b"}}}`, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"},
		{"TwoTargets", `{"message":{"token":"a","topic":"b"}}`, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"},
		{"NonStringData", `{"message":{"token":"a","data":{"n":1}}}`, 400, "INVALID_ARGUMENT", ""},
		{"TooBig", `{"message":{"token":"a","data":{"x":"` + strings.Repeat("y", 5000) + `"}}}`, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"},
		{"NotJSON", `{`, 400, "INVALID_ARGUMENT", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(url, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			var got struct {
				Name  string `json:"name"`
				Error struct {
					Code    int    `json:"code"`
					Status  string `json:"status"`
					Details []struct {
						Type      string `json:"@type"`
						ErrorCode string `json:"errorCode"`
					} `json:"details"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("response is not JSON: %v: %s", err, body)
			}
			if tc.wantStatus == 200 {
				if !strings.HasPrefix(got.Name, "projects/"+f.ProjectID()+"/messages/") {
					t.Fatalf("name = %q, want projects/%s/messages/...", got.Name, f.ProjectID())
				}
				return
			}
			if got.Error.Code != tc.wantStatus || got.Error.Status != tc.wantCode {
				t.Fatalf("error = %d %s, want %d %s", got.Error.Code, got.Error.Status, tc.wantStatus, tc.wantCode)
			}
			fcmCode := ""
			for _, d := range got.Error.Details {
				if d.Type == "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
					fcmCode = d.ErrorCode
				}
			}
			if fcmCode != tc.wantFCM {
				t.Fatalf("FcmError errorCode = %q, want %q", fcmCode, tc.wantFCM)
			}
		})
	}

	msgs := f.Messages()
	if len(msgs) != 6 {
		t.Fatalf("recorded %d messages, want the 6 that were valid JSON with valid data types", len(msgs))
	}
	if !msgs[1].ValidateOnly || msgs[1].Topic != "news" {
		t.Fatalf("second message = %+v, want a validate-only message to topic news", msgs[1])
	}

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET messages:send = %d, want 405", resp.StatusCode)
	}
}
