package devstack

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// devSentryProject is the project id in the stand-in's DSN.
const devSentryProject = "1"

// sentryMaxBody bounds one envelope; Sentry itself takes up to 200 MiB with
// attachments, but NXG sends only events.
const sentryMaxBody = 20 << 20

// SentryException is one exception of an event's chain.
type SentryException struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// SentryEvent is the part of a captured event that tests and developers look
// at.
type SentryEvent struct {
	EventID string `json:"event_id"`
	Level   string `json:"level"`
	Message string `json:"message"`
	// ExceptionType and ExceptionValue are the main exception, the last of
	// the chain, which Sentry shows as the title.
	ExceptionType  string            `json:"exception_type,omitempty"`
	ExceptionValue string            `json:"exception_value,omitempty"`
	Exceptions     []SentryException `json:"exceptions,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	Environment    string            `json:"environment,omitempty"`
	Release        string            `json:"release,omitempty"`
	Platform       string            `json:"platform,omitempty"`
	// Endpoint is "envelope" or "store", the API the event came through.
	Endpoint   string    `json:"endpoint"`
	ReceivedAt time.Time `json:"received_at"`
}

// Sentry is a Sentry-compatible capture: it accepts events on the envelope
// and legacy store endpoints, keeps them, logs one line per event and serves
// them as JSON at GET /events.
type Sentry struct {
	key    string
	logger *slog.Logger
	srv    *httpServer

	mu     sync.Mutex
	events []SentryEvent
}

// StartSentry starts the capture on a free loopback port with a random
// public key, which it checks like Sentry does.
func StartSentry(logger *slog.Logger) (*Sentry, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var k [16]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("devstack: sentry key: %w", err)
	}
	s := &Sentry{key: hex.EncodeToString(k[:]), logger: logger.With("stand_in", "sentry")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/{project}/envelope/", s.handleEnvelope)
	mux.HandleFunc("POST /api/{project}/store/", s.handleStore)
	mux.HandleFunc("GET /events", s.handleEvents)
	srv, err := serveHTTP("sentry", mux, logger)
	if err != nil {
		return nil, err
	}
	s.srv = srv
	logger.Info("started Sentry capture", "dsn", s.DSN(), "events", srv.url+"/events")
	return s, nil
}

// DSN is the DSN to give a Sentry SDK.
func (s *Sentry) DSN() string {
	u, _ := url.Parse(s.srv.url)
	u.User = url.User(s.key)
	u.Path = "/" + devSentryProject
	return u.String()
}

// Events returns a copy of the events captured so far, in arrival order.
func (s *Sentry) Events() []SentryEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Close stops the capture.
func (s *Sentry) Close() error { return s.srv.close() }

func (s *Sentry) handleEvents(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Events())
}

func (s *Sentry) handleEnvelope(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	br := bufio.NewReader(bytes.NewReader(body))
	headerLine, err := readEnvelopeLine(br)
	if err != nil {
		writeSentryError(w, http.StatusBadRequest, "invalid envelope header: "+err.Error())
		return
	}
	var header struct {
		EventID string `json:"event_id"`
		DSN     string `json:"dsn"`
	}
	if err := json.Unmarshal(headerLine, &header); err != nil {
		writeSentryError(w, http.StatusBadRequest, "invalid envelope header: "+err.Error())
		return
	}
	if !s.authorized(r, header.DSN) {
		writeSentryError(w, http.StatusUnauthorized, "missing or wrong sentry_key")
		return
	}

	// Items other than events (sessions, client reports, transactions,
	// attachments) are read past and dropped: the capture is for errors.
	for {
		itemLine, err := readEnvelopeLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeSentryError(w, http.StatusBadRequest, "invalid item header: "+err.Error())
			return
		}
		if len(bytes.TrimSpace(itemLine)) == 0 {
			continue
		}
		var item struct {
			Type   string `json:"type"`
			Length *int   `json:"length"`
		}
		if err := json.Unmarshal(itemLine, &item); err != nil {
			writeSentryError(w, http.StatusBadRequest, "invalid item header: "+err.Error())
			return
		}
		var payload []byte
		if item.Length != nil {
			payload = make([]byte, *item.Length)
			if _, err := io.ReadFull(br, payload); err != nil {
				writeSentryError(w, http.StatusBadRequest, "item shorter than its length: "+err.Error())
				return
			}
			// The payload may be followed by a newline before the next item.
			if b, err := br.Peek(1); err == nil && b[0] == '\n' {
				_, _ = br.Discard(1)
			}
		} else if payload, err = readEnvelopeLine(br); err != nil && !errors.Is(err, io.EOF) {
			writeSentryError(w, http.StatusBadRequest, "invalid item: "+err.Error())
			return
		}
		if item.Type != "event" {
			continue
		}
		ev, err := parseSentryEvent(payload)
		if err != nil {
			writeSentryError(w, http.StatusBadRequest, "invalid event: "+err.Error())
			return
		}
		if ev.EventID == "" {
			ev.EventID = header.EventID
		}
		s.record(ev, "envelope")
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": header.EventID})
}

func (s *Sentry) handleStore(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if !s.authorized(r, "") {
		writeSentryError(w, http.StatusUnauthorized, "missing or wrong sentry_key")
		return
	}
	ev, err := parseSentryEvent(body)
	if err != nil {
		writeSentryError(w, http.StatusBadRequest, "invalid event: "+err.Error())
		return
	}
	s.record(ev, "store")
	writeJSON(w, http.StatusOK, map[string]string{"id": ev.EventID})
}

// readBody reads the request body, undoing the compressions Sentry SDKs use,
// and answers 404 for a project other than the DSN's.
func (s *Sentry) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if p := r.PathValue("project"); p != devSentryProject {
		writeSentryError(w, http.StatusNotFound, fmt.Sprintf("unknown project %q", p))
		return nil, false
	}
	var rd io.Reader = http.MaxBytesReader(w, r.Body, sentryMaxBody)
	var err error
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "", "identity":
	case "gzip":
		rd, err = gzip.NewReader(rd)
	case "deflate":
		// HTTP's "deflate" is zlib-wrapped, though some clients send raw
		// deflate; try zlib first and fall back.
		var buf []byte
		if buf, err = io.ReadAll(rd); err == nil {
			if zr, zerr := zlib.NewReader(bytes.NewReader(buf)); zerr == nil {
				rd = zr
			} else {
				rd = flate.NewReader(bytes.NewReader(buf))
			}
		}
	default:
		writeSentryError(w, http.StatusUnsupportedMediaType, "unsupported Content-Encoding")
		return nil, false
	}
	if err != nil {
		writeSentryError(w, http.StatusBadRequest, "undo Content-Encoding: "+err.Error())
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(rd, sentryMaxBody))
	if err != nil {
		writeSentryError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return body, true
}

// authorized checks the public key, which SDKs send in the X-Sentry-Auth
// header, the sentry_key query parameter or the envelope header's DSN.
func (s *Sentry) authorized(r *http.Request, envelopeDSN string) bool {
	if r.URL.Query().Get("sentry_key") == s.key {
		return true
	}
	for _, part := range strings.Split(strings.TrimPrefix(r.Header.Get("X-Sentry-Auth"), "Sentry "), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == "sentry_key" && v == s.key {
			return true
		}
	}
	if u, err := url.Parse(envelopeDSN); err == nil && envelopeDSN != "" && u.User.Username() == s.key {
		return true
	}
	return false
}

func (s *Sentry) record(ev SentryEvent, endpoint string) {
	ev.Endpoint = endpoint
	ev.ReceivedAt = time.Now()
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()

	attrs := []any{"event_id", ev.EventID, "level", ev.Level}
	if ev.ExceptionType != "" || ev.ExceptionValue != "" {
		attrs = append(attrs, "exception", ev.ExceptionType+": "+ev.ExceptionValue)
	}
	if ev.Message != "" {
		attrs = append(attrs, "message", ev.Message)
	}
	s.logger.Info("sentry event", attrs...)
}

// readEnvelopeLine returns the next line without its newline; io.EOF only
// when nothing is left.
func readEnvelopeLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadBytes('\n')
	if errors.Is(err, io.EOF) && len(line) > 0 {
		err = nil
	}
	return bytes.TrimSuffix(line, []byte("\n")), err
}

// parseSentryEvent reads the fields SentryEvent keeps, accepting the shapes
// the protocol allows: exception as a list or {"values": [...]}, tags as an
// object or a list of pairs, message as a string or {"formatted": ...}.
func parseSentryEvent(payload []byte) (SentryEvent, error) {
	var raw struct {
		EventID     string          `json:"event_id"`
		Level       string          `json:"level"`
		Message     json.RawMessage `json:"message"`
		LogEntry    *sentryMessage  `json:"logentry"`
		Exception   json.RawMessage `json:"exception"`
		Tags        json.RawMessage `json:"tags"`
		Environment string          `json:"environment"`
		Release     string          `json:"release"`
		Platform    string          `json:"platform"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return SentryEvent{}, err
	}
	ev := SentryEvent{
		EventID:     raw.EventID,
		Level:       raw.Level,
		Environment: raw.Environment,
		Release:     raw.Release,
		Platform:    raw.Platform,
	}
	if ev.Level == "" {
		// Sentry's default level for an event without one.
		ev.Level = "error"
	}

	if len(raw.Message) > 0 {
		var str string
		var obj sentryMessage
		if json.Unmarshal(raw.Message, &str) == nil {
			ev.Message = str
		} else if json.Unmarshal(raw.Message, &obj) == nil {
			ev.Message = obj.text()
		}
	}
	if ev.Message == "" && raw.LogEntry != nil {
		ev.Message = raw.LogEntry.text()
	}

	if len(raw.Exception) > 0 {
		var list []SentryException
		var wrapped struct {
			Values []SentryException `json:"values"`
		}
		if json.Unmarshal(raw.Exception, &list) == nil {
			ev.Exceptions = list
		} else if err := json.Unmarshal(raw.Exception, &wrapped); err == nil {
			ev.Exceptions = wrapped.Values
		} else {
			return SentryEvent{}, fmt.Errorf("exception: %w", err)
		}
		if n := len(ev.Exceptions); n > 0 {
			ev.ExceptionType, ev.ExceptionValue = ev.Exceptions[n-1].Type, ev.Exceptions[n-1].Value
		}
	}

	if len(raw.Tags) > 0 {
		var m map[string]string
		var pairs [][2]any
		if json.Unmarshal(raw.Tags, &m) == nil {
			ev.Tags = m
		} else if err := json.Unmarshal(raw.Tags, &pairs); err == nil {
			ev.Tags = make(map[string]string, len(pairs))
			for _, p := range pairs {
				ev.Tags[fmt.Sprint(p[0])] = fmt.Sprint(p[1])
			}
		} else {
			return SentryEvent{}, fmt.Errorf("tags: %w", err)
		}
	}
	return ev, nil
}

type sentryMessage struct {
	Formatted string `json:"formatted"`
	Message   string `json:"message"`
}

func (m sentryMessage) text() string {
	if m.Formatted != "" {
		return m.Formatted
	}
	return m.Message
}

func writeSentryError(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("X-Sentry-Error", detail)
	writeJSON(w, status, map[string]string{"detail": detail})
}
