// Package config reads NXG's configuration from environment variables into
// one typed struct, validates it at start-up and logs it with secrets masked.
//
// Both binaries use it: cmd/nxg reads the real environment, cmd/nxg-dev fills
// in the addresses of its embedded stand-ins first and then parses the same
// way, so development exercises the production validation.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config is every setting of the server. The env tags are the variable names
// documented in README.md; keep the two in step.
type Config struct {
	// HTTPAddr is where the API (Connect, gRPC, gRPC-Web) listens.
	HTTPAddr string `env:"NXG_HTTP_ADDR" envDefault:":8080"`
	// OpsAddr is where /metrics, River UI and pprof listen; keep it private.
	OpsAddr string `env:"NXG_OPS_ADDR" envDefault:"127.0.0.1:9090"`
	// OpsUser and OpsPassword guard River UI and pprof with basic auth.
	OpsUser     string `env:"NXG_OPS_USER,required,notEmpty"`
	OpsPassword Secret `env:"NXG_OPS_PASSWORD,required,notEmpty"`

	// TLSCertFile and TLSKeyFile turn on TLS 1.3 for the API port; both or neither.
	TLSCertFile string `env:"NXG_TLS_CERT_FILE"`
	TLSKeyFile  string `env:"NXG_TLS_KEY_FILE"`
	// CORSOrigins lists the browser origins (the staff dashboard) allowed to
	// call the API, comma separated, e.g. https://dash.nxg.fit.
	CORSOrigins []string `env:"NXG_CORS_ORIGINS" envSeparator:","`

	// DatabaseURL is the PostgreSQL connection string (system of record and River).
	DatabaseURL Secret `env:"DATABASE_URL,required,notEmpty"`
	// DatabaseMaxConns caps the pool; 0 keeps pgx's default.
	DatabaseMaxConns int32 `env:"NXG_DATABASE_MAX_CONNS" envDefault:"0"`
	// RedisURL is the Redis connection string (sessions, rate limits, leaderboards).
	RedisURL Secret `env:"REDIS_URL,required,notEmpty"`
	// MongoURL is the MongoDB connection string (caches of outside services' answers).
	MongoURL Secret `env:"MONGO_URL,required,notEmpty"`
	// MongoDatabase is the MongoDB database NXG uses.
	MongoDatabase string `env:"NXG_MONGO_DATABASE" envDefault:"nxg"`

	// S3 holds object storage settings (avatars, meal photos, exports).
	S3 S3Config
	// Firebase holds push notification settings.
	Firebase FirebaseConfig
	// AI holds the outside AI services (docs/integrations.md).
	AI AIConfig

	// Auth holds the keys of identity and privacy.
	Auth AuthConfig
	// Floor tunes check-in sessions, machines and live streams.
	Floor FloorConfig

	// TrustedProxies are the CIDRs of load balancers whose X-Forwarded-For
	// is believed when working out a client's IP (for rate limits and the
	// audit trail). Empty means the connection's address is the client.
	TrustedProxies []string `env:"NXG_TRUSTED_PROXIES" envSeparator:","`

	// RateLimitPerIP, RateLimitPerUser and RateLimitPerDevice are the
	// general request limits, in calls per second (bursts of two or three
	// times that); 0 turns one off (load tests only).
	RateLimitPerIP     int `env:"NXG_RATE_LIMIT_PER_IP" envDefault:"50"`
	RateLimitPerUser   int `env:"NXG_RATE_LIMIT_PER_USER" envDefault:"20"`
	RateLimitPerDevice int `env:"NXG_RATE_LIMIT_PER_DEVICE" envDefault:"10"`

	// SentryDSN turns on error reporting to Sentry when set.
	SentryDSN Secret `env:"SENTRY_DSN"`
	// SentryEnvironment tags Sentry events, e.g. production or staging.
	SentryEnvironment string `env:"SENTRY_ENVIRONMENT" envDefault:"production"`

	// LogLevel is debug, info, warn or error.
	LogLevel slog.Level `env:"NXG_LOG_LEVEL" envDefault:"info"`
	// ShutdownTimeout bounds a graceful stop: draining HTTP, then River.
	ShutdownTimeout time.Duration `env:"NXG_SHUTDOWN_TIMEOUT" envDefault:"30s"`
	// UnaryTimeout bounds a unary RPC whose client sent no deadline.
	UnaryTimeout time.Duration `env:"NXG_UNARY_TIMEOUT" envDefault:"30s"`
}

