package server

import (
	"encoding/json"
	"strings"
	"testing"

	"buf.build/go/protovalidate"
	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// FuzzDecodeWebSocketMessage feeds arbitrary client messages to the
// decoder: it must never panic, must refuse with invalid_argument naming a
// field, and what it accepts must be exactly one well-formed mode.
func FuzzDecodeWebSocketMessage(f *testing.F) {
	for _, seed := range []string{
		`{"subscribe":"machines","branch_id":"0199d1a4-8d3b-7c2e-9f10-2b3c4d5e6f70"}`,
		`{"subscribe":"session"}`,
		`{"report_activity":{"heartbeat":{}}}`,
		`{"report_activity":{"set":{"clientSetId":"a","reps":10,"weightKg":50}}}`,
		`{"report_activity":{"status":{"fault":true,"detail":"belt"}}}`,
		`{"subscribe":"session","subscribe":"session"}`,
		`{"subscribe":"machines"}`,
		`{"report_activity":{},"subscribe":"session"}`,
		`{"Subscribe":"session"}`,
		`{"subscribe":"session"} {}`,
		`[]`, `null`, `"x"`, `{`, ``, `{"subscribe":1}`,
		`{"report_activity":{"set":{"reps":-1}}}`,
		`{"report_activity":{"heartbeat":{},"set":{}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decodeWebSocketMessage(data)
		if err != nil {
			requireInvalidArgument(t, err)
			return
		}
		// Whatever is accepted is one JSON object.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(data, &top); err != nil {
			t.Fatalf("accepted %q, which is not one JSON object: %v", data, err)
		}
		switch msg.kind {
		case wsSubscribeMachines:
			var branch string
			if err := json.Unmarshal(top["branch_id"], &branch); err != nil || strings.ToLower(branch) != msg.branchID.String() {
				t.Fatalf("machines subscription to %v from %q", msg.branchID, data)
			}
			if msg.reportJSON != nil {
				t.Fatalf("subscription with a report from %q", data)
			}
		case wsSubscribeSession:
			if msg.branchID != uuid.Nil || msg.reportJSON != nil {
				t.Fatalf("session subscription with extras %+v from %q", msg, data)
			}
		case wsReportActivity:
			if !json.Valid(msg.reportJSON) {
				t.Fatalf("report body %q is not JSON", msg.reportJSON)
			}
			req, err := parseReportActivity(msg.reportJSON)
			if err != nil {
				requireInvalidArgument(t, err)
				return
			}
			if req.GetActivity() == nil {
				t.Fatalf("accepted a report without an activity from %q", data)
			}
			if err := protovalidate.Validate(req); err != nil {
				t.Fatalf("accepted an invalid report from %q: %v", data, err)
			}
		default:
			t.Fatalf("accepted %q with no mode", data)
		}
	})
}

func requireInvalidArgument(t *testing.T, err error) {
	t.Helper()
	appErr, ok := apperr.As(err)
	if !ok || appErr.Code != apperr.CodeInvalidArgument {
		t.Fatalf("error %v is not invalid_argument", err)
	}
	if appErr.Field == "" || appErr.Message == "" {
		t.Fatalf("error %v names no field or problem", err)
	}
}
