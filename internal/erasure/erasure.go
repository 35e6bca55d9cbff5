// Package erasure erases a person from every store NXG keeps data in: the
// GDPR right to erasure (DeleteAccount; NFR6).
//
// An erasure is a Registry of named Erasers run in order by the
// account_erasure job (jobs/account_erasure.go). Each Eraser removes the
// user's data from one store and is idempotent: River runs jobs at least
// once and retries failures, so an eraser must finish the job when re-run
// after a partial failure, and do nothing harmful when re-run after success.
// The first error stops the run and the job is retried later; later erasers
// only run once the earlier ones have succeeded.
//
// Helpers cover the common kinds of store:
//
//   - PostgresTables deletes the user's rows from registered (table, column)
//     pairs in one transaction, and the users row last: that row holds the
//     wrapped data key, so deleting it crypto-shreds every ciphertext of the
//     user, also in backups.
//   - S3Prefix deletes every object under users/{user_id}/.
//   - RedisSessions revokes the user's sessions; RedisKeys deletes other
//     Redis keys that name the user.
//   - MongoCollections deletes documents whose userId is the user's.
//   - RiverJobs deletes River jobs about the user that are not running.
//   - AuditPseudonymise replaces the user's identity in the audit trail by
//     its pseudonym (the trail stays verifiable) and writes the closing
//     gdpr.account_erased row, which names the pseudonym only.
//   - Func adapts a function, for anything else.
//
// # Adding a store or a table
//
// Default builds the production registry. A feature that keeps personal
// data adds one line:
//
//   - a PostgreSQL table: {"meal_photos", "user_id"} in UserTables
//     (TestDefaultCoversUserColumns fails until every user_id column, and
//     every foreign key to users that does not SET NULL, is listed);
//   - a MongoDB collection: append it to jobs.CacheCollections (its
//     documents carry a userId field); Default gets that list as
//     Deps.MongoCollections;
//   - a Redis key: a template in UserRedisKeys, e.g. "streak:{user_id}",
//     or a pattern such as "feed:{user_id}:*";
//   - S3 files: keep them under users/{user_id}/ and nothing is needed;
//   - a job about a user: name them in a top-level user_id arg and nothing
//     is needed (RiverJobs);
//   - any other store: an eraser in Default's list, e.g.
//     Func("search_index", idx.DeleteUser), above the PostgreSQL step.
//
// Erasers must never need the user's row or data key: a re-run after the
// PostgreSQL step finds neither, and must still finish.
package erasure

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Eraser removes one user's data from one store. Erase must be idempotent:
// erasing a user already (partly or fully) erased finishes the job and
// succeeds.
type Eraser interface {
	// Name identifies the eraser in errors, logs and job output.
	Name() string
	Erase(ctx context.Context, userID uuid.UUID) error
}

// Registry is the ordered list of erasers run for every erased user.
type Registry struct {
	erasers []Eraser
}

// NewRegistry returns a registry running erasers in the order given.
func NewRegistry(erasers ...Eraser) *Registry {
	r := &Registry{}
	for _, e := range erasers {
		r.Register(e)
	}
	return r
}

// Register appends e, to run after the erasers registered before it. A nil
// eraser, an empty name or a name already registered is a programming error
// and panics, like registering a second HTTP handler for a pattern.
func (r *Registry) Register(e Eraser) {
	if e == nil {
		panic("erasure: Register of a nil Eraser")
	}
	name := e.Name()
	if name == "" {
		panic("erasure: Register of an Eraser without a name")
	}
	for _, have := range r.erasers {
		if have.Name() == name {
			panic("erasure: Register called twice for " + name)
		}
	}
	r.erasers = append(r.erasers, e)
}

// Erasers returns the registered erasers in order.
func (r *Registry) Erasers() []Eraser {
	return append([]Eraser(nil), r.erasers...)
}

// Names returns the names of the registered erasers in order.
func (r *Registry) Names() []string {
	names := make([]string, len(r.erasers))
	for i, e := range r.erasers {
		names[i] = e.Name()
	}
	return names
}

// Erase runs every eraser in order and stops at the first error, which it
// returns naming the eraser; running Erase again resumes the work.
func (r *Registry) Erase(ctx context.Context, userID uuid.UUID) error {
	if userID == uuid.Nil {
		return errors.New("erasure: refusing to erase the nil user id")
	}
	for _, e := range r.erasers {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("erasure: before %s: %w", e.Name(), err)
		}
		if err := e.Erase(ctx, userID); err != nil {
			return fmt.Errorf("erasure: %s: %w", e.Name(), err)
		}
	}
	return nil
}

// Func adapts a function to an Eraser named name.
func Func(name string, fn func(ctx context.Context, userID uuid.UUID) error) Eraser {
	return funcEraser{name: name, fn: fn}
}

type funcEraser struct {
	name string
	fn   func(ctx context.Context, userID uuid.UUID) error
}

func (f funcEraser) Name() string { return f.name }

func (f funcEraser) Erase(ctx context.Context, userID uuid.UUID) error {
	if f.fn == nil {
		return errors.New("no function")
	}
	return f.fn(ctx, userID)
}

// UserIDPlaceholder is replaced by the user's id in key and prefix templates.
const UserIDPlaceholder = "{user_id}"

// expand fills a template with the user's id. A template without the
// placeholder would name the same keys for every user, so it is refused:
// erasing one user must never touch another's data.
func expand(template string, userID uuid.UUID) (string, error) {
	if !strings.Contains(template, UserIDPlaceholder) {
		return "", fmt.Errorf("template %q does not contain %s", template, UserIDPlaceholder)
	}
	return strings.ReplaceAll(template, UserIDPlaceholder, userID.String()), nil
}
