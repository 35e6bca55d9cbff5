package integrations

import (
	"net/http"
	"testing"
)

func TestParseErrorBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body      string
		code, msg string
	}{
		{`{"error":{"code":"invalid_request","message":"days_per_week must be 1..7"}}`, "invalid_request", "days_per_week must be 1..7"},
		{`{"error":{"code":"rate_limited"}}`, "rate_limited", ""},
		{`{"error":"flat"}`, "", `{"error":"flat"}`},
		{"upstream\tconnect error\n", "", "upstream connect error"},
		{"", "", "Service Unavailable"},
		{"\xff\xfe", "", "\uFFFD"}, // a run of invalid bytes becomes one replacement,
	}
	for _, tt := range tests {
		code, msg := parseErrorBody(http.StatusServiceUnavailable, []byte(tt.body))
		if code != tt.code || msg != tt.msg {
			t.Errorf("parseErrorBody(%q) = %q, %q; want %q, %q", tt.body, code, msg, tt.code, tt.msg)
		}
	}
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{`{"error":{"code":"x","message":"y"}}`, `<html>`, "", "\x00\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg := parseErrorBody(http.StatusBadGateway, body)
		for _, s := range []string{code, msg} {
			for _, r := range s {
				if r < ' ' || r == 0x7f {
					t.Fatalf("control character %q in %q", r, s)
				}
			}
		}
		if len([]rune(msg)) > maxMessageRunes+1 {
			t.Fatalf("message of %d runes", len([]rune(msg)))
		}
	})
}
