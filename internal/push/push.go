// Package push sends push notifications to members' phones through Firebase
// Cloud Messaging (the HTTP v1 API, via the Firebase Admin SDK).
package push

import (
	"context"
	"errors"
	"fmt"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"google.golang.org/api/option"
)

// ErrUnregistered is returned (wrapped) when FCM says the device token is no
// longer valid, typically because the app was uninstalled; the caller should
// delete the token so it is not tried again.
var ErrUnregistered = errors.New("push: device token is not registered")

// ErrInvalidMessage is returned (wrapped) when FCM refuses the message itself
// (INVALID_ARGUMENT: a reserved data key, a payload over 4 KiB, a malformed
// token); sending it again cannot succeed, so a job should not retry.
//
// The Admin SDK's own checks (errorutils.IsX, messaging.IsX) do not see
// through wrapping, so these sentinels are how callers classify a failure.
var ErrInvalidMessage = errors.New("push: message refused as invalid")

// Config says which Firebase project to send through and how to reach it.
type Config struct {
	// ProjectID is the Firebase project; it may be empty when the
	// credentials file names it.
	ProjectID string
	// CredentialsFile is a service account JSON file; empty means Google's
	// application default credentials.
	CredentialsFile string
	// Endpoint replaces https://fcm.googleapis.com/v1 for a local fake (dev
	// and tests); requests to it carry no credentials.
	Endpoint string
}

// Message is one notification to one device.
type Message struct {
	Token string
	Title string
	Body  string
	// Data is delivered to the app as key-value pairs, for deep links.
	Data map[string]string
}

// Client sends messages.
type Client struct {
	fcm *messaging.Client
}

// New builds a client. It does not contact FCM: credentials are checked on
// the first send.
func New(ctx context.Context, cfg Config) (*Client, error) {
	var opts []option.ClientOption
	switch {
	case cfg.Endpoint != "":
		if cfg.ProjectID == "" {
			return nil, errors.New("push: project id is required with a custom FCM endpoint")
		}
		// A fake needs no OAuth token, and fetching one would fail offline.
		opts = append(opts, option.WithEndpoint(cfg.Endpoint), option.WithoutAuthentication())
	case cfg.CredentialsFile != "":
		// Only a service account file is accepted: loading any credential
		// type from a path in config would let a tampered file point token
		// requests at another server.
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, cfg.CredentialsFile))
	}
	// A non-nil Config keeps the SDK from reading FIREBASE_CONFIG; an empty
	// ProjectID makes it take the project from the credentials.
	fbCfg := &firebase.Config{ProjectID: cfg.ProjectID}
	app, err := firebase.NewApp(ctx, fbCfg, opts...)
	if err != nil {
		return nil, fmt.Errorf("push: create firebase app: %w", err)
	}
	fcm, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: create messaging client: %w", err)
	}
	return &Client{fcm: fcm}, nil
}

// Send delivers m and returns FCM's message id
// ("projects/{project}/messages/{id}"). A dead token yields ErrUnregistered,
// a message FCM refuses ErrInvalidMessage; other errors (quota, outage) are
// worth retrying later.
func (c *Client) Send(ctx context.Context, m Message) (string, error) {
	if m.Token == "" {
		return "", errors.New("push: send: empty device token")
	}
	msg := &messaging.Message{Token: m.Token, Data: m.Data}
	if m.Title != "" || m.Body != "" {
		msg.Notification = &messaging.Notification{Title: m.Title, Body: m.Body}
	}
	id, err := c.fcm.Send(ctx, msg)
	if err != nil {
		// FCM reports an uninstalled app as UNREGISTERED; older responses
		// and some token states come back as plain NOT_FOUND.
		if messaging.IsUnregistered(err) || errorutils.IsNotFound(err) {
			return "", fmt.Errorf("push: send: %w: %w", ErrUnregistered, err)
		}
		if errorutils.IsInvalidArgument(err) {
			return "", fmt.Errorf("push: send: %w: %w", ErrInvalidMessage, err)
		}
		return "", fmt.Errorf("push: send: %w", err)
	}
	return id, nil
}
