// Package storage keeps NXG's files in S3: 3D avatars, meal photos and GDPR
// export archives.
//
// Every object of a user lives under users/{user_id}/, so erasing a user is
// one DeletePrefix. Every write asks for server-side encryption, and clients
// up- and download through presigned URLs, so file bytes never pass through
// the API servers.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("storage: object not found")

// sse is the encryption every write asks for: SSE-S3, keys managed by S3.
const sse = types.ServerSideEncryptionAes256

// defaultRegion signs requests to S3-compatible servers, which ignore the
// region but need one for SigV4.
const defaultRegion = "us-east-1"

// Config says which bucket to use and how to reach it.
type Config struct {
	// Endpoint is the base URL of an S3-compatible server; empty means AWS.
	Endpoint string
	Bucket   string
	// Region is required for AWS (or AWS_REGION must be set); with an
	// Endpoint it defaults to us-east-1.
	Region string
	// AccessKeyID and SecretAccessKey are static credentials; both empty
	// means the default AWS credential chain (environment, shared files,
	// IAM role).
	AccessKeyID     string
	SecretAccessKey string
	// UsePathStyle puts the bucket in the path instead of the host name, as
	// servers without bucket DNS (MinIO, the dev stand-in) need.
	UsePathStyle bool
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ContentType  string
	ETag         string
	LastModified time.Time
	// ServerSideEncryption is the encryption S3 reports, "AES256" for
	// objects written by this package.
	ServerSideEncryption string
}

// Client reads and writes objects of one bucket.
type Client struct {
	s3      *s3.Client
	presign *s3.PresignClient
	bucket  string
	// plainHTTP is set for an http:// endpoint, where streamed bodies need
	// special signing (see Put).
	plainHTTP bool
	// listPageSize is the ListObjectsV2 page size of DeletePrefix; tests
	// lower it to exercise paging without thousands of objects.
	listPageSize int32
}

// New builds a client; it does not contact S3, so use Ping to check the
// configuration at start-up.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: bucket is required")
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, errors.New("storage: set both the access key id and the secret access key, or neither")
	}
	var opts []func(*config.LoadOptions) error
	region := cfg.Region
	if region == "" && cfg.Endpoint != "" {
		region = defaultRegion
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("storage: region is required (S3_REGION or AWS_REGION)")
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.UsePathStyle
	})
	return &Client{
		s3:           client,
		presign:      s3.NewPresignClient(client),
		bucket:       cfg.Bucket,
		plainHTTP:    strings.HasPrefix(strings.ToLower(cfg.Endpoint), "http://"),
		listPageSize: 1000,
	}, nil
}

// Put stores body under key with server-side encryption. size must be the
// exact length of body: S3 needs it up front and refuses a short body.
func (c *Client) Put(ctx context.Context, key, contentType string, body io.Reader, size int64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("storage: put %q: size must be known, got %d", key, size)
	}
	in := &s3.PutObjectInput{
		Bucket:               aws.String(c.bucket),
		Key:                  aws.String(key),
		Body:                 body,
		ContentLength:        aws.Int64(size),
		ServerSideEncryption: sse,
	}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	var optFns []func(*s3.Options)
	if _, seekable := body.(io.ReadSeeker); !seekable && c.plainHTTP {
		// Over TLS the SDK streams a one-pass body with a trailing CRC32.
		// Over plain HTTP (the dev stand-in, a local MinIO) it refuses to:
		// SigV4 would have to hash the payload in advance, which needs a
		// body it can rewind. There the body is sent as UNSIGNED-PAYLOAD
		// without the optional checksum; on loopback nothing can corrupt it.
		optFns = append(optFns,
			s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware),
			func(o *s3.Options) { o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired })
	}
	if _, err := c.s3.PutObject(ctx, in, optFns...); err != nil {
		return fmt.Errorf("storage: put %q: %w", key, err)
	}
	return nil
}