// S3Config points at an S3-compatible object store.
type S3Config struct {
	// Endpoint is empty for AWS itself, or the URL of a compatible store.
	Endpoint string `env:"S3_ENDPOINT"`
	// Bucket holds every object NXG stores.
	Bucket string `env:"S3_BUCKET,required,notEmpty"`
	// Region is the bucket's AWS region.
	Region string `env:"S3_REGION" envDefault:"eu-west-1"`
	// AccessKeyID and SecretAccessKey are static credentials; when empty the
	// AWS default chain (instance role, AWS_* variables) is used.
	AccessKeyID     string `env:"S3_ACCESS_KEY_ID"`
	SecretAccessKey Secret `env:"S3_SECRET_ACCESS_KEY"`
	// UsePathStyle addresses buckets by path, which most non-AWS stores need.
	UsePathStyle bool `env:"S3_USE_PATH_STYLE" envDefault:"false"`
}

// AIConfig locates the outside AI services NXG calls from its ai queue.
type AIConfig struct {
	WorkoutPlanner ServiceConfig `envPrefix:"NXG_WORKOUTPLANNER_"`
	MealDetector   ServiceConfig `envPrefix:"NXG_MEALDETECTOR_"`
	MealPlanner    ServiceConfig `envPrefix:"NXG_MEALPLANNER_"`
}

// ServiceConfig is one outside service: where it is, the key it wants, and
// how patiently it is called (docs/integrations.md has the policy; the
// defaults suit the vendors' documented latencies).
type ServiceConfig struct {
	// URL is the service's base URL.
	URL string `env:"URL,required,notEmpty"`
	// APIKey is sent as X-Api-Key.
	APIKey Secret `env:"API_KEY,required,notEmpty"`
	// Timeout bounds one attempt.
	Timeout time.Duration `env:"TIMEOUT" envDefault:"20s"`
	// MaxAttempts bounds the attempts of one call.
	MaxAttempts int `env:"MAX_ATTEMPTS" envDefault:"4"`
	// FailureThreshold is how many failed attempts in a row open the breaker.
	FailureThreshold uint32 `env:"BREAKER_FAILURES" envDefault:"5"`
	// OpenTimeout is how long an open breaker fails fast before a probe.
	OpenTimeout time.Duration `env:"BREAKER_OPEN_TIMEOUT" envDefault:"30s"`
}

// FirebaseConfig configures Firebase Cloud Messaging.
type FirebaseConfig struct {
	// ProjectID is the Firebase project that sends pushes.
	ProjectID string `env:"FIREBASE_PROJECT_ID,required,notEmpty"`
	// CredentialsFile is a service account JSON file; required unless
	// Endpoint points at a stand-in.
	CredentialsFile string `env:"FIREBASE_CREDENTIALS_FILE"`
	// Endpoint overrides Google's FCM endpoint, for development and tests
	// only: requests to it carry no credentials.
	Endpoint string `env:"NXG_FCM_ENDPOINT"`
}

