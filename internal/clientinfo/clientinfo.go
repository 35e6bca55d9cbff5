// Package clientinfo works out who is on the other end of a request: the
// client's IP address (seeing through trusted load balancers) and user
// agent, for rate limits, sessions and the audit trail.
package clientinfo

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Info describes the client of one request.
type Info struct {
	IP        string
	UserAgent string
}

type ctxKey struct{}

// With returns ctx carrying info.
func With(ctx context.Context, info Info) context.Context {
	return context.WithValue(ctx, ctxKey{}, info)
}

// From returns the client info in ctx (zero outside a request).
func From(ctx context.Context) Info {
	info, _ := ctx.Value(ctxKey{}).(Info)
	return info
}

// maxUserAgent bounds what is kept of a User-Agent header.
const maxUserAgent = 512

// Resolver derives Info from requests.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver trusts X-Forwarded-For only from the given proxy networks.
func NewResolver(trustedProxies []netip.Prefix) *Resolver {
	return &Resolver{trusted: trustedProxies}
}

// ParsePrefixes parses CIDR strings (already validated by config).
func ParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Resolve returns the client of r. The connection's address is the client
// unless it is a trusted proxy; then X-Forwarded-For is read from the right,
// skipping trusted proxies, and the first address not ours is the client.
// Reading from the right matters: a client can put anything on the left.
func (res *Resolver) Resolve(r *http.Request) Info {
	ua := r.UserAgent()
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	remote := remoteAddr(r.RemoteAddr)
	ip := remote
	if remote.IsValid() && res.isTrusted(remote) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			ip = hop.Unmap()
			if !res.isTrusted(ip) {
				break
			}
		}
	}
	info := Info{UserAgent: ua}
	if ip.IsValid() {
		info.IP = ip.String()
	}
	return info
}

func (res *Resolver) isTrusted(ip netip.Addr) bool {
	for _, p := range res.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func remoteAddr(addr string) netip.Addr {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// Middleware stores the client info of every request in its context.
func (res *Resolver) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(With(r.Context(), res.Resolve(r))))
	})
}
