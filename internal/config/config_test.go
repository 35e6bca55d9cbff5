package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/testkit"
)

// Secrets of the valid environment; none may ever appear in output.
const (
	dbPassword    = "db-Pa55word-7f3"
	redisPassword = "redis-Pa55word-91c"
	mongoPassword = "mongo-Pa55word-0ad"
	opsPassword   = "ops-Pa55word-e42"
	s3Secret      = "s3-SecretKey-5b8"
)

// requiredVars are the variables without which the server cannot start.
var requiredVars = []string{
	"DATABASE_URL",
	"REDIS_URL",
	"MONGO_URL",
	"NXG_OPS_USER",
	"NXG_OPS_PASSWORD",
	"S3_BUCKET",
	"FIREBASE_PROJECT_ID",
	"NXG_AUDIT_KEY",
	"NXG_WORKOUTPLANNER_URL",
	"NXG_WORKOUTPLANNER_API_KEY",
	"NXG_MEALDETECTOR_URL",
	"NXG_MEALDETECTOR_API_KEY",
	"NXG_MEALPLANNER_URL",
	"NXG_MEALPLANNER_API_KEY",
}

// validEnviron is the smallest complete configuration: every required
// variable and FIREBASE_CREDENTIALS_FILE, everything else defaulted.
func validEnviron() map[string]string {
	e := map[string]string{
		"DATABASE_URL":               "postgres://nxg:" + dbPassword + "@db.internal:5432/nxg?sslmode=require",
		"REDIS_URL":                  "redis://:" + redisPassword + "@cache.internal:6379/0",
		"MONGO_URL":                  "mongodb://nxg:" + mongoPassword + "@mongo.internal:27017",
		"NXG_OPS_USER":               "ops",
		"NXG_OPS_PASSWORD":           opsPassword,
		"S3_BUCKET":                  "nxg-media",
		"FIREBASE_PROJECT_ID":        "nxg-prod",
		"FIREBASE_CREDENTIALS_FILE":  "/etc/nxg/firebase.json",
		"NXG_WORKOUTPLANNER_URL":     "https://planner.example.com",
		"NXG_WORKOUTPLANNER_API_KEY": "planner-key",
		"NXG_MEALDETECTOR_URL":       "https://detector.example.com",
		"NXG_MEALDETECTOR_API_KEY":   "detector-key",
		"NXG_MEALPLANNER_URL":        "https://mealplanner.example.com",
		"NXG_MEALPLANNER_API_KEY":    "mealplanner-key",
	}
	for k, v := range testAuthEnv {
		e[k] = v
	}
	return e
}

// testAuthEnv holds keys generated once for the package's tests.
var testAuthEnv = func() map[string]string {
	env, err := testkit.GenerateAuthEnv()
	if err != nil {
		panic(err)
	}
	return env
}()

// with returns validEnviron changed by set; an empty value deletes the
// variable.
func with(set map[string]string) map[string]string {
	e := validEnviron()
	for k, v := range set {
		if v == "" {
			delete(e, k)
		} else {
			e[k] = v
		}
	}
	return e
}

// mustParse parses environ and fails the test on any error.
func mustParse(t *testing.T, environ map[string]string) Config {
	t.Helper()
	cfg, err := Parse(environ)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// parseProblems parses environ, requires a *Error and returns its problems.
func parseProblems(t *testing.T, environ map[string]string) (*Error, []string) {
	t.Helper()
	cfg, err := Parse(environ)
	if err == nil {
		t.Fatalf("Parse succeeded with %+v, want an error", cfg)
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Parse error is %T (%v), want *config.Error", err, err)
	}
	if !strings.HasPrefix(err.Error(), "invalid configuration:") {
		t.Errorf("error = %q, want it to start with \"invalid configuration:\"", err)
	}
	for _, p := range cerr.Problems {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error text %q does not list problem %q", err, p)
		}
	}
	if !slices.IsSorted(cerr.Problems) {
		t.Errorf("problems are not sorted: %q", cerr.Problems)
	}
	return cerr, cerr.Problems
}