// AuthConfig holds signing and encryption keys. Each key may be given
// inline or as a file (for secret stores that mount files); not both.
type AuthConfig struct {
	// JWTKeys is a JWK Set of Ed25519 private keys; the first signs, all
	// verify. To rotate, prepend a new key and drop the old one 15 minutes
	// after every instance has it.
	JWTKeys     Secret `env:"NXG_JWT_KEYS"`
	JWTKeysFile string `env:"NXG_JWT_KEYS_FILE"`
	// JWTIssuer and JWTAudience are the iss and aud of access tokens.
	JWTIssuer   string `env:"NXG_JWT_ISSUER" envDefault:"https://api.nxg.fit"`
	JWTAudience string `env:"NXG_JWT_AUDIENCE" envDefault:"nxg-api"`
	// MasterKey wraps every user's data key: "id:base64key[,id:base64key]",
	// 32-byte keys, the first wraps new data keys, all unwrap.
	MasterKey     Secret `env:"NXG_MASTER_KEY"`
	MasterKeyFile string `env:"NXG_MASTER_KEY_FILE"`
	// AuditKey (32 bytes, standard base64) keys the audit trail's chain and
	// pseudonyms. It must never change: old rows verify only under it.
	AuditKey Secret `env:"NXG_AUDIT_KEY,required,notEmpty"`
	// CheckinKey (32 bytes, standard base64) signs the rotating entrance
	// codes of every branch. Changing it only invalidates codes shown in the
	// last minute.
	CheckinKey Secret `env:"NXG_CHECKIN_KEY,required,notEmpty"`
}

// FloorConfig tunes the gym floor: sessions, machines and live streams.
type FloorConfig struct {
	// SessionTimeoutOverride replaces every branch's max_session_minutes
	// when set, so the timeout can be seen working in development and
	// tests. Never set it in production.
	SessionTimeoutOverride time.Duration `env:"NXG_SESSION_TIMEOUT_OVERRIDE"`
	// IdleUnlinkOverride replaces every branch's idle_unlink_minutes when
	// set, for development and tests only.
	IdleUnlinkOverride time.Duration `env:"NXG_IDLE_UNLINK_OVERRIDE"`
	// MachineOfflineAfter is how long a console may go without a heartbeat
	// before its machine is shown offline.
	MachineOfflineAfter time.Duration `env:"NXG_MACHINE_OFFLINE_AFTER" envDefault:"60s"`
	// MaxStreamsPerUser caps the live streams (RPC streams and WebSockets)
	// one account holds open on one server process.
	MaxStreamsPerUser int `env:"NXG_MAX_STREAMS_PER_USER" envDefault:"8"`
	// MaxStreamsPerDevice caps the live streams of one device.
	MaxStreamsPerDevice int `env:"NXG_MAX_STREAMS_PER_DEVICE" envDefault:"2"`
}

// validate checks the floor's durations and caps.
func (f FloorConfig) validate(skip map[string]bool) []string {
	var p []string
	for name, d := range map[string]time.Duration{
		"NXG_SESSION_TIMEOUT_OVERRIDE": f.SessionTimeoutOverride, "NXG_IDLE_UNLINK_OVERRIDE": f.IdleUnlinkOverride,
	} {
		if d < 0 {
			p = append(p, name+": must not be negative")
		}
	}
	if f.MachineOfflineAfter < 5*time.Second && !skip["NXG_MACHINE_OFFLINE_AFTER"] {
		p = append(p, "NXG_MACHINE_OFFLINE_AFTER: must be at least 5s (consoles send a heartbeat every few seconds)")
	}
	if f.MaxStreamsPerUser < 1 && !skip["NXG_MAX_STREAMS_PER_USER"] {
		p = append(p, "NXG_MAX_STREAMS_PER_USER: must be at least 1")
	}
	if f.MaxStreamsPerDevice < 1 && !skip["NXG_MAX_STREAMS_PER_DEVICE"] {
		p = append(p, "NXG_MAX_STREAMS_PER_DEVICE: must be at least 1")
	}
	return p
}

// Secret is a string that never prints: fmt, slog and JSON all show it masked.
type Secret string

// String masks the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "*****"
}

// GoString masks the secret under %#v.
func (s Secret) GoString() string { return "config.Secret(" + strconv.Quote(s.String()) + ")" }

