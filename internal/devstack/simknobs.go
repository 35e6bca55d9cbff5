package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SimKnobs make a simulator of an outside service misbehave the ways real
// services do, so tests and developers can see how NXG copes. The zero value
// is a healthy service.
type SimKnobs struct {
	// Latency is added to every response.
	Latency time.Duration
	// ErrorRate is the share (0..1) of requests answered with 503
	// unavailable. Which requests fail follows a pseudo-random sequence
	// seeded by the simulator's name and restarted by SetKnobs, so a test
	// sees the same failures on every run.
	ErrorRate float64
	// RateLimitBurst makes the next that many requests answer 429
	// rate_limited with Retry-After: RetryAfterSeconds.
	RateLimitBurst int
	// RetryAfterSeconds is the Retry-After of the burst; 0 means 1.
	RetryAfterSeconds int
	// Outage makes every request answer 503 unavailable.
	Outage bool
	// Absurd makes the service answer 200 with physically absurd values, for
	// tests of the clients' validation.
	Absurd bool
}

// simKnobsJSON is the JSON of SimKnobs on /_sim/knobs, with the latency as a
// Go duration string ("250ms") so scripts can write it by hand.
type simKnobsJSON struct {
	Latency           string  `json:"latency"`
	ErrorRate         float64 `json:"error_rate"`
	RateLimitBurst    int     `json:"rate_limit_burst"`
	RetryAfterSeconds int     `json:"retry_after_seconds"`
	Outage            bool    `json:"outage"`
	Absurd            bool    `json:"absurd"`
}

// MarshalJSON writes the knobs as /_sim/knobs shows them.
func (k SimKnobs) MarshalJSON() ([]byte, error) {
	return json.Marshal(simKnobsJSON{
		Latency: k.Latency.String(), ErrorRate: k.ErrorRate, RateLimitBurst: k.RateLimitBurst,
		RetryAfterSeconds: k.RetryAfterSeconds, Outage: k.Outage, Absurd: k.Absurd,
	})
}

// UnmarshalJSON reads the knobs as PUT /_sim/knobs takes them; missing
// fields are zero, so a PUT replaces every knob.
func (k *SimKnobs) UnmarshalJSON(b []byte) error {
	var j simKnobsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var latency time.Duration
	if j.Latency != "" {
		var err error
		if latency, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	*k = SimKnobs{
		Latency: latency, ErrorRate: j.ErrorRate, RateLimitBurst: j.RateLimitBurst,
		RetryAfterSeconds: j.RetryAfterSeconds, Outage: j.Outage, Absurd: j.Absurd,
	}
	return nil
}

// Validate reports a knob out of its range.
func (k SimKnobs) Validate() error {
	switch {
	case k.Latency < 0 || k.Latency > time.Hour:
		return fmt.Errorf("latency %v: want 0..1h", k.Latency)
	case !(k.ErrorRate >= 0 && k.ErrorRate <= 1):
		return fmt.Errorf("error rate %v: want 0..1", k.ErrorRate)
	case k.RateLimitBurst < 0:
		return fmt.Errorf("rate limit burst %d: want 0 or more", k.RateLimitBurst)
	case k.RetryAfterSeconds < 0 || k.RetryAfterSeconds > 86400:
		return fmt.Errorf("retry after %d s: want 0..86400", k.RetryAfterSeconds)
	}
	return nil
}

// simKnobsFromEnv reads the knobs a developer set for the simulator name
// (upper case, for example WORKOUTPLANNER) in NXG_SIM_<NAME>_LATENCY,
// _ERROR_RATE, _OUTAGE and _ABSURD; unset or empty variables leave a knob at
// zero, and a malformed one is an error naming it.
func simKnobsFromEnv(name string, env map[string]string) (SimKnobs, error) {
	var k SimKnobs
	prefix := "NXG_SIM_" + name + "_"
	if v := env[prefix+"LATENCY"]; v != "" {
		d, err := time.ParseDuration(v)
		if err == nil && (d < 0 || d > time.Hour) {
			err = errors.New("out of range")
		}
		if err != nil {
			return k, fmt.Errorf("devstack: %sLATENCY=%q: want a duration 0..1h such as 300ms: %w", prefix, v, err)
		}
		k.Latency = d
	}
	if v := env[prefix+"ERROR_RATE"]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && !(f >= 0 && f <= 1) {
			err = errors.New("out of range")
		}
		if err != nil {
			return k, fmt.Errorf("devstack: %sERROR_RATE=%q: want a number 0..1: %w", prefix, v, err)
		}
		k.ErrorRate = f
	}
	for _, b := range []struct {
		suffix string
		dst    *bool
	}{{"OUTAGE", &k.Outage}, {"ABSURD", &k.Absurd}} {
		if v := env[prefix+b.suffix]; v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return k, fmt.Errorf("devstack: %s%s=%q: want true or false: %w", prefix, b.suffix, v, err)
			}
			*b.dst = on
		}
	}
	return k, nil
}

