package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// devFCMProject is the Firebase project id the FCM stand-in serves.
const devFCMProject = "nxg-dev"

// InvalidTokenPrefix marks device tokens the FCM stand-in treats as no longer
// registered, answering 404 UNREGISTERED as Google does for an uninstalled
// app, so tests can exercise token cleanup.
const InvalidTokenPrefix = "invalid-"

// fcmMaxPayload is FCM's limit on a message's notification and data payload.
const fcmMaxPayload = 4096

// FCMMessage is one message the FCM stand-in received.
type FCMMessage struct {
	// Name is what the stand-in answered, "projects/{project}/messages/{id}";
	// empty when the send was refused.
	Name         string
	Project      string
	Token        string
	Topic        string
	Condition    string
	Title        string
	Body         string
	Data         map[string]string
	ValidateOnly bool
	// Status is the HTTP status the stand-in answered with.
	Status int
	// Raw is the "message" object as sent, for assertions on platform
	// specific fields (android, apns, webpush).
	Raw        json.RawMessage
	ReceivedAt time.Time
}

// FCM is a local fake of the FCM HTTP v1 API (POST
// /v1/projects/{project}/messages:send). It checks requests the way Google
// does for the cases NXG meets, answers in Google's format, and records
// every message.
type FCM struct {
	project string
	logger  *slog.Logger
	srv     *httpServer

	mu       sync.Mutex
	messages []FCMMessage
}

// StartFCM starts the FCM stand-in on a free loopback port.
func StartFCM(logger *slog.Logger) (*FCM, error) {
	if logger == nil {
		logger = slog.Default()
	}
	f := &FCM{project: devFCMProject, logger: logger.With("stand_in", "fcm")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.handleSend)
	srv, err := serveHTTP("fcm", mux, logger)
	if err != nil {
		return nil, err
	}
	f.srv = srv
	logger.Info("started FCM stand-in", "endpoint", f.Endpoint(), "project", f.project)
	return f, nil
}

// Endpoint is the API root to give the Firebase Admin SDK
// (option.WithEndpoint); the SDK appends "/projects/{project}/messages:send",
// so it ends in /v1 like Google's https://fcm.googleapis.com/v1.
func (f *FCM) Endpoint() string { return f.srv.url + "/v1" }

// ProjectID is the only Firebase project the stand-in accepts.
func (f *FCM) ProjectID() string { return f.project }

// Messages returns a copy of every message received so far, in order,
// including ones refused for their content or a dead token (see
// FCMMessage.Status); requests that are not valid JSON or name another
// project are not messages and are not kept.
func (f *FCM) Messages() []FCMMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.messages)
}

// Close stops the stand-in.
func (f *FCM) Close() error { return f.srv.close() }

// fcmSendRequest is the v1 request body. Google accepts both the proto field
// names and their lowerCamel JSON names, so both spellings are read.
type fcmSendRequest struct {
	ValidateOnly      bool            `json:"validate_only"`
	ValidateOnlyCamel bool            `json:"validateOnly"`
	Message           json.RawMessage `json:"message"`
}

type fcmMessageBody struct {
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
}

func (f *FCM) handleSend(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	if project != f.project {
		// Google answers a project the credentials do not belong to with 403.
		writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "",
			fmt.Sprintf("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/%s'", project), "")
		return
	}

	var req fcmSendRequest
	var msg fcmMessageBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "Invalid JSON payload received. "+err.Error(), "")
		return
	}
	if len(req.Message) == 0 {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument.", "message")
		return
	}
	// Data values must be strings in FCM; a number or object fails to decode
	// here just as Google refuses it.
	if err := json.Unmarshal(req.Message, &msg); err != nil {
		writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "Invalid JSON payload received. "+err.Error(), "message")
		return
	}

	rec := FCMMessage{
		Project:      project,
		Token:        msg.Token,
		Topic:        msg.Topic,
		Condition:    msg.Condition,
		Data:         msg.Data,
		ValidateOnly: req.ValidateOnly || req.ValidateOnlyCamel,
		Raw:          req.Message,
		ReceivedAt:   time.Now(),
	}
	if msg.Notification != nil {
		rec.Title, rec.Body = msg.Notification.Title, msg.Notification.Body
	}

	status, body := f.answer(rec)
	rec.Status = status
	if status == http.StatusOK {
		rec.Name = body["name"].(string)
	}
	f.mu.Lock()
	f.messages = append(f.messages, rec)
	f.mu.Unlock()

	f.logger.Info("push received", "status", status, "token", rec.Token, "topic", rec.Topic,
		"title", rec.Title, "validate_only", rec.ValidateOnly)
	writeJSON(w, status, body)
}

// answer decides the response for a decoded message in the order Google
// checks: target, payload, then the token's registration.
func (f *FCM) answer(m FCMMessage) (int, map[string]any) {
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return http.StatusBadRequest, googleError(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			"Exactly one of token, topic or condition must be specified.", "message")
	}
	size := len(m.Title) + len(m.Body)
	for k, v := range m.Data {
		if isReservedFCMDataKey(k) {
			return http.StatusBadRequest, googleError(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
				fmt.Sprintf("Invalid data payload key: %s", k), "message.data")
		}
		size += len(k) + len(v)
	}
	if size > fcmMaxPayload {
		return http.StatusBadRequest, googleError(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			"Message is too big", "message")
	}
	if strings.HasPrefix(m.Token, InvalidTokenPrefix) {
		return http.StatusNotFound, googleError(http.StatusNotFound, "NOT_FOUND", "UNREGISTERED",
			"Requested entity was not found.", "")
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return http.StatusOK, map[string]any{
		"name": fmt.Sprintf("projects/%s/messages/0:%d%%%s", m.Project, m.ReceivedAt.UnixMilli(), hex.EncodeToString(id[:])),
	}
}

// isReservedFCMDataKey reports keys FCM refuses in the data payload.
func isReservedFCMDataKey(k string) bool {
	switch k {
	case "from", "notification", "message_type":
		return true
	}
	return strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.")
}

// googleError builds Google's error body; fcmCode adds the FcmError detail
// that the Admin SDK maps to errors such as messaging.IsUnregistered, and
// field adds a BadRequest field violation.
func googleError(code int, status, fcmCode, message, field string) map[string]any {
	var details []any
	if fcmCode != "" {
		details = append(details, map[string]any{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": fcmCode,
		})
	}
	if field != "" {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []any{map[string]any{"field": field, "description": message}},
		})
	}
	e := map[string]any{"code": code, "message": message, "status": status}
	if details != nil {
		e["details"] = details
	}
	return map[string]any{"error": e}
}

func writeGoogleError(w http.ResponseWriter, code int, status, fcmCode, message, field string) {
	writeJSON(w, code, googleError(code, status, fcmCode, message, field))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
