package erasure

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
)

var queries = dbsqlc.New()

// Table is a PostgreSQL table holding a user's rows: those whose Column
// equals the user's id. Name may be schema-qualified ("schema.table").
type Table struct {
	Name, Column string
}

// PostgresTables deletes the user's rows from every table in Tables, in
// order, then the users row, all in one transaction: the erasure of the
// database is all or nothing, and the users row, which holds the wrapped
// data key, goes last so it is never gone while rows encrypted under it
// remain. Deleting nothing (a re-run) succeeds.
//
// Tables whose foreign key to users cascades would be emptied by the last
// delete anyway; listing them states the intent and keeps working if a
// later migration changes the key.
type PostgresTables struct {
	DB     db.Beginner
	Tables []Table
}

// Name implements Eraser.
func (PostgresTables) Name() string { return "postgres" }

// Erase implements Eraser.
func (p PostgresTables) Erase(ctx context.Context, userID uuid.UUID) error {
	if p.DB == nil {
		return errors.New("no database configured")
	}
	stmts := make([]string, 0, len(p.Tables))
	for _, t := range p.Tables {
		if t.Name == "" || t.Column == "" {
			return fmt.Errorf("table %+v needs a name and a column", t)
		}
		if t.Name == "users" {
			return errors.New("the users row is deleted last by PostgresTables itself; do not list it")
		}
		stmts = append(stmts, "DELETE FROM "+pgx.Identifier(strings.Split(t.Name, ".")).Sanitize()+
			" WHERE "+pgx.Identifier{t.Column}.Sanitize()+" = $1")
	}
	return db.WithTx(ctx, p.DB, func(tx pgx.Tx) error {
		for i, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt, userID); err != nil {
				return fmt.Errorf("delete from %s: %w", p.Tables[i].Name, err)
			}
		}
		if _, err := queries.UserDelete(ctx, tx, userID); err != nil {
			return fmt.Errorf("delete from users: %w", err)
		}
		return nil
	})
}

// PrefixDeleter deletes every object under a key prefix; *storage.Client is one.
type PrefixDeleter interface {
	DeletePrefix(ctx context.Context, prefix string) (int, error)
}

// DefaultS3Prefix is where every object of a user lives (design doc,
// "Where state lives").
const DefaultS3Prefix = "users/" + UserIDPlaceholder + "/"

// S3Prefix deletes every object under Prefix, a template holding
// {user_id} and ending in "/" (empty means DefaultS3Prefix).
type S3Prefix struct {
	Storage PrefixDeleter
	Prefix  string
}

// Name implements Eraser.
func (S3Prefix) Name() string { return "s3" }

// Erase implements Eraser.
func (s S3Prefix) Erase(ctx context.Context, userID uuid.UUID) error {
	if s.Storage == nil {
		return errors.New("no storage configured")
	}
	template := s.Prefix
	if template == "" {
		template = DefaultS3Prefix
	}
	prefix, err := expand(template, userID)
	if err != nil {
		return err
	}
	// Without the slash, users/{id} would also match a longer name that
	// begins with the id.
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("prefix template %q must end in /", template)
	}
	_, err = s.Storage.DeletePrefix(ctx, prefix)
	return err
}

// SessionRevoker ends every session of a user; *session.Store is one.
type SessionRevoker interface {
	RevokeAll(ctx context.Context, userID, except string) (int, error)
}

// RedisSessions revokes every session of the user, with its refresh-token
// family: the session records (device, IP, user agent) go with them.
type RedisSessions struct {
	Sessions SessionRevoker
}

// Name implements Eraser.
func (RedisSessions) Name() string { return "redis.sessions" }

// Erase implements Eraser.
func (r RedisSessions) Erase(ctx context.Context, userID uuid.UUID) error {
	if r.Sessions == nil {
		return errors.New("no session store configured")
	}
	_, err := r.Sessions.RevokeAll(ctx, userID.String(), "")
	return err
}

// RedisKeys deletes Redis keys naming the user. Every entry of Keys is a
// template holding {user_id}, under Prefix (the instance's key prefix). An
// entry with a glob character (* ? [) is a pattern: the keyspace is scanned
// for matches, which costs a pass over every key, so prefer exact keys.
type RedisKeys struct {
	Client redis.UniversalClient
	Prefix string
	Keys   []string
}

// Name implements Eraser.
func (RedisKeys) Name() string { return "redis.keys" }

// Erase implements Eraser.
func (r RedisKeys) Erase(ctx context.Context, userID uuid.UUID) error {
	if r.Client == nil {
		return errors.New("no Redis client configured")
	}
	var exact []string
	for _, template := range r.Keys {
		key, err := expand(template, userID)
		if err != nil {
			return err
		}
		if !strings.ContainsAny(template, "*?[") {
			exact = append(exact, r.Prefix+key)
			continue
		}
		if err := r.deleteMatching(ctx, globEscape(r.Prefix)+key); err != nil {
			return fmt.Errorf("delete keys matching %q: %w", template, err)
		}
	}
	// One key per command: the keys may hash to different cluster slots.
	for _, key := range exact {
		if err := r.Client.Del(ctx, key).Err(); err != nil {
			return fmt.Errorf("delete %q: %w", key, err)
		}
	}
	return nil
}