func TestParse(t *testing.T) {
	t.Parallel()

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, validEnviron())
		checks := []struct {
			name      string
			got, want any
		}{
			{"HTTPAddr", cfg.HTTPAddr, ":8080"},
			{"OpsAddr", cfg.OpsAddr, "127.0.0.1:9090"},
			{"OpsUser", cfg.OpsUser, "ops"},
			{"OpsPassword", cfg.OpsPassword.Reveal(), opsPassword},
			{"TLSCertFile", cfg.TLSCertFile, ""},
			{"TLSKeyFile", cfg.TLSKeyFile, ""},
			{"TLSEnabled", cfg.TLSEnabled(), false},
			{"len(CORSOrigins)", len(cfg.CORSOrigins), 0},
			{"DatabaseURL", cfg.DatabaseURL.Reveal(), validEnviron()["DATABASE_URL"]},
			{"DatabaseMaxConns", cfg.DatabaseMaxConns, int32(0)},
			{"RedisURL", cfg.RedisURL.Reveal(), validEnviron()["REDIS_URL"]},
			{"MongoURL", cfg.MongoURL.Reveal(), validEnviron()["MONGO_URL"]},
			{"MongoDatabase", cfg.MongoDatabase, "nxg"},
			{"S3.Endpoint", cfg.S3.Endpoint, ""},
			{"S3.Bucket", cfg.S3.Bucket, "nxg-media"},
			{"S3.Region", cfg.S3.Region, "eu-west-1"},
			{"S3.AccessKeyID", cfg.S3.AccessKeyID, ""},
			{"S3.SecretAccessKey", cfg.S3.SecretAccessKey.Reveal(), ""},
			{"S3.UsePathStyle", cfg.S3.UsePathStyle, false},
			{"Firebase.ProjectID", cfg.Firebase.ProjectID, "nxg-prod"},
			{"Firebase.CredentialsFile", cfg.Firebase.CredentialsFile, "/etc/nxg/firebase.json"},
			{"Firebase.Endpoint", cfg.Firebase.Endpoint, ""},
			{"SentryDSN", cfg.SentryDSN.Reveal(), ""},
			{"SentryEnvironment", cfg.SentryEnvironment, "production"},
			{"LogLevel", cfg.LogLevel, slog.LevelInfo},
			{"ShutdownTimeout", cfg.ShutdownTimeout, 30 * time.Second},
			{"UnaryTimeout", cfg.UnaryTimeout, 30 * time.Second},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
			}
		}
	})

	t.Run("EveryVariableSet", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, with(map[string]string{
			"NXG_HTTP_ADDR":             "0.0.0.0:8443",
			"NXG_OPS_ADDR":              "10.0.0.5:9999",
			"NXG_TLS_CERT_FILE":         "/tls/cert.pem",
			"NXG_TLS_KEY_FILE":          "/tls/key.pem",
			"NXG_CORS_ORIGINS":          "https://dash.nxg.fit,http://localhost:3000,https://staff.nxg.fit/",
			"DATABASE_URL":              "postgresql://nxg@db.internal/nxg",
			"NXG_DATABASE_MAX_CONNS":    "25",
			"REDIS_URL":                 "rediss://cache.internal:6380",
			"MONGO_URL":                 "mongodb+srv://cluster0.example.net",
			"NXG_MONGO_DATABASE":        "nxg_cache",
			"S3_ENDPOINT":               "http://minio.internal:9000",
			"S3_REGION":                 "us-east-2",
			"S3_ACCESS_KEY_ID":          "AKIAEXAMPLE",
			"S3_SECRET_ACCESS_KEY":      s3Secret,
			"S3_USE_PATH_STYLE":         "true",
			"FIREBASE_CREDENTIALS_FILE": "",
			"NXG_FCM_ENDPOINT":          "http://127.0.0.1:4010",
			"SENTRY_DSN":                "https://key@o1.ingest.sentry.io/2",
			"SENTRY_ENVIRONMENT":        "staging",
			"NXG_LOG_LEVEL":             "warn",
			"NXG_SHUTDOWN_TIMEOUT":      "45s",
			"NXG_UNARY_TIMEOUT":         "1m30s",
		}))
		checks := []struct {
			name      string
			got, want any
		}{
			{"HTTPAddr", cfg.HTTPAddr, "0.0.0.0:8443"},
			{"OpsAddr", cfg.OpsAddr, "10.0.0.5:9999"},
			{"TLSCertFile", cfg.TLSCertFile, "/tls/cert.pem"},
			{"TLSKeyFile", cfg.TLSKeyFile, "/tls/key.pem"},
			{"TLSEnabled", cfg.TLSEnabled(), true},
			{"CORSOrigins", strings.Join(cfg.CORSOrigins, " "), "https://dash.nxg.fit http://localhost:3000 https://staff.nxg.fit/"},
			{"DatabaseURL", cfg.DatabaseURL.Reveal(), "postgresql://nxg@db.internal/nxg"},
			{"DatabaseMaxConns", cfg.DatabaseMaxConns, int32(25)},
			{"RedisURL", cfg.RedisURL.Reveal(), "rediss://cache.internal:6380"},
			{"MongoURL", cfg.MongoURL.Reveal(), "mongodb+srv://cluster0.example.net"},
			{"MongoDatabase", cfg.MongoDatabase, "nxg_cache"},
			{"S3.Endpoint", cfg.S3.Endpoint, "http://minio.internal:9000"},
			{"S3.Region", cfg.S3.Region, "us-east-2"},
			{"S3.AccessKeyID", cfg.S3.AccessKeyID, "AKIAEXAMPLE"},
			{"S3.SecretAccessKey", cfg.S3.SecretAccessKey.Reveal(), s3Secret},
			{"S3.UsePathStyle", cfg.S3.UsePathStyle, true},
			{"Firebase.CredentialsFile", cfg.Firebase.CredentialsFile, ""},
			{"Firebase.Endpoint", cfg.Firebase.Endpoint, "http://127.0.0.1:4010"},
			{"SentryDSN", cfg.SentryDSN.Reveal(), "https://key@o1.ingest.sentry.io/2"},
			{"SentryEnvironment", cfg.SentryEnvironment, "staging"},
			{"LogLevel", cfg.LogLevel, slog.LevelWarn},
			{"ShutdownTimeout", cfg.ShutdownTimeout, 45 * time.Second},
			{"UnaryTimeout", cfg.UnaryTimeout, 90 * time.Second},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
			}
		}
	})

	t.Run("LogLevels", func(t *testing.T) {
		t.Parallel()
		for raw, want := range map[string]slog.Level{
			"debug": slog.LevelDebug,
			"DEBUG": slog.LevelDebug,
			"info":  slog.LevelInfo,
			"warn":  slog.LevelWarn,
			"error": slog.LevelError,
		} {
			cfg := mustParse(t, with(map[string]string{"NXG_LOG_LEVEL": raw}))
			if cfg.LogLevel != want {
				t.Errorf("NXG_LOG_LEVEL=%s parses to %v, want %v", raw, cfg.LogLevel, want)
			}
		}
	})

	t.Run("FCMEndpointReplacesCredentials", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, with(map[string]string{
			"FIREBASE_CREDENTIALS_FILE": "",
			"NXG_FCM_ENDPOINT":          "https://fcm.stand-in.test",
		}))
		if cfg.Firebase.Endpoint != "https://fcm.stand-in.test" || cfg.Firebase.CredentialsFile != "" {
			t.Fatalf("Firebase = %+v, want the endpoint and no credentials file", cfg.Firebase)
		}
	})

	t.Run("EachRequiredVariableMissing", func(t *testing.T) {
		t.Parallel()
		for _, name := range requiredVars {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				// Absent and present-but-empty are both refused.
				for _, environ := range []map[string]string{
					with(map[string]string{name: ""}),
					func() map[string]string { e := validEnviron(); e[name] = ""; return e }(),
				} {
					_, problems := parseProblems(t, environ)
					if len(problems) != 1 {
						t.Errorf("problems = %q, want exactly one, about %s", problems, name)
					}
					if !strings.Contains(strings.Join(problems, "\n"), `"`+name+`"`) {
						t.Errorf("problems = %q, want one naming %s", problems, name)
					}
				}
			})
		}
	})

	t.Run("SeveralMissingAllListed", func(t *testing.T) {
		t.Parallel()
		missing := []string{"DATABASE_URL", "REDIS_URL", "S3_BUCKET", "NXG_OPS_PASSWORD"}
		environ := validEnviron()
		for _, name := range missing {
			delete(environ, name)
		}
		cerr, problems := parseProblems(t, environ)
		if len(problems) != len(missing) {
			t.Errorf("problems = %q, want %d, one per missing variable", problems, len(missing))
		}
		for _, name := range missing {
			if !strings.Contains(cerr.Error(), `"`+name+`"`) {
				t.Errorf("error %q does not name %s", cerr, name)
			}
		}
	})

	t.Run("EmptyEnvironmentListsEveryRequiredVariable", func(t *testing.T) {
		t.Parallel()
		cerr, _ := parseProblems(t, map[string]string{})
		for _, name := range append(slices.Clone(requiredVars), "FIREBASE_CREDENTIALS_FILE") {
			if !strings.Contains(cerr.Error(), name) {
				t.Errorf("error %q does not name %s", cerr, name)
			}
		}
	})
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		set  map[string]string
		// want is the one problem Parse must report.
		want string
	}{
		{"DatabaseURLWrongScheme", map[string]string{"DATABASE_URL": "mysql://nxg@db.internal/nxg"},
			"DATABASE_URL: not a URL of scheme postgres or postgresql"},
		{"DatabaseURLNotAURL", map[string]string{"DATABASE_URL": "host=db.internal user=nxg"},
			"DATABASE_URL: not a URL of scheme postgres or postgresql"},
		{"RedisURLWrongScheme", map[string]string{"REDIS_URL": "http://cache.internal:6379"},
			"REDIS_URL: not a URL of scheme redis or rediss"},
		{"MongoURLWrongScheme", map[string]string{"MONGO_URL": "postgres://mongo.internal"},
			"MONGO_URL: not a URL of scheme mongodb or mongodb+srv"},
		{"HTTPAddrWithoutPort", map[string]string{"NXG_HTTP_ADDR": "0.0.0.0"},
			`NXG_HTTP_ADDR: "0.0.0.0" is not host:port`},
		{"HTTPAddrBarePort", map[string]string{"NXG_HTTP_ADDR": "8080"},
			`NXG_HTTP_ADDR: "8080" is not host:port`},
		{"OpsAddrWithoutPort", map[string]string{"NXG_OPS_ADDR": "localhost"},
			`NXG_OPS_ADDR: "localhost" is not host:port`},
		{"OnlyTLSCert", map[string]string{"NXG_TLS_CERT_FILE": "/tls/cert.pem"},
			"NXG_TLS_CERT_FILE and NXG_TLS_KEY_FILE: set both or neither"},
		{"OnlyTLSKey", map[string]string{"NXG_TLS_KEY_FILE": "/tls/key.pem"},
			"NXG_TLS_CERT_FILE and NXG_TLS_KEY_FILE: set both or neither"},
		{"OnlyS3KeyID", map[string]string{"S3_ACCESS_KEY_ID": "AKIAEXAMPLE"},
			"S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither"},
		{"OnlyS3Secret", map[string]string{"S3_SECRET_ACCESS_KEY": s3Secret},
			"S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither"},
		{"S3EndpointNotHTTP", map[string]string{"S3_ENDPOINT": "minio.internal:9000"},
			"S3_ENDPOINT: not a URL of scheme http or https"},
		{"NoFirebaseCredentialsNorEndpoint", map[string]string{"FIREBASE_CREDENTIALS_FILE": ""},
			"FIREBASE_CREDENTIALS_FILE: required (a service account JSON file)"},
		{"FCMEndpointNotHTTP", map[string]string{"NXG_FCM_ENDPOINT": "ftp://fcm.internal"},
			"NXG_FCM_ENDPOINT: not a URL of scheme http or https"},
		{"CORSOriginWithPath", map[string]string{"NXG_CORS_ORIGINS": "https://dash.nxg.fit,https://dash.nxg.fit/app"},
			`NXG_CORS_ORIGINS: "https://dash.nxg.fit/app" is not an origin like https://dash.example.com`},
		{"CORSOriginWithoutScheme", map[string]string{"NXG_CORS_ORIGINS": "dash.nxg.fit"},
			`NXG_CORS_ORIGINS: "dash.nxg.fit" is not an origin like https://dash.example.com`},
		{"ShutdownTimeoutNegative", map[string]string{"NXG_SHUTDOWN_TIMEOUT": "-1s"},
			"NXG_SHUTDOWN_TIMEOUT: must be positive"},
		{"ShutdownTimeoutZero", map[string]string{"NXG_SHUTDOWN_TIMEOUT": "0s"},
			"NXG_SHUTDOWN_TIMEOUT: must be positive"},
		{"UnaryTimeoutNegative", map[string]string{"NXG_UNARY_TIMEOUT": "-5s"},
			"NXG_UNARY_TIMEOUT: must be positive"},
		{"DatabaseMaxConnsNegative", map[string]string{"NXG_DATABASE_MAX_CONNS": "-1"},
			"NXG_DATABASE_MAX_CONNS: must not be negative"},
		{"RateLimitNegative", map[string]string{"NXG_RATE_LIMIT_PER_DEVICE": "-3"},
			"NXG_RATE_LIMIT_PER_DEVICE: must be 0 (off) or a positive number of calls per second"},
		{"SessionTimeoutOverrideNegative", map[string]string{"NXG_SESSION_TIMEOUT_OVERRIDE": "-1m"},
			"NXG_SESSION_TIMEOUT_OVERRIDE: must not be negative"},
		{"MachineOfflineAfterTooShort", map[string]string{"NXG_MACHINE_OFFLINE_AFTER": "1s"},
			"NXG_MACHINE_OFFLINE_AFTER: must be at least 5s (consoles send a heartbeat every few seconds)"},
		{"NoStreamsPerUser", map[string]string{"NXG_MAX_STREAMS_PER_USER": "0"},
			"NXG_MAX_STREAMS_PER_USER: must be at least 1"},
		{"NoStreamsPerDevice", map[string]string{"NXG_MAX_STREAMS_PER_DEVICE": "0"},
			"NXG_MAX_STREAMS_PER_DEVICE: must be at least 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, problems := parseProblems(t, with(c.set))
			if len(problems) != 1 || problems[0] != c.want {
				t.Fatalf("problems = %q, want exactly [%q]", problems, c.want)
			}
		})
	}

	t.Run("ShutdownTimeoutNotADuration", func(t *testing.T) {
		t.Parallel()
		cerr, _ := parseProblems(t, with(map[string]string{"NXG_SHUTDOWN_TIMEOUT": "abc"}))
		msg := cerr.Error()
		if !strings.Contains(msg, "NXG_SHUTDOWN_TIMEOUT") {
			t.Errorf("error %q does not name NXG_SHUTDOWN_TIMEOUT", msg)
		}
		if !strings.Contains(msg, `"abc"`) {
			t.Errorf("error %q does not quote the bad value \"abc\"", msg)
		}
	})

	t.Run("UnknownLogLevel", func(t *testing.T) {
		t.Parallel()
		cerr, _ := parseProblems(t, with(map[string]string{"NXG_LOG_LEVEL": "verbose"}))
		if !strings.Contains(cerr.Error(), `"verbose"`) {
			t.Errorf("error %q does not quote the bad value \"verbose\"", cerr)
		}
	})

	t.Run("EveryProblemAtOnce", func(t *testing.T) {
		t.Parallel()
		_, problems := parseProblems(t, with(map[string]string{
			"DATABASE_URL":         "mysql://db",
			"NXG_HTTP_ADDR":        "8080",
			"NXG_TLS_KEY_FILE":     "/tls/key.pem",
			"S3_SECRET_ACCESS_KEY": s3Secret,
			"NXG_SHUTDOWN_TIMEOUT": "-1s",
			"MONGO_URL":            "",
		}))
		joined := strings.Join(problems, "\n")
		for _, name := range []string{"DATABASE_URL", "NXG_HTTP_ADDR", "NXG_TLS_KEY_FILE", "S3_SECRET_ACCESS_KEY", "NXG_SHUTDOWN_TIMEOUT", "MONGO_URL"} {
			if !strings.Contains(joined, name) {
				t.Errorf("problems %q do not name %s", problems, name)
			}
		}
		if len(problems) != 6 {
			t.Errorf("got %d problems %q, want 6", len(problems), problems)
		}
	})

	// Parse promises that every problem names its variable. Values the env
	// library cannot convert are reported by Go field name instead (see the
	// report: ParseError is passed through unchanged).
	t.Run("UnparsableValueNamesItsVariable", func(t *testing.T) {
		t.Parallel()
		for name, bad := range map[string]string{
			"NXG_LOG_LEVEL":             "verbose",
			"NXG_DATABASE_MAX_CONNS":    "many",
			"NXG_SHUTDOWN_TIMEOUT":      "abc",
			"NXG_UNARY_TIMEOUT":         "soon",
			"S3_USE_PATH_STYLE":         "maybe",
			"NXG_MACHINE_OFFLINE_AFTER": "soon",
			"NXG_MAX_STREAMS_PER_USER":  "lots",
			// The outside services repeat these fields under three
			// prefixes; the one set is named.
			"NXG_MEALPLANNER_TIMEOUT":           "soon",
			"NXG_WORKOUTPLANNER_MAX_ATTEMPTS":   "few",
			"NXG_MEALDETECTOR_BREAKER_FAILURES": "-1",
		} {
			_, problems := parseProblems(t, with(map[string]string{name: bad}))
			if len(problems) != 1 || !strings.HasPrefix(problems[0], name+":") || !strings.Contains(problems[0], bad) {
				t.Errorf("%s=%s: problems = %q, want one problem starting %q and quoting the value", name, bad, problems, name+":")
			}
		}
	})
}

