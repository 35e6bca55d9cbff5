package server

import (
	"context"

	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// requestEvent completes e with what the current request says about its
// client (IP, user agent) and its request id, which every audit row of an
// RPC records.
func requestEvent(ctx context.Context, e audit.Event) audit.Event {
	client := clientinfo.From(ctx)
	e.IP, e.UserAgent, e.RequestID = client.IP, client.UserAgent, requestid.From(ctx)
	return e
}
