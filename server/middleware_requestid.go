package server

import (
	"net/http"

	"github.com/nxg-fitness/nxg/internal/requestid"
)

// withRequestID gives every HTTP request an id before anything else runs,
// so every protocol and plain endpoint shares it: a well-formed X-Request-Id
// from a client or proxy is kept (to follow a request across services),
// anything else is replaced. The id is echoed in the response header.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestid.Header)
		if !requestid.Valid(id) {
			id = requestid.New()
		}
		w.Header().Set(requestid.Header, id)
		next.ServeHTTP(w, r.WithContext(requestid.With(r.Context(), id)))
	})
}
