package server

import (
	"net/http"
)

// newWebSocketHandler serves GET /ws. SCAFFOLD: being built.
func newWebSocketHandler(opts Options, sessions *gymSessionService, machines *machineService, guard *streamGuard) http.Handler {
	return http.NotFoundHandler()
}
