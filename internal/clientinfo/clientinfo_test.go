package clientinfo_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/clientinfo"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	trusted, err := clientinfo.ParsePrefixes([]string{"10.0.0.0/8", " 192.168.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	res := clientinfo.NewResolver(trusted)
	cases := []struct {
		name, remote, xff, want string
	}{
		{"DirectClient", "203.0.113.7:5555", "", "203.0.113.7"},
		{"DirectClientCannotSpoof", "203.0.113.7:5555", "1.2.3.4", "203.0.113.7"},
		{"BehindTrustedProxy", "10.1.2.3:80", "198.51.100.9", "198.51.100.9"},
		{"SpoofedLeftIgnored", "10.1.2.3:80", "6.6.6.6, 198.51.100.9", "198.51.100.9"},
		{"ChainOfProxies", "10.1.2.3:80", "198.51.100.9, 192.168.1.20", "198.51.100.9"},
		{"GarbageHopStops", "10.1.2.3:80", "198.51.100.9, junk", "10.1.2.3"},
		{"IPv6", "[2001:db8::1]:443", "", "2001:db8::1"},
		{"MappedIPv4", "[::ffff:203.0.113.7]:1", "", "203.0.113.7"},
		{"NoPort", "203.0.113.8", "", "203.0.113.8"},
		{"Unparseable", "pipe", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = c.remote
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := res.Resolve(r).IP; got != c.want {
				t.Fatalf("IP = %q, want %q", got, c.want)
			}
		})
	}

	t.Run("MiddlewareStoresInfoAndBoundsUserAgent", func(t *testing.T) {
		t.Parallel()
		var got clientinfo.Info
		h := res.Middleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got = clientinfo.From(r.Context())
		}))
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "203.0.113.7:1"
		r.Header.Set("User-Agent", strings.Repeat("x", 2000))
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got.IP != "203.0.113.7" || len(got.UserAgent) != 512 {
			t.Fatalf("info = %q, %d", got.IP, len(got.UserAgent))
		}
	})

	t.Run("BadPrefix", func(t *testing.T) {
		t.Parallel()
		if _, err := clientinfo.ParsePrefixes([]string{"10.0.0.1"}); err == nil {
			t.Fatal("a bare address was accepted as a prefix")
		}
	})
}