func TestSecret(t *testing.T) {
	t.Parallel()
	const raw = "hunter2-Secret"
	s := Secret(raw)

	t.Run("Masked", func(t *testing.T) {
		t.Parallel()
		for _, format := range []string{"%v", "%s", "%+v", "%q", "%x"} {
			got := fmt.Sprintf(format, s)
			if strings.Contains(got, raw) || strings.Contains(got, fmt.Sprintf("%x", raw)) {
				t.Errorf("Sprintf(%q, secret) = %q, reveals the secret", format, got)
			}
		}
		if got := fmt.Sprint(s); got != "*****" {
			t.Errorf("Sprint(secret) = %q, want *****", got)
		}
		if got := s.String(); got != "*****" {
			t.Errorf("String() = %q, want *****", got)
		}
		if got := s.LogValue(); got.Kind() != slog.KindString || got.String() != "*****" {
			t.Errorf("LogValue() = %v, want the string *****", got)
		}
		if got := s.Reveal(); got != raw {
			t.Errorf("Reveal() = %q, want %q", got, raw)
		}
	})

	t.Run("EmptyPrintsEmpty", func(t *testing.T) {
		t.Parallel()
		if got := fmt.Sprint(Secret("")); got != "" {
			t.Errorf("Sprint(empty secret) = %q, want \"\" so an unset secret shows as unset", got)
		}
	})

	t.Run("MaskedInsideConfig", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, with(map[string]string{"S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "S3_SECRET_ACCESS_KEY": s3Secret}))
		for _, format := range []string{"%v", "%+v", "%s"} {
			got := fmt.Sprintf(format, cfg)
			for _, secret := range []string{dbPassword, redisPassword, mongoPassword, opsPassword, s3Secret} {
				if strings.Contains(got, secret) {
					t.Errorf("Sprintf(%q, cfg) reveals %q: %s", format, secret, got)
				}
			}
		}
	})

	// The type's documentation promises fmt and JSON mask it too.
	t.Run("MaskedInGoSyntaxAndJSON", func(t *testing.T) {
		t.Parallel()
		if got := fmt.Sprintf("%#v", s); strings.Contains(got, raw) {
			t.Errorf("Sprintf(%%#v, secret) = %q, reveals the secret", got)
		}
		b, err := json.Marshal(struct{ S Secret }{s})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), raw) {
			t.Errorf("json.Marshal = %s, reveals the secret", b)
		}
	})
}

