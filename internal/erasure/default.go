package erasure

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// Deps are the stores Default erases from. A store left nil makes its
// eraser fail when it runs (and the job retry), never skip silently: an
// erasure that quietly leaves data behind breaks a legal promise.
type Deps struct {
	Pool     *pgxpool.Pool
	Storage  *storage.Client
	Sessions *session.Store
	// Redis and RedisPrefix reach the instance's other Redis keys.
	Redis       redis.UniversalClient
	RedisPrefix string
	// Mongo and MongoCollections are the MongoDB cache collections, whose
	// documents carry a userId field (jobs.CacheCollections).
	Mongo            *mongo.Database
	MongoCollections []string
	Audit            *audit.Log
}

// UserTables are the PostgreSQL tables holding a user's rows, deleted in
// this order before the users row. Add a feature's tables here (children
// before the parents they reference).
var UserTables = []Table{
	{"body_metrics", "user_id"},
	{"profiles", "user_id"},
	{"privacy_settings", "user_id"},
	{"data_exports", "user_id"},
	{"staff_branches", "user_id"},
	// created_by is ON DELETE SET NULL: a grant by the erased user stays
	// with its member.
	{"memberships", "user_id"},
	// The gym floor: sets reference links, links reference sessions.
	// gym_sessions.ended_by and devices.created_by/revoked_by are ON DELETE
	// SET NULL: what staff did stays with the member or branch it concerns.
	// Training: sets reference workouts and machine sets, workouts
	// reference plans.
	{"workout_sets", "user_id"},
	{"workouts", "user_id"},
	{"workout_plans", "user_id"},
	{"machine_sets", "user_id"},
	{"machine_links", "user_id"},
	{"gym_sessions", "user_id"},
	// Nutrition: meals reference analyses, analyses reference uploads.
	// The photos themselves are under users/{user_id}/ (S3Prefix).
	{"meals", "user_id"},
	{"meal_analyses", "user_id"},
	{"meal_photo_uploads", "user_id"},
	{"macro_targets", "user_id"},
	{"meal_plan_requests", "user_id"},
}

// UserRedisKeys are the Redis keys naming a user besides their sessions,
// under the instance's prefix.
var UserRedisKeys = []string{
	// The per-user request limit (server/interceptor_ratelimit.go keys
	// ratelimit.Limiter by "user:"+id; the Limiter puts its keys under "rl:").
	"rl:user:" + UserIDPlaceholder,
}

// Default is the registry production runs. See the package comment for how
// a feature adds its stores.
func Default(d Deps) *Registry {
	// Typed nils would pass the erasers' nil checks and panic instead.
	var (
		tx       db.Beginner
		jobsDB   dbsqlc.DBTX
		sessions SessionRevoker
		files    PrefixDeleter
	)
	if d.Pool != nil {
		tx, jobsDB = d.Pool, d.Pool
	}
	if d.Sessions != nil {
		sessions = d.Sessions
	}
	if d.Storage != nil {
		files = d.Storage
	}

	return NewRegistry(
		// Sign the user out everywhere first (DeleteAccount did; a second
		// revocation is harmless), so nothing they do races the erasure.
		RedisSessions{Sessions: sessions},
		RedisKeys{Client: d.Redis, Prefix: d.RedisPrefix, Keys: UserRedisKeys},
		// Waiting jobs about the user go before their data: none of them
		// can then write the user's data back.
		RiverJobs{DB: jobsDB},
		MongoCollections{DB: d.Mongo, Collections: d.MongoCollections},
		S3Prefix{Storage: files, Prefix: DefaultS3Prefix},
		// Add new erasers above this line. The users row (and with it the
		// data key) goes at the end of the PostgreSQL step.
		PostgresTables{DB: tx, Tables: UserTables},
		// Last: its closing row says everything else is done.
		AuditPseudonymise{DB: tx, Log: d.Audit},
	)
}
