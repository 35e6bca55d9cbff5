package requestid

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/uuid"
)

func TestValid(t *testing.T) {
	t.Parallel()

	t.Run("Accepts", func(t *testing.T) {
		t.Parallel()
		for _, id := range []string{
			"0190c1d2-7e3a-7b4c-8d5e-6f708192a3b4",
			"F47AC10B-58CC-4372-A567-0E02B2C3D479",
			"a",
			"req_42",
			"trace.abc-DEF_123",
			strings.Repeat("x", 64),
		} {
			if !Valid(id) {
				t.Errorf("Valid(%q) = false, want true", id)
			}
		}
	})

	t.Run("Rejects", func(t *testing.T) {
		t.Parallel()
		for name, id := range map[string]string{
			"Empty":          "",
			"TooLong":        strings.Repeat("x", 65),
			"LongUUIDs":      New() + New(),
			"Space":          "req 42",
			"LeadingSpace":   " req42",
			"Tab":            "req\t42",
			"Newline":        "req42\nlevel=ERROR msg=forged",
			"CarriageReturn": "req42\r",
			"DoubleQuote":    `req"42`,
			"SingleQuote":    "req'42",
			"Backslash":      `req\42`,
			"Equals":         "a=b",
			"Colon":          "a:b",
			"Slash":          "a/b",
			"NUL":            "req\x0042",
			"Escape":         "\x1b[31mred",
			"NonASCII":       "réq",
			"InvalidUTF8":    "req\xff",
			"Fullwidth":      "ｒｅｑ",
		} {
			if Valid(id) {
				t.Errorf("%s: Valid(%q) = true, want false", name, id)
			}
		}
	})
}

func TestNew(t *testing.T) {
	t.Parallel()

	t.Run("IsUUIDv7", func(t *testing.T) {
		t.Parallel()
		before := time.Now().Add(-time.Second)
		id := New()
		after := time.Now().Add(time.Second)
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("New() = %q, not a UUID: %v", id, err)
		}
		if u.Version() != 7 {
			t.Errorf("New() = %s has version %d, want 7", id, u.Version())
		}
		if u.Variant() != uuid.RFC4122 {
			t.Errorf("New() = %s has variant %v, want RFC 4122", id, u.Variant())
		}
		if id != strings.ToLower(id) || len(id) != 36 {
			t.Errorf("New() = %q, want the canonical lower-case 36-character form", id)
		}
		sec, nsec := u.Time().UnixTime()
		if ts := time.Unix(sec, nsec); ts.Before(before) || ts.After(after) {
			t.Errorf("New() = %s carries time %v, want about now (%v)", id, ts, time.Now())
		}
		if !Valid(id) {
			t.Errorf("Valid(New()) = false for %q", id)
		}
	})

	t.Run("SuccessiveIDsSortAndDiffer", func(t *testing.T) {
		t.Parallel()
		ids := make([]string, 2000)
		for i := range ids {
			ids[i] = New()
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Fatalf("ids[%d] = %s does not sort after ids[%d] = %s", i, ids[i], i-1, ids[i-1])
			}
		}
		if !slices.IsSorted(ids) {
			t.Fatal("ids are not sorted")
		}
	})
}

func TestContext(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		id := New()
		ctx := With(context.Background(), id)
		if got := From(ctx); got != id {
			t.Fatalf("From(With(ctx, %q)) = %q", id, got)
		}
		// Derived contexts keep it.
		child, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if got := From(child); got != id {
			t.Fatalf("From(child) = %q, want %q", got, id)
		}
		// The innermost With wins.
		if got := From(With(ctx, "inner")); got != "inner" {
			t.Fatalf("From(With(With(ctx, id), inner)) = %q, want inner", got)
		}
		if got := From(ctx); got != id {
			t.Fatalf("outer context changed to %q", got)
		}
	})

	t.Run("AbsentIsEmpty", func(t *testing.T) {
		t.Parallel()
		if got := From(context.Background()); got != "" {
			t.Fatalf("From(Background) = %q, want \"\"", got)
		}
		// Another package's key of the same shape is not ours.
		type ctxKey struct{}
		ctx := context.WithValue(context.Background(), ctxKey{}, "forged")
		if got := From(ctx); got != "" {
			t.Fatalf("From(ctx with another key) = %q, want \"\"", got)
		}
	})
}

// FuzzValid checks that an id Valid accepts is safe to write into a log line
// or a header: short, printable ASCII without spaces, quotes or separators.
func FuzzValid(f *testing.F) {
	for _, seed := range []string{
		"", "a", New(), "req_42", "trace.abc-DEF_123", strings.Repeat("x", 64), strings.Repeat("x", 65),
		"a b", "a\nb", "a\rb", "a\tb", `"`, "'", "\x00", "\x7f", "é", "\xff", "ｒｅｑ", "\u2028", "a=b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !Valid(id) {
			return
		}
		if id == "" || len(id) > 64 {
			t.Fatalf("Valid accepted %q of length %d", id, len(id))
		}
		for i := 0; i < len(id); i++ {
			b := id[i]
			if b >= 0x80 || b < 0x20 || b == 0x7f || b == ' ' {
				t.Fatalf("Valid accepted %q with byte %#x at %d", id, b, i)
			}
		}
		for _, r := range id {
			if unicode.IsControl(r) || unicode.IsSpace(r) || strings.ContainsRune(`"'\=:;,/<>`+"`", r) {
				t.Fatalf("Valid accepted %q containing %q", id, r)
			}
		}
	})
}