func TestConfigLogValue(t *testing.T) {
	t.Parallel()
	secrets := []string{dbPassword, redisPassword, mongoPassword, opsPassword, s3Secret, "sentry-key-33"}
	environ := with(map[string]string{
		"S3_ACCESS_KEY_ID":     "AKIAEXAMPLE",
		"S3_SECRET_ACCESS_KEY": s3Secret,
		"SENTRY_DSN":           "https://sentry-key-33@o1.ingest.sentry.io/2",
	})
	cfg := mustParse(t, environ)

	t.Run("JSON", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("configuration", "config", cfg)
		out := buf.String()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("log line reveals %q: %s", s, out)
			}
		}
		for _, host := range []string{"db.internal", "cache.internal", "mongo.internal"} {
			if !strings.Contains(out, host) {
				t.Errorf("log line does not show host %s: %s", host, out)
			}
		}

		var line struct {
			Msg    string         `json:"msg"`
			Config map[string]any `json:"config"`
		}
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, out)
		}
		want := map[string]any{
			"http_addr":            ":8080",
			"ops_addr":             "127.0.0.1:9090",
			"ops_user":             "ops",
			"ops_password":         "*****",
			"tls":                  false,
			"database_url":         "postgres://nxg:xxxxx@db.internal:5432/nxg?sslmode=require",
			"database_max_conns":   float64(0),
			"redis_url":            "redis://:xxxxx@cache.internal:6379/0",
			"mongo_url":            "mongodb://nxg:xxxxx@mongo.internal:27017",
			"mongo_database":       "nxg",
			"s3_bucket":            "nxg-media",
			"s3_region":            "eu-west-1",
			"s3_secret_access_key": "*****",
			"firebase_project_id":  "nxg-prod",
			"sentry":               true,
			"log_level":            "INFO",
			"shutdown_timeout":     float64(30 * time.Second),
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if got := line.Config[k]; got != want[k] {
				t.Errorf("config.%s = %#v, want %#v", k, got, want[k])
			}
		}
	})

	t.Run("Text", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("configuration", "config", cfg)
		for _, s := range secrets {
			if strings.Contains(buf.String(), s) {
				t.Errorf("text log line reveals %q: %s", s, buf.String())
			}
		}
		if !strings.Contains(buf.String(), "db.internal") {
			t.Errorf("text log line does not show the database host: %s", buf.String())
		}
	})

	// pgx (and libpq) accept the password as a query parameter too.
	t.Run("PasswordInQueryStringMasked", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, with(map[string]string{"DATABASE_URL": "postgres://nxg@db.internal/nxg?password=" + dbPassword}))
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("configuration", "config", cfg)
		if strings.Contains(buf.String(), dbPassword) {
			t.Errorf("log line reveals the password given as a query parameter: %s", buf.String())
		}
	})
}
