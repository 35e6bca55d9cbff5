// Package integrations is the one resilient HTTP client every outside
// service (the workout planner, the meal detector, the meal planner, and
// later the 3D scanner) is called through. The typed clients in its
// subpackages build requests and validate answers; this package decides how
// hard to try.
//
// One logical call (Client.Do) is a sequence of attempts:
//
//   - Every attempt has its own timeout (Config.Timeout) and carries the same
//     Idempotency-Key header, so a service that received an attempt whose
//     answer we lost replays its first response instead of doing the work
//     twice.
//   - Only failures that another attempt may cure are retried within the
//     call: connection errors and timeouts, 429, 502, 503 and 504. The wait
//     is exponential backoff with full jitter (a random wait between zero and
//     the exponential ceiling), so many callers that failed together do not
//     retry together. A Retry-After header on 429 or 503 replaces the backoff
//     when it is at most Config.MaxRetryAfter; a longer one ends the call at
//     once with a retryable *Error carrying RetryAfter, because a River job
//     snoozing is cheaper than a goroutine sleeping.
//   - Every attempt passes through the service's circuit breaker
//     (sony/gobreaker). While it is open no request is made at all: the call
//     fails fast with an *Error wrapping ErrCircuitOpen. A call whose own
//     failure opens the breaker stops retrying and returns that failure with
//     RetryAfter set to the time until the probe. After Config.OpenTimeout one probe is let through
//     (half-open); its success closes the breaker, its failure reopens it.
//
// What counts against the breaker is what says the service is unhealthy:
//
//	outcome of an attempt                   retried in the call  breaker    Error.Retryable
//	connection error, attempt timeout       yes                  failure    true
//	429, 502, 503, 504                      yes                  failure    true
//	500 and other 5xx (except 501)          no                   failure    true
//	501                                     no                   failure    false
//	2xx with an oversized or undecodable    no                   failure    false
//	  body, or an unexpected 1xx/3xx
//	other 4xx (400, 401, 404, 422, ...)     no                   success    false
//	the caller's context ended              no                   ignored    true
//
// A 4xx other than 429 means the service is up and judged our request: it
// is our fault, so it must not open the breaker, and it proves the service
// is reachable, so it counts as a success (a half-open probe answered with
// 400 closes the breaker). A caller giving up says nothing about the
// service and is left out of the breaker's counts.
//
// Each call is recorded in Prometheus metrics named nxg_integration_*; see
// NewMetrics. A Set groups the clients so /readyz can show their breaker
// states as information.
package integrations