// SimRequest is one request a simulator received on its API (the /_sim
// endpoints are not recorded).
type SimRequest struct {
	Time           time.Time
	Method         string
	Path           string
	IdempotencyKey string
	APIKey         string
	Body           json.RawMessage
	// Status is what the simulator answered; 0 when the client went away
	// during the added latency.
	Status int
	// Replayed is true when the answer was the stored answer of an earlier
	// request with the same Idempotency-Key and body.
	Replayed bool
}

// apiError is an error answer in the services' format
// {"error":{"code":...,"message":...}}.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: fmt.Sprintf(format, args...)}
}

// simHandler computes a service's answer to a request body that passed auth,
// the knobs and the idempotency check. absurd asks for a 200 with absurd
// values. The value returned is marshalled as the 200 body.
type simHandler func(ctx context.Context, body []byte, absurd bool) (any, *apiError)

// Limits of the simulated services.
const (
	simMaxBody           = 1 << 20
	simIdempotencyTTL    = 24 * time.Hour
	simMaxIdempotencyKey = 128
)

// simulator is the machinery every simulated outside service shares: the
// loopback server, API key check, knobs, request recording and idempotent
// replay. The services embed it and add their routes.
type simulator struct {
	name   string
	apiKey string
	logger *slog.Logger
	srv    *httpServer
	seed   uint64

	mu        sync.Mutex
	knobs     SimKnobs
	burstLeft int
	errSeq    *rand.Rand
	requests  []SimRequest
	replays   map[string]storedAnswer
}

// storedAnswer is the first answer to an Idempotency-Key, kept for replay.
type storedAnswer struct {
	bodyHash [32]byte
	status   int
	body     []byte
	at       time.Time
}

// startSimulator serves routes ("POST /v1/plans" → handler) and the knob
// endpoints on a free loopback port. The API key is fixed per service, like
// the S3 stand-in's credentials, so a developer's notes stay valid across
// restarts.
func startSimulator(name string, logger *slog.Logger, routes map[string]simHandler) (*simulator, error) {
	if logger == nil {
		logger = slog.Default()
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	s := &simulator{
		name:    name,
		apiKey:  "nxg-dev-" + name + "-key",
		logger:  logger.With("stand_in", name),
		seed:    h.Sum64(),
		replays: map[string]storedAnswer{},
	}
	s.errSeq = s.newErrSeq()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /_sim/knobs", s.handleGetKnobs)
	mux.HandleFunc("PUT /_sim/knobs", s.handlePutKnobs)
	for pattern, handler := range routes {
		mux.Handle(pattern, s.serve(handler))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, &apiError{Status: http.StatusNotFound, Code: "not_found", Message: r.Method + " " + r.URL.Path + " is not an endpoint of this service"})
	})
	srv, err := serveHTTP(name, mux, logger)
	if err != nil {
		return nil, err
	}
	s.srv = srv
	logger.Info("started simulator", "stand_in", name, "url", srv.url)
	return s, nil
}

