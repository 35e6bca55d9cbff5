package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
	bolt "go.etcd.io/bbolt"
)

// S3 is an in-process S3 server (gofakes3) whose objects persist in a bbolt
// file under its directory.
//
// bbolt was chosen over gofakes3's afero backend because it keeps S3's flat
// key space exactly: with files on disk, keys such as "a" and "a/b" collide
// as file and folder, and odd keys map to odd paths.
//
// The server accepts any credentials and does not check signatures or the
// expiry of presigned URLs; the fields below are what clients should sign
// with so that the same code works against real S3.
type S3 struct {
	Bucket          string
	Region          string
	AccessKeyID     string
	SecretAccessKey string

	db  *bolt.DB
	srv *httpServer

	closeOnce sync.Once
	closeErr  error
}

// Credentials and region of the S3 stand-in. They are fixed rather than
// random so presigned URLs in a developer's notes stay valid across restarts.
const (
	devS3Region          = "us-east-1"
	devS3AccessKeyID     = "nxg-dev-access-key"
	devS3SecretAccessKey = "nxg-dev-secret-key"
)

// StartS3 starts the S3 stand-in with its data in dir/s3.bolt and bucket
// created if it does not exist yet.
func StartS3(ctx context.Context, dir, bucket string, logger *slog.Logger) (*S3, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if dir == "" || bucket == "" {
		return nil, errors.New("devstack: S3 stand-in needs a data directory and a bucket name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: create S3 data directory: %w", err)
	}
	path := filepath.Join(dir, "s3.bolt")
	// bbolt locks its file; a timeout turns "another dev server uses this
	// data directory" into an error instead of a silent hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("devstack: %s is locked by another process (is another nxg-dev using this data directory?): %w", path, err)
		}
		return nil, fmt.Errorf("devstack: open %s: %w", path, err)
	}

	backend := s3bolt.New(db)
	if err := backend.CreateBucket(bucket); err != nil && !gofakes3.IsAlreadyExists(err) {
		_ = db.Close()
		return nil, fmt.Errorf("devstack: create bucket %q: %w", bucket, err)
	}
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakesLogger{logger.With("stand_in", "s3")}))
	srv, err := serveHTTP("s3", faker.Server(), logger)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	logger.Info("started S3 stand-in (gofakes3)", "endpoint", srv.url, "bucket", bucket, "file", path)
	return &S3{
		Bucket:          bucket,
		Region:          devS3Region,
		AccessKeyID:     devS3AccessKeyID,
		SecretAccessKey: devS3SecretAccessKey,
		db:              db,
		srv:             srv,
	}, nil
}

// Endpoint is the base URL to give the S3 client; use path-style addressing,
// since there is no DNS for bucket subdomains on 127.0.0.1.
func (s *S3) Endpoint() string { return s.srv.url }

// Close stops serving and then closes the bbolt file, so no request writes
// into a closed database; it releases the data directory's lock.
func (s *S3) Close() error {
	s.closeOnce.Do(func() { s.closeErr = errors.Join(s.srv.close(), s.db.Close()) })
	return s.closeErr
}

// gofakesLogger routes gofakes3's logging to slog. Its INFO lines name every
// request, which is debug detail for a developer.
type gofakesLogger struct{ l *slog.Logger }

func (g gofakesLogger) Print(level gofakes3.LogLevel, v ...any) {
	// Sprintln puts spaces between all operands, as the log package does.
	msg := strings.TrimSuffix(fmt.Sprintln(v...), "\n")
	switch level {
	case gofakes3.LogErr:
		g.l.Error(msg)
	case gofakes3.LogWarn:
		g.l.Warn(msg)
	default:
		g.l.Debug(msg)
	}
}