// MarshalText masks the secret in JSON and any other text encoding.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue masks the secret in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// Parse reads the configuration from environ (variable name to value) and
// validates it. Every problem is reported at once, each naming its variable,
// so an operator fixes a deployment in one go.
func Parse(environ map[string]string) (Config, error) {
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: environ})
	var problems []string
	if err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) {
			for _, e := range agg.Errors {
				problems = append(problems, describe(e, environ))
			}
		} else {
			problems = append(problems, describe(err, environ))
		}
	}
	problems = append(problems, cfg.validate(unparsed(err, environ))...)
	if len(problems) > 0 {
		slices.Sort(problems)
		return Config{}, &Error{Problems: problems}
	}
	return cfg, nil
}

// Error lists every configuration problem found.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// describe words a parse problem by the variable's name, which is what an
// operator can act on; the library words it by the Go field's name.
func describe(err error, environ map[string]string) string {
	var pe env.ParseError
	if errors.As(err, &pe) {
		if name := envName(reflect.TypeFor[Config](), pe.Name, environ); name != "" {
			return fmt.Sprintf("%s: %v", name, pe.Err)
		}
	}
	return err.Error()
}

// unparsed lists the variables whose values could not be parsed at all, so
// validate does not add a second, misleading problem about their zero value.
func unparsed(err error, environ map[string]string) map[string]bool {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return nil
	}
	m := map[string]bool{}
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			m[envName(reflect.TypeFor[Config](), pe.Name, environ)] = true
		}
	}
	return m
}

// envName finds the variable name of a field in t or its nested structs.
// The library names a failed field by its Go name only, and the outside
// services' settings repeat the same fields under different prefixes
// (NXG_WORKOUTPLANNER_TIMEOUT, NXG_MEALPLANNER_TIMEOUT): of the variables
// that field can be, the ones set in environ are named.
func envName(t reflect.Type, field string, environ map[string]string) string {
	names := envNames(t, field, "")
	var set []string
	for _, n := range names {
		if _, ok := environ[n]; ok {
			set = append(set, n)
		}
	}
	switch {
	case len(set) > 0:
		return strings.Join(set, " or ")
	case len(names) > 0:
		return names[0]
	default:
		return ""
	}
}

// envNames lists every variable name field can have in t, with prefix.
func envNames(t reflect.Type, field, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if f.Name == field && tag != "" {
			out = append(out, prefix+tag)
		}
		if tag == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, envNames(f.Type, field, prefix+f.Tag.Get("envPrefix"))...)
		}
	}
	return out
}

