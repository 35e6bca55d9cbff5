package pagination

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// branchCursor is the shape of a real keyset cursor: the sort key of the
// last row returned.
type branchCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

func TestSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		requested, want int32
	}{
		{0, DefaultSize},
		{-1, DefaultSize},
		{-2147483648, DefaultSize},
		{1, 1},
		{7, 7},
		{MaxSize, MaxSize},
		{MaxSize + 1, MaxSize},
		{500, MaxSize},
		{2147483647, MaxSize},
	} {
		if got := Size(c.requested); got != c.want {
			t.Errorf("Size(%d) = %d, want %d", c.requested, got, c.want)
		}
	}
	// A list with its own default and maximum (the exercise catalogue).
	for requested, want := range map[int32]int32{0: 100, -3: 100, 1: 1, 500: 500, 501: 500} {
		if got := SizeWithin(requested, 100, 500); got != want {
			t.Errorf("SizeWithin(%d, 100, 500) = %d, want %d", requested, got, want)
		}
	}
	if DefaultSize != 50 || MaxSize != 200 {
		t.Errorf("DefaultSize, MaxSize = %d, %d; the API documents 50 and 200", DefaultSize, MaxSize)
	}
}

// requireInvalidToken asserts err is the apperr a client gets for a bad
// page_token.
func requireInvalidToken(t testing.TB, err error) {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error = %T %v, want *apperr.Error", err, err)
	}
	if ae.Code != apperr.CodeInvalidArgument {
		t.Errorf("Code = %v, want CodeInvalidArgument", ae.Code)
	}
	if ae.Field != "page_token" {
		t.Errorf("Field = %q, want page_token", ae.Field)
	}
	if !strings.HasPrefix(ae.Error(), "page_token: ") {
		t.Errorf("Error() = %q, want it to start with the field name", ae.Error())
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		want := branchCursor{Name: "NXG Shoreditch / \"East\" ünïcode", ID: "0190c1d2-7e3a-7b4c-8d5e-6f708192a3b4"}
		token := Encode("branches", want)
		if token == "" {
			t.Fatal("Encode returned an empty token, which Decode would read as the first page")
		}
		// Tokens travel in URLs and JSON unescaped.
		if strings.ContainsAny(token, "+/=\" \n") {
			t.Errorf("token %q is not URL-safe unpadded base64", token)
		}
		var got branchCursor
		ok, err := Decode("branches", token, &got)
		if err != nil || !ok {
			t.Fatalf("Decode = %v, %v; want true, nil", ok, err)
		}
		if got != want {
			t.Fatalf("decoded cursor = %+v, want %+v", got, want)
		}
	})

	t.Run("RoundTripScalar", func(t *testing.T) {
		t.Parallel()
		var got int64
		ok, err := Decode("sessions", Encode("sessions", int64(1<<53)), &got)
		if err != nil || !ok || got != 1<<53 {
			t.Fatalf("Decode = %d, %v, %v; want %d, true, nil", got, ok, err, int64(1<<53))
		}
	})

	t.Run("Deterministic", func(t *testing.T) {
		t.Parallel()
		c := branchCursor{Name: "a", ID: "b"}
		if a, b := Encode("branches", c), Encode("branches", c); a != b {
			t.Fatalf("Encode is not deterministic: %q vs %q", a, b)
		}
	})

	t.Run("EmptyTokenIsFirstPage", func(t *testing.T) {
		t.Parallel()
		got := branchCursor{Name: "untouched"}
		ok, err := Decode("branches", "", &got)
		if ok || err != nil {
			t.Fatalf("Decode(\"\") = %v, %v; want false, nil", ok, err)
		}
		if got.Name != "untouched" {
			t.Errorf("Decode(\"\") wrote the cursor: %+v", got)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		b64 := base64.RawURLEncoding.EncodeToString
		for name, token := range map[string]string{
			"Garbage":             "!!not a token!!",
			"PaddedBase64":        base64.URLEncoding.EncodeToString([]byte(`{"l":"branches","c":{}}x`)),
			"StandardAlphabet":    "+/+/",
			"Base64OfNonJSON":     b64([]byte("hello, world")),
			"Base64OfJSONArray":   b64([]byte(`["branches",{}]`)),
			"AnotherListsToken":   Encode("machines", branchCursor{Name: "x", ID: "y"}),
			"NoListName":          b64([]byte(`{"c":{"n":"x","i":"y"}}`)),
			"MissingCursor":       b64([]byte(`{"l":"branches"}`)),
			"CursorOfAnotherType": b64([]byte(`{"l":"branches","c":"just a string"}`)),
			"TruncatedToken":      Encode("branches", branchCursor{Name: "x", ID: "y"})[:10],
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var c branchCursor
				ok, err := Decode("branches", token, &c)
				if ok {
					t.Fatalf("Decode(%q) = true, want false", token)
				}
				requireInvalidToken(t, err)
			})
		}
	})
}

// FuzzDecode feeds Decode arbitrary tokens: it must never panic, and either
// decode or refuse with the page_token invalid-argument error.
func FuzzDecode(f *testing.F) {
	f.Add(Encode("branches", branchCursor{Name: "NXG Shoreditch", ID: "0190c1d2-7e3a-7b4c-8d5e-6f708192a3b4"}))
	f.Add(Encode("machines", branchCursor{Name: "x", ID: "y"}))
	f.Add(Encode("branches", nil))
	f.Add("")
	f.Add("!!not a token!!")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"l":"branches","c":null}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"l":"branches","c":{"n":1}}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"l":"branches","c":` + strings.Repeat("[", 100) + `}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("\xff\xfe\x00")))
	f.Fuzz(func(t *testing.T, token string) {
		var c branchCursor
		ok, err := Decode("branches", token, &c)
		switch {
		case token == "":
			if ok || err != nil {
				t.Fatalf("Decode(\"\") = %v, %v; want false, nil", ok, err)
			}
		case err != nil:
			if ok {
				t.Fatalf("Decode(%q) = true with error %v", token, err)
			}
			requireInvalidToken(t, err)
		case !ok:
			t.Fatalf("Decode(%q) = false, nil for a non-empty token; want true or an error", token)
		}
	})
}

func TestPage(t *testing.T) {
	t.Parallel()
	cursorOf := func(last int) any { return map[string]int{"n": last} }

	// A short read is the last page: no token.
	rows, token := Page("numbers", []int{1, 2}, 3, cursorOf)
	if len(rows) != 2 || token != "" {
		t.Fatalf("short read = %v, %q; want both rows and no token", rows, token)
	}
	rows, token = Page("numbers", []int{1, 2, 3}, 3, cursorOf)
	if len(rows) != 3 || token != "" {
		t.Fatalf("exactly a page = %v, %q; want all rows and no token", rows, token)
	}

	// The extra row is cut, and the token resumes after the last row kept.
	rows, token = Page("numbers", []int{1, 2, 3, 4}, 3, cursorOf)
	if len(rows) != 3 || rows[2] != 3 || token == "" {
		t.Fatalf("page with more = %v, %q; want three rows and a token", rows, token)
	}
	var cursor map[string]int
	ok, err := Decode("numbers", token, &cursor)
	if err != nil || !ok || cursor["n"] != 3 {
		t.Fatalf("token decodes to %v (%v, %v), want the cursor of row 3", cursor, ok, err)
	}
	if _, err := Decode("letters", token, &cursor); err == nil {
		t.Fatal("the token was accepted by another list")
	}
}