func (s *simulator) newErrSeq() *rand.Rand { return rand.New(rand.NewPCG(s.seed, 0x6e7867)) }

// URL is the service's base URL, for NXG_<NAME>_URL.
func (s *simulator) URL() string { return s.srv.url }

// APIKey is the only X-Api-Key the service accepts, for NXG_<NAME>_API_KEY.
func (s *simulator) APIKey() string { return s.apiKey }

// SetKnobs replaces every knob and restarts the error sequence, so a test
// that sets an error rate sees the same failures on every run. Knobs out of
// range are clamped into it (see SimKnobs.Validate for the ranges).
func (s *simulator) SetKnobs(k SimKnobs) {
	k.ErrorRate = min(max(k.ErrorRate, 0), 1)
	k.Latency = min(max(k.Latency, 0), time.Hour)
	k.RateLimitBurst = max(k.RateLimitBurst, 0)
	k.RetryAfterSeconds = min(max(k.RetryAfterSeconds, 0), 86400)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.knobs = k
	s.burstLeft = k.RateLimitBurst
	s.errSeq = s.newErrSeq()
}

// Knobs returns the current knobs; RateLimitBurst is what is left of the
// burst.
func (s *simulator) Knobs() SimKnobs {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.knobs
	k.RateLimitBurst = s.burstLeft
	return k
}

// Requests returns a copy of every API request received so far, in order.
func (s *simulator) Requests() []SimRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Close stops the simulator.
func (s *simulator) Close() error { return s.srv.close() }

func (s *simulator) handleGetKnobs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Knobs())
}

func (s *simulator) handlePutKnobs(w http.ResponseWriter, r *http.Request) {
	var k SimKnobs
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &k)
	}
	if err == nil {
		err = k.Validate()
	}
	if err != nil {
		writeAPIError(w, invalidRequest("knobs: %v", err))
		return
	}
	s.SetKnobs(k)
	s.logger.Info("knobs set", "knobs", string(body))
	writeJSON(w, http.StatusOK, s.Knobs())
}

// serve wraps a service handler with what every endpoint of a real service
// does before and after its own work, in this order: latency, API key,
// outage, rate limit, random failure, idempotency, then the handler, whose
// answer is stored for replay.
func (s *simulator) serve(handler simHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := SimRequest{
			Time:           time.Now(),
			Method:         r.Method,
			Path:           r.URL.Path,
			IdempotencyKey: r.Header.Get("Idempotency-Key"),
			APIKey:         r.Header.Get("X-Api-Key"),
		}
		body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, simMaxBody))
		rec.Body = json.RawMessage(slices.Clone(body))

		knobs := s.Knobs()
		if knobs.Latency > 0 {
			t := time.NewTimer(knobs.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				s.record(rec)
				return
			}
		}

		status, answer, header, replayed := s.answer(r.Context(), rec, body, readErr, handler)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = w.Write(answer)

		rec.Status, rec.Replayed = status, replayed
		s.record(rec)
		s.logger.Debug("simulated call", "path", rec.Path, "status", status, "idempotency_key", rec.IdempotencyKey, "replayed", replayed)
	})
}

func (s *simulator) record(rec SimRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, rec)
}