// validate checks what the env tags cannot: shapes of addresses and URLs and
// settings that only make sense together. Variables in skip failed to parse
// and are reported already.
func (c Config) validate(skip map[string]bool) []string {
	var p []string
	for name, addr := range map[string]string{"NXG_HTTP_ADDR": c.HTTPAddr, "NXG_OPS_ADDR": c.OpsAddr} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			p = append(p, fmt.Sprintf("%s: %q is not host:port", name, addr))
		}
	}
	for name, v := range map[string]int{
		"NXG_RATE_LIMIT_PER_IP": c.RateLimitPerIP, "NXG_RATE_LIMIT_PER_USER": c.RateLimitPerUser,
		"NXG_RATE_LIMIT_PER_DEVICE": c.RateLimitPerDevice,
	} {
		if v < 0 {
			p = append(p, fmt.Sprintf("%s: must be 0 (off) or a positive number of calls per second", name))
		}
	}
	p = append(p, c.Floor.validate(skip)...)
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		p = append(p, "NXG_TLS_CERT_FILE and NXG_TLS_KEY_FILE: set both or neither")
	}
	checkURL := func(name string, raw Secret, schemes ...string) {
		if raw == "" {
			return // reported as missing already
		}
		u, err := url.Parse(raw.Reveal())
		if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
			p = append(p, fmt.Sprintf("%s: not a URL of scheme %s", name, strings.Join(schemes, " or ")))
		}
	}
	checkURL("DATABASE_URL", c.DatabaseURL, "postgres", "postgresql")
	checkURL("REDIS_URL", c.RedisURL, "redis", "rediss")
	checkURL("MONGO_URL", c.MongoURL, "mongodb", "mongodb+srv")
	if c.S3.Endpoint != "" {
		checkURL("S3_ENDPOINT", Secret(c.S3.Endpoint), "http", "https")
	}
	if (c.S3.AccessKeyID == "") != (c.S3.SecretAccessKey == "") {
		p = append(p, "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither")
	}
	if c.Firebase.Endpoint == "" && c.Firebase.CredentialsFile == "" {
		p = append(p, "FIREBASE_CREDENTIALS_FILE: required (a service account JSON file)")
	}
	if c.Firebase.Endpoint != "" {
		checkURL("NXG_FCM_ENDPOINT", Secret(c.Firebase.Endpoint), "http", "https")
	}
	for _, o := range c.CORSOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p = append(p, fmt.Sprintf("NXG_CORS_ORIGINS: %q is not an origin like https://dash.example.com", o))
		}
	}
	p = append(p, c.Auth.validate()...)
	for _, cidr := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(strings.TrimSpace(cidr)); err != nil {
			p = append(p, fmt.Sprintf("NXG_TRUSTED_PROXIES: %q is not a CIDR like 10.0.0.0/8", cidr))
		}
	}
	if c.ShutdownTimeout <= 0 && !skip["NXG_SHUTDOWN_TIMEOUT"] {
		p = append(p, "NXG_SHUTDOWN_TIMEOUT: must be positive")
	}
	if c.UnaryTimeout <= 0 && !skip["NXG_UNARY_TIMEOUT"] {
		p = append(p, "NXG_UNARY_TIMEOUT: must be positive")
	}
	if c.DatabaseMaxConns < 0 {
		p = append(p, "NXG_DATABASE_MAX_CONNS: must not be negative")
	}
	return p
}

// TLSEnabled reports whether the API port serves TLS.
func (c Config) TLSEnabled() bool { return c.TLSCertFile != "" }

// LogValue renders the configuration for the start-up log. Secrets are
// masked by their type; URLs keep their host so operators can see where the
// server points without learning passwords.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("http_addr", c.HTTPAddr),
		slog.String("ops_addr", c.OpsAddr),
		slog.String("ops_user", c.OpsUser),
		slog.Any("ops_password", c.OpsPassword),
		slog.Bool("tls", c.TLSEnabled()),
		slog.Any("cors_origins", c.CORSOrigins),
		slog.String("database_url", redactURL(c.DatabaseURL)),
		slog.Int("database_max_conns", int(c.DatabaseMaxConns)),
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("mongo_url", redactURL(c.MongoURL)),
		slog.String("mongo_database", c.MongoDatabase),
		slog.String("s3_endpoint", c.S3.Endpoint),
		slog.String("s3_bucket", c.S3.Bucket),
		slog.String("s3_region", c.S3.Region),
		slog.Any("s3_secret_access_key", c.S3.SecretAccessKey),
		slog.String("firebase_project_id", c.Firebase.ProjectID),
		slog.String("fcm_endpoint", c.Firebase.Endpoint),
		slog.String("workoutplanner_url", c.AI.WorkoutPlanner.URL),
		slog.String("mealdetector_url", c.AI.MealDetector.URL),
		slog.String("mealplanner_url", c.AI.MealPlanner.URL),
		slog.String("jwt_issuer", c.Auth.JWTIssuer),
		slog.String("jwt_audience", c.Auth.JWTAudience),
		slog.Any("trusted_proxies", c.TrustedProxies),
		slog.Bool("sentry", c.SentryDSN != ""),
		slog.String("log_level", c.LogLevel.String()),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
	)
}

// redactURL keeps scheme, host and path of a URL and masks its password,
// also when given as a query parameter (which pgx accepts).
func redactURL(s Secret) string {
	u, err := url.Parse(s.Reveal())
	if err != nil {
		return s.String()
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