func (r RedisKeys) deleteMatching(ctx context.Context, pattern string) error {
	iter := r.Client.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		if err := r.Client.Del(ctx, iter.Val()).Err(); err != nil {
			return err
		}
	}
	return iter.Err()
}

// globEscape quotes the glob characters of a literal key part for SCAN MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// DefaultMongoUserField is the field naming the user in MongoDB documents.
const DefaultMongoUserField = "userId"

// MongoCollections deletes, from every collection in Collections, the
// documents whose Field (empty means DefaultMongoUserField) is the user's
// id, stored either as its string or as a BSON UUID.
type MongoCollections struct {
	DB          *mongo.Database
	Collections []string
	Field       string
}

// Name implements Eraser.
func (MongoCollections) Name() string { return "mongo" }

// Erase implements Eraser.
func (m MongoCollections) Erase(ctx context.Context, userID uuid.UUID) error {
	if len(m.Collections) == 0 {
		return nil
	}
	if m.DB == nil {
		return errors.New("no MongoDB database configured")
	}
	field := m.Field
	if field == "" {
		field = DefaultMongoUserField
	}
	filter := bson.D{{Key: field, Value: bson.D{{Key: "$in", Value: bson.A{
		userID.String(),
		bson.Binary{Subtype: bson.TypeBinaryUUID, Data: userID[:]},
	}}}}}
	for _, name := range m.Collections {
		if _, err := m.DB.Collection(name).DeleteMany(ctx, filter); err != nil {
			return fmt.Errorf("delete from %s: %w", name, err)
		}
	}
	return nil
}

// RiverJobs deletes River jobs about the user: jobs whose args carry the
// user's id as a top-level user_id (the convention of every job about a
// user). Finished jobs would keep the id until River's retention removes
// them; waiting ones have nothing left to do. Running jobs are left to
// finish, among them the erasure itself: workers of jobs about a user
// check that the user still exists.
type RiverJobs struct {
	DB dbsqlc.DBTX
}

// Name implements Eraser.
func (RiverJobs) Name() string { return "river" }

// Erase implements Eraser.
func (r RiverJobs) Erase(ctx context.Context, userID uuid.UUID) error {
	if r.DB == nil {
		return errors.New("no database configured")
	}
	_, err := r.DB.Exec(ctx, `DELETE FROM river_job WHERE args ->> 'user_id' = $1 AND state <> 'running'`, userID.String())
	return err
}

// ErasedAction is the audit action of the closing row of an erasure.
const ErasedAction = "gdpr.account_erased"

// AuditPseudonymise removes the user's identity from the audit trail
// (audit.Log.EraseSubject: ids, IPs and user agents become NULL, the keyed
// pseudonyms the chain covers stay) and, in the same transaction, writes the
// closing row once: action gdpr.account_erased by the system (nil actor),
// no target id, details {"subject": pseudonym}. It holds no personal data,
// and the pseudonym ties it to the user's earlier rows.
//
// Default runs it last, so the closing row says the whole erasure is done.
type AuditPseudonymise struct {
	DB  db.Beginner
	Log *audit.Log
}

// Name implements Eraser.
func (AuditPseudonymise) Name() string { return "audit" }

// Erase implements Eraser.
func (a AuditPseudonymise) Erase(ctx context.Context, userID uuid.UUID) error {
	if a.DB == nil || a.Log == nil {
		return errors.New("no database or audit log configured")
	}
	subject := a.Log.Pseudonym(userID.String())
	return db.WithTx(ctx, a.DB, func(tx pgx.Tx) error {
		if _, err := a.Log.EraseSubject(ctx, tx, userID); err != nil {
			return err
		}
		// The chain's lock (Record takes it again; advisory locks are
		// re-entrant) makes the check and the insert one step, so two
		// runs at once still write one closing row.
		if err := queries.AuditLock(ctx, tx); err != nil {
			return fmt.Errorf("lock audit chain: %w", err)
		}
		recorded, err := queries.AuditErasureRecorded(ctx, tx, subject)
		if err != nil {
			return fmt.Errorf("look for the closing row: %w", err)
		}
		if recorded {
			return nil
		}
		return a.Log.Record(ctx, tx, audit.Event{
			ActorID:    uuid.Nil,
			Action:     ErasedAction,
			TargetType: "user",
			Result:     audit.ResultSuccess,
			Details:    map[string]string{"subject": subject},
		})
	})
}