// PresignGet returns a URL that downloads key with a plain GET until ttl
// passes.
func (c *Client) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	req, err := c.presign.PresignGetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(c.bucket),
		Key:    aws.String(key),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("storage: presign get %q: %w", key, err)
	}
	return req.URL, nil
}

// PresignPut returns a URL that uploads key with a plain PUT until ttl
// passes. The content type, the size and server-side encryption are part of
// the signature, so the uploader must send exactly the headers UploadHeaders
// returns (and a body of size bytes); S3 refuses anything else, which keeps a
// client from storing another type, size or an unencrypted object.
func (c *Client) PresignPut(ctx context.Context, key, contentType string, size int64, ttl time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if size < 0 {
		return "", fmt.Errorf("storage: presign put %q: size must be known, got %d", key, size)
	}
	in := &s3.PutObjectInput{
		Bucket:               aws.String(c.bucket),
		Key:                  aws.String(key),
		ContentLength:        aws.Int64(size),
		ServerSideEncryption: sse,
	}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	req, err := c.presign.PresignPutObject(ctx, in, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("storage: presign put %q: %w", key, err)
	}
	return req.URL, nil
}

// UploadHeaders are the headers a client must send with a PresignPut URL,
// besides Content-Length, which HTTP clients set from the body.
func UploadHeaders(contentType string) http.Header {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	h.Set("X-Amz-Server-Side-Encryption", string(sse))
	return h
}

// Head describes key, or returns ErrNotFound when there is no such object.
func (c *Client) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return ObjectInfo{}, err
	}
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(c.bucket),
		Key:    aws.String(key),
	})
	if err != nil {
		if isNotFound(err) {
			return ObjectInfo{}, fmt.Errorf("storage: head %q: %w", key, ErrNotFound)
		}
		return ObjectInfo{}, fmt.Errorf("storage: head %q: %w", key, err)
	}
	return ObjectInfo{
		Key:                  key,
		Size:                 aws.ToInt64(out.ContentLength),
		ContentType:          aws.ToString(out.ContentType),
		ETag:                 strings.Trim(aws.ToString(out.ETag), `"`),
		LastModified:         aws.ToTime(out.LastModified),
		ServerSideEncryption: string(out.ServerSideEncryption),
	}, nil
}

// DeletePrefix deletes every object whose key starts with prefix and returns
// how many it deleted. It is how a user's files are erased (GDPR): prefix
// users/{id}/. An empty prefix is refused, since it would empty the bucket.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, errors.New("storage: delete prefix: refusing an empty prefix, which would delete the whole bucket")
	}
	deleted := 0
	pages := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{
		Bucket:  aws.String(c.bucket),
		Prefix:  aws.String(prefix),
		MaxKeys: aws.Int32(c.listPageSize),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return deleted, fmt.Errorf("storage: delete prefix %q: list: %w", prefix, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		// One page holds at most 1000 keys, DeleteObjects' limit.
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		out, err := c.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(c.bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return deleted, fmt.Errorf("storage: delete prefix %q: %w", prefix, err)
		}
		// In quiet mode S3 lists only the failures.
		deleted += len(ids) - len(out.Errors)
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return deleted, fmt.Errorf("storage: delete prefix %q: %d objects not deleted, first %q: %s: %s",
				prefix, len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	return deleted, nil
}

// Ping checks that the bucket exists and the credentials may use it, for
// readiness checks and start-up.
func (c *Client) Ping(ctx context.Context) error {
	if _, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)}); err != nil {
		return fmt.Errorf("storage: head bucket %q: %w", c.bucket, err)
	}
	return nil
}

func checkKey(key string) error {
	if key == "" {
		return errors.New("storage: empty object key")
	}
	return nil
}

// isNotFound recognises a missing object: HEAD responses have no body, so S3
// reports only the status, which the SDK turns into types.NotFound; GET-style
// errors carry NoSuchKey.
func isNotFound(err error) bool {
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nsk) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NotFound", "NoSuchKey":
			return true
		}
	}
	return false
}
