package clientinfo_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/nxg-fitness/nxg/internal/clientinfo"
)

// FuzzResolve feeds arbitrary X-Forwarded-For headers and remote addresses:
// resolving must never panic and must always yield either nothing or a
// valid IP address, so logs and rate-limit keys never carry raw header text.
func FuzzResolve(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.1:80", "198.51.100.9"},
		{"10.0.0.1:80", "6.6.6.6, 198.51.100.9, 10.0.0.2"},
		{"[2001:db8::1]:1", "::ffff:1.2.3.4"},
		{"junk", "\n\r,,,"},
	} {
		f.Add(s[0], s[1])
	}
	trusted, _ := clientinfo.ParsePrefixes([]string{"10.0.0.0/8"})
	res := clientinfo.NewResolver(trusted)
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		r.Header["X-Forwarded-For"] = []string{xff}
		ip := res.Resolve(r).IP
		if ip == "" {
			return
		}
		if _, err := netip.ParseAddr(ip); err != nil {
			t.Fatalf("resolved %q from remote %q and X-Forwarded-For %q", ip, remote, xff)
		}
	})
}