// answer decides the status, body and extra headers of one request.
func (s *simulator) answer(ctx context.Context, rec SimRequest, body []byte, readErr error, handler simHandler) (status int, answer []byte, header map[string]string, replayed bool) {
	fail := func(e *apiError, header map[string]string) (int, []byte, map[string]string, bool) {
		return e.Status, errorBody(e), header, false
	}
	if rec.APIKey != s.apiKey {
		return fail(&apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or wrong X-Api-Key"}, nil)
	}
	if e, header := s.injectedFailure(); e != nil {
		return fail(e, header)
	}
	if readErr != nil {
		return fail(invalidRequest("body: unreadable or larger than %d bytes", simMaxBody), nil)
	}
	if msg := checkSimIdempotencyKey(rec.IdempotencyKey); msg != "" {
		return fail(invalidRequest("Idempotency-Key header: %s", msg), nil)
	}
	hash := sha256.Sum256(body)
	if prev, ok := s.storedAnswer(rec.IdempotencyKey, rec.Time); ok {
		if prev.bodyHash != hash {
			return fail(&apiError{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused",
				Message: "this Idempotency-Key was used with a different request body"}, nil)
		}
		return prev.status, prev.body, nil, true
	}

	resp, apiErr := handler(ctx, body, s.Knobs().Absurd)
	if apiErr != nil {
		status, answer = apiErr.Status, errorBody(apiErr)
	} else {
		b, err := json.Marshal(resp)
		if err != nil {
			s.logger.Error("simulator could not encode its answer", "error", err)
			return fail(&apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}, nil)
		}
		status, answer = http.StatusOK, b
	}
	// Like real services, only answers of requests that ran are stored:
	// a 500 is not, so a retry with the same key runs again.
	if status < http.StatusInternalServerError {
		s.storeAnswer(rec.IdempotencyKey, storedAnswer{bodyHash: hash, status: status, body: answer, at: rec.Time})
	}
	return status, answer, nil, false
}

// injectedFailure applies the outage, rate-limit and error-rate knobs.
func (s *simulator) injectedFailure() (*apiError, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.knobs.Outage:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "service unavailable (simulated outage)"}, nil
	case s.burstLeft > 0:
		s.burstLeft--
		after := s.knobs.RetryAfterSeconds
		if after == 0 {
			after = 1
		}
		return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: "too many requests (simulated burst)"},
			map[string]string{"Retry-After": strconv.Itoa(after)}
	case s.knobs.ErrorRate > 0 && s.errSeq.Float64() < s.knobs.ErrorRate:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "service unavailable (simulated error rate)"}, nil
	}
	return nil, nil
}

// checkSimIdempotencyKey returns what is wrong with a key, or "".
func checkSimIdempotencyKey(key string) string {
	if key == "" {
		return "required on POST"
	}
	if len(key) > simMaxIdempotencyKey {
		return fmt.Sprintf("longer than %d characters", simMaxIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < ' ' || key[i] > '~' {
			return fmt.Sprintf("character %d is not printable ASCII", i)
		}
	}
	return ""
}

func (s *simulator) storedAnswer(key string, now time.Time) (storedAnswer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.replays[key]
	if ok && now.Sub(a.at) > simIdempotencyTTL {
		delete(s.replays, key)
		return storedAnswer{}, false
	}
	return a, ok
}

// storeAnswer keeps the first answer to a key; a concurrent request with
// the same key computed the same deterministic answer, so which one is kept
// does not matter.
func (s *simulator) storeAnswer(key string, a storedAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.replays[key]; !ok {
		s.replays[key] = a
	}
}

func errorBody(e *apiError) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
	return b
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.Status)
	_, _ = w.Write(errorBody(e))
}

// decodeStrict decodes a request body, refusing unknown fields as the
// services' schemas do, into a message naming what is wrong.
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidRequest("body: %v", err)
	}
	if dec.More() {
		return invalidRequest("body: more than one JSON value")
	}
	return nil
}

// fieldErrorDetail returns the message a FieldError of a client package
// carries without the package prefix, so the simulators answer 400 with the
// same rule text the clients check.
func fieldErrorDetail(err error) string {
	var d interface{ Detail() string }
	if errors.As(err, &d) {
		return d.Detail()
	}
	return strings.TrimSpace(err.Error())
}

// seedFrom derives a deterministic random source from data, so the same
// request or image always gives the same answer.
func seedFrom(data []byte) *rand.Rand {
	return rand.New(rand.NewChaCha8(sha256.Sum256(data)))
}
