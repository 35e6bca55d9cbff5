package integrations

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults New applies to the zero fields of a Config.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxAttempts      = 4
	DefaultBackoffInitial   = 200 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	DefaultMaxRetryAfter    = 10 * time.Second
	DefaultFailureThreshold = 5
	DefaultOpenTimeout      = 30 * time.Second
	// DefaultMaxResponseBytes bounds a successful response body: the largest
	// answer we expect (a 14-day meal plan) is far below it, and a service
	// streaming more must not exhaust our memory.
	DefaultMaxResponseBytes = 4 << 20
)

// maxErrorBodyBytes bounds how much of an error response is read: enough for
// any JSON error body, small enough that an HTML error page from a gateway
// costs nothing.
const maxErrorBodyBytes = 64 << 10

// Config configures the client of one outside service.
type Config struct {
	// Name is the metrics label and the breaker name: "workoutplanner",
	// "mealdetector", "mealplanner".
	Name string
	// BaseURL is where the service lives, e.g. http://127.0.0.1:41234; a
	// trailing slash is optional.
	BaseURL string
	// APIKey is sent as the X-Api-Key header (not sent when empty).
	APIKey string
	// Timeout bounds each attempt, reading the response body included;
	// 0 → 10s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one logical call; 0 → 4.
	MaxAttempts int
	// BackoffInitial is the ceiling of the first backoff wait, doubling per
	// retry up to BackoffMax; the actual wait is random below the ceiling
	// (full jitter). 0 → 200ms and 5s.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// MaxRetryAfter is the longest Retry-After waited inside one call;
	// 0 → 10s. A longer one ends the call with an *Error carrying RetryAfter
	// so a River job can snooze.
	MaxRetryAfter time.Duration
	// FailureThreshold is the number of consecutive failed attempts that
	// opens the breaker; 0 → 5.
	FailureThreshold uint32
	// OpenTimeout is how long the breaker stays open before a half-open
	// probe; 0 → 30s.
	OpenTimeout time.Duration
	// MaxResponseBytes bounds a 2xx response body; 0 → 4 MiB.
	MaxResponseBytes int64
	// HTTPClient sends the requests; nil → a client with pooled connections
	// that does not follow redirects (a redirected POST could be resent as a
	// GET, or to another host with our API key).
	HTTPClient *http.Client
}

// LogValue keeps the API key out of logs.
func (c Config) LogValue() slog.Value {
	key := ""
	if c.APIKey != "" {
		key = "[redacted]"
	}
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("base_url", c.BaseURL),
		slog.String("api_key", key),
		slog.Duration("timeout", c.Timeout),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("backoff_initial", c.BackoffInitial),
		slog.Duration("backoff_max", c.BackoffMax),
		slog.Duration("max_retry_after", c.MaxRetryAfter),
		slog.Any("failure_threshold", c.FailureThreshold),
		slog.Duration("open_timeout", c.OpenTimeout),
	)
}

// withDefaults validates c and fills its zero fields.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	c.Name = strings.TrimSpace(c.Name)
	if c.Name == "" {
		errs = append(errs, errors.New("Name is required"))
	}
	if c.BaseURL == "" {
		errs = append(errs, errors.New("BaseURL is required"))
	} else if u, err := url.Parse(c.BaseURL); err != nil {
		errs = append(errs, fmt.Errorf("BaseURL: %w", err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("BaseURL %q: want an absolute http or https URL", c.BaseURL))
	} else if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("BaseURL %q: must not carry a query or fragment", c.BaseURL))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Timeout", c.Timeout}, {"BackoffInitial", c.BackoffInitial}, {"BackoffMax", c.BackoffMax},
		{"MaxRetryAfter", c.MaxRetryAfter}, {"OpenTimeout", c.OpenTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, d.v))
		}
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("MaxAttempts must not be negative, got %d", c.MaxAttempts))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxResponseBytes must not be negative, got %d", c.MaxResponseBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("integrations: invalid config for %q: %w", c.Name, err)
	}

	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	c.Timeout = orDefault(c.Timeout, DefaultTimeout)
	c.MaxAttempts = orDefault(c.MaxAttempts, DefaultMaxAttempts)
	c.BackoffInitial = orDefault(c.BackoffInitial, DefaultBackoffInitial)
	c.BackoffMax = orDefault(c.BackoffMax, DefaultBackoffMax)
	c.BackoffMax = max(c.BackoffMax, c.BackoffInitial)
	c.MaxRetryAfter = orDefault(c.MaxRetryAfter, DefaultMaxRetryAfter)
	c.FailureThreshold = orDefault(c.FailureThreshold, DefaultFailureThreshold)
	c.OpenTimeout = orDefault(c.OpenTimeout, DefaultOpenTimeout)
	c.MaxResponseBytes = orDefault(c.MaxResponseBytes, DefaultMaxResponseBytes)
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// defaultHTTPClient pools connections per service and refuses redirects: a
// JSON API that redirects a POST is misconfigured, and following it could
// resend the call as a GET or to another host with our API key.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
