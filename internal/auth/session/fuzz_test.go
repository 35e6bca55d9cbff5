package session

import (
	"testing"
)

// FuzzHashToken feeds arbitrary presented refresh tokens to the parser that
// guards every Refresh: it must never panic, must accept only well-formed
// 256-bit tokens, and must map each accepted token to one stable hash.
func FuzzHashToken(f *testing.F) {
	valid, _ := newToken()
	for _, seed := range []string{valid, "", "x", valid + "=", valid[:len(valid)-1], "Bearer " + valid, "////////////////////////////////////////////"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		h, ok := hashToken(tok)
		if !ok {
			if h != "" {
				t.Fatalf("refused token %q yielded hash %q", tok, h)
			}
			return
		}
		if len(tok) != tokenLen || len(h) != 64 {
			t.Fatalf("accepted %q (len %d) with hash %q", tok, len(tok), h)
		}
		if again, _ := hashToken(tok); again != h {
			t.Fatalf("hash of %q is not stable", tok)
		}
	})
}
