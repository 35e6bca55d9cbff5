package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

const adminUsage = `usage: nxg admin create-user --role admin|staff|member --email EMAIL --display-name NAME [--branch ID ...] [--update-role] < password

Creates an account. The password is the first line of standard input (never
an argument, so it stays out of shell history and process listings), e.g.

  printf '%s\n' "$PASSWORD" | nxg admin create-user --role admin --email ops@example.com --display-name "Ops"

Staff accounts need at least one --branch (a branch id); other roles take none.
An existing email is refused unless --update-role is given: then the account's
role (and staff branches) change, and its password is left alone (stdin is
not read). Role changes reach signed-in devices at their next token refresh
(within 15 minutes).

flags:
`

const auditUsage = `usage: nxg audit verify

Checks every row of the audit trail against the hash chain and prints how
many rows were checked, the head hash (record it somewhere outside the
database to detect rows removed from the end later) and any problems. Exits
non-zero when the trail is broken.
`

// Audit actions of the admin CLI. The actor is the system (no user): the
// operator running the CLI is known only to the machine they ran it on.
const (
	actionUserCreated     = "admin.user_created"
	actionUserRoleUpdated = "admin.user_role_updated"
)

// runAdmin runs `nxg admin ...`.
func runAdmin(ctx context.Context, args []string, environ map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create-user" {
		io.WriteString(stderr, adminUsage)
		return errUsage
	}
	req, err := parseCreateUser(args[1:], stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(environ)
	if err != nil {
		return err
	}
	keys, err := cfg.Auth.MasterKeys()
	if err != nil {
		return err
	}
	log, err := auditLog(cfg)
	if err != nil {
		return err
	}
	pool, err := db.Open(ctx, cfg.DatabaseURL.Reveal(), db.PoolConfig{ApplicationName: "nxg-admin"})
	if err != nil {
		return err
	}
	defer pool.Close()

	a := &accountAdmin{pool: pool, keys: keys, audit: log, hasher: password.NewHasher(password.Options{}), q: dbsqlc.New()}
	return a.createUser(ctx, req, stdin, stdout, stderr)
}

// runAudit runs `nxg audit ...`.
func runAudit(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	if len(args) != 1 || args[0] != "verify" {
		fmt.Fprint(stderr, auditUsage)
		return errUsage
	}
	cfg, err := config.Parse(environ)
	if err != nil {
		return err
	}
	log, err := auditLog(cfg)
	if err != nil {
		return err
	}
	pool, err := db.Open(ctx, cfg.DatabaseURL.Reveal(), db.PoolConfig{ApplicationName: "nxg-audit-verify"})
	if err != nil {
		return err
	}
	defer pool.Close()

	rep, err := log.Verify(ctx, pool)
	if err != nil {
		return err
	}
	head := rep.Head
	if head == "" {
		head = "(empty trail)"
	}
	fmt.Fprintf(stdout, "rows checked: %d\nhead hash:    %s\n", rep.Rows, head)
	if rep.OK() {
		fmt.Fprintln(stdout, "audit trail OK")
		return nil
	}
	fmt.Fprintf(stdout, "problems:\n")
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "  seq %d: %s\n", p.Seq, p.Reason)
	}
	if len(rep.Problems) >= audit.MaxProblems {
		fmt.Fprintf(stdout, "  (stopped listing after %d problems)\n", audit.MaxProblems)
	}
	return fmt.Errorf("audit trail is broken: %d problem(s) found", len(rep.Problems))
}

func auditLog(cfg config.Config) (*audit.Log, error) {
	key, err := cfg.Auth.AuditKeyBytes()
	if err != nil {
		return nil, err
	}
	return audit.New(key)
}

// createUserRequest is what `nxg admin create-user` was asked to do.
type createUserRequest struct {
	role        token.Role
	email       string
	displayName string
	branches    []uuid.UUID
	updateRole  bool
}

// branchFlag collects repeated --branch flags.
type branchFlag []uuid.UUID

func (b *branchFlag) String() string { return fmt.Sprint([]uuid.UUID(*b)) }

func (b *branchFlag) Set(v string) error {
	id, err := uuid.Parse(strings.TrimSpace(v))
	if err != nil {
		return errors.New("not a branch id (a UUID)")
	}
	if !slices.Contains(*b, id) {
		*b = append(*b, id)
	}
	return nil
}

func parseCreateUser(args []string, stderr io.Writer) (createUserRequest, error) {
	fs := flag.NewFlagSet("nxg admin create-user", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, adminUsage)
		fs.PrintDefaults()
	}
	role := fs.String("role", "", "admin, staff or member")
	email := fs.String("email", "", "the sign-in email address")
	displayName := fs.String("display-name", "", "the name shown in apps and on the dashboard (1 to 80 characters; needed to create)")
	var branches branchFlag
	fs.Var(&branches, "branch", "a branch a staff account works at (repeatable)")
	updateRole := fs.Bool("update-role", false, "when the email exists, change its role and branches instead of failing")
	if err := fs.Parse(args); err != nil {
		return createUserRequest{}, errUsage // the flag package printed why
	}
	bad := func(format string, a ...any) (createUserRequest, error) {
		fmt.Fprintf(stderr, "nxg admin create-user: "+format+"\n\n", a...)
		fs.Usage()
		return createUserRequest{}, errUsage
	}
	if fs.NArg() > 0 {
		// Not echoed: it may well be a password typed in the wrong place.
		return bad("unexpected argument (the password is read from stdin, never from arguments)")
	}
	req := createUserRequest{
		role:        token.Role(*role),
		email:       strings.ToLower(strings.TrimSpace(*email)),
		displayName: strings.TrimSpace(*displayName),
		branches:    branches,
		updateRole:  *updateRole,
	}
	switch req.role {
	case token.RoleAdmin, token.RoleStaff, token.RoleMember:
	default:
		return bad("--role must be admin, staff or member")
	}
	if addr, err := mail.ParseAddress(req.email); err != nil || addr.Address != req.email || len(req.email) > 254 {
		return bad("--email must be a plain email address, e.g. ops@example.com")
	}
	if n := utf8.RuneCountInString(req.displayName); n > 80 {
		return bad("--display-name must be at most 80 characters")
	}
	if req.role == token.RoleStaff && len(req.branches) == 0 {
		return bad("a staff account needs at least one --branch")
	}
	if req.role != token.RoleStaff && len(req.branches) > 0 {
		return bad("--branch is only for staff accounts")
	}
	return req, nil
}

// accountAdmin creates and updates accounts for the CLI.
type accountAdmin struct {
	pool   *pgxpool.Pool
	keys   *fieldcrypt.MasterKeys
	audit  *audit.Log
	hasher *password.Hasher
	q      *dbsqlc.Queries
}

// newAccount is an account ready to insert: the password hashed and a data
// key wrapped for its id, prepared before the transaction so the slow
// hashing holds no locks.
type newAccount struct {
	id      uuid.UUID
	hash    string
	wrapped []byte
}

func (a *accountAdmin) createUser(ctx context.Context, req createUserRequest, stdin io.Reader, stdout, stderr io.Writer) error {
	existing, err := a.q.AdminUserGetByEmailForUpdate(ctx, a.pool, req.email)
	exists := err == nil
	if err != nil && !db.IsNotFound(err) {
		return fmt.Errorf("look up %s: %w", req.email, err)
	}
	if exists && !req.updateRole {
		return fmt.Errorf("an account with email %s exists already (id %s, role %s); pass --update-role to change its role", req.email, existing.ID, existing.Role)
	}

	// Checked here too so a typo is reported before the password is asked
	// for; the transaction checks again.
	if err := a.checkBranches(ctx, a.pool, req.branches); err != nil {
		return err
	}
	var acct *newAccount
	if !exists {
		if req.displayName == "" {
			return errors.New("--display-name is required to create an account")
		}
		if acct, err = a.prepare(ctx, req, stdin, stderr); err != nil {
			return err
		}
	}

	msg, err := db.WithTxV(ctx, a.pool, func(tx pgx.Tx) (string, error) {
		if err := a.checkBranches(ctx, tx, req.branches); err != nil {
			return "", err
		}
		u, err := a.q.AdminUserGetByEmailForUpdate(ctx, tx, req.email)
		switch {
		case err == nil && req.updateRole:
			return a.updateRole(ctx, tx, u, req)
		case err == nil:
			return "", fmt.Errorf("an account with email %s was created meanwhile (id %s); pass --update-role to change its role", req.email, u.ID)
		case !db.IsNotFound(err):
			return "", fmt.Errorf("look up %s: %w", req.email, err)
		case acct == nil:
			return "", fmt.Errorf("the account with email %s was removed meanwhile; run the command again to create it", req.email)
		}
		return a.insert(ctx, tx, req, acct)
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

// prepare reads and checks the password, hashes it and makes the data key.
func (a *accountAdmin) prepare(ctx context.Context, req createUserRequest, stdin io.Reader, stderr io.Writer) (*newAccount, error) {
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintf(stderr, "Password for %s (one line; it is shown as you type, so prefer piping it in): ", req.email)
		}
	}
	pw, err := readPassword(stdin)
	if err != nil {
		return nil, err
	}
	if err := password.Check("password", pw, req.email); err != nil {
		return nil, fmt.Errorf("password refused: %w", err)
	}
	hash, err := a.hasher.Hash(ctx, pw)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	_, wrapped, err := a.keys.NewDataKey(id.String())
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return &newAccount{id: id, hash: hash, wrapped: wrapped}, nil
}

// readPassword returns the first line of r without its line ending.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from stdin: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", errors.New("no password on stdin: give it as the first line of standard input, e.g. printf '%s\\n' \"$PASSWORD\" | nxg admin create-user ...")
	}
	return line, nil
}

// checkBranches refuses branch ids that do not exist, and keeps the rest
// from being deleted until the transaction ends.
func (a *accountAdmin) checkBranches(ctx context.Context, tx dbsqlc.DBTX, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	found, err := a.q.AdminBranchesExisting(ctx, tx, ids)
	if err != nil {
		return fmt.Errorf("look up branches: %w", err)
	}
	for _, id := range ids {
		if !slices.Contains(found, id) {
			return fmt.Errorf("--branch %s: no such branch", id)
		}
	}
	return nil
}

func (a *accountAdmin) setBranches(ctx context.Context, tx pgx.Tx, userID uuid.UUID, ids []uuid.UUID) error {
	if err := a.q.AdminStaffBranchesClear(ctx, tx, userID); err != nil {
		return fmt.Errorf("clear staff branches: %w", err)
	}
	for _, b := range ids {
		if err := a.q.StaffBranchAdd(ctx, tx, dbsqlc.StaffBranchAddParams{UserID: userID, BranchID: b}); err != nil {
			return fmt.Errorf("add staff branch %s: %w", b, err)
		}
	}
	return nil
}

func (a *accountAdmin) insert(ctx context.Context, tx pgx.Tx, req createUserRequest, acct *newAccount) (string, error) {
	u, err := a.q.AdminUserCreate(ctx, tx, dbsqlc.AdminUserCreateParams{
		ID: acct.id, Email: req.email, PasswordHash: acct.hash, DisplayName: req.displayName,
		Role: string(req.role), DataKey: acct.wrapped,
	})
	if db.IsNotFound(err) {
		// Lost a race with another creation of the same email.
		return "", fmt.Errorf("an account with email %s was created meanwhile; run the command again", req.email)
	}
	if err != nil {
		return "", fmt.Errorf("insert account: %w", err)
	}
	if err := a.q.AdminProfileEnsure(ctx, tx, u.ID); err != nil {
		return "", fmt.Errorf("insert profile: %w", err)
	}
	if err := a.q.AdminPrivacyEnsure(ctx, tx, u.ID); err != nil {
		return "", fmt.Errorf("insert privacy settings: %w", err)
	}
	if err := a.setBranches(ctx, tx, u.ID, req.branches); err != nil {
		return "", err
	}
	if err := a.audit.Record(ctx, tx, audit.Event{
		Action: actionUserCreated, TargetType: "user", TargetID: u.ID.String(), Result: audit.ResultSuccess,
		Details: accountDetails(req, ""),
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("created %s account %s (%s)%s", u.Role, u.ID, u.Email, branchNote(req.branches)), nil
}

func (a *accountAdmin) updateRole(ctx context.Context, tx pgx.Tx, u dbsqlc.User, req createUserRequest) (string, error) {
	if u.DeletedAt.Valid {
		return "", fmt.Errorf("the account with email %s (id %s) is closed and waiting for erasure; it cannot be changed", u.Email, u.ID)
	}
	if err := a.q.AdminUserSetRole(ctx, tx, dbsqlc.AdminUserSetRoleParams{ID: u.ID, Role: string(req.role)}); err != nil {
		return "", fmt.Errorf("set role: %w", err)
	}
	// Branches belong to the staff role only: a promotion or demotion
	// away from staff leaves none behind.
	if err := a.setBranches(ctx, tx, u.ID, req.branches); err != nil {
		return "", err
	}
	// Accounts made before the profile existed get one now, like new ones.
	if err := a.q.AdminProfileEnsure(ctx, tx, u.ID); err != nil {
		return "", fmt.Errorf("insert profile: %w", err)
	}
	if err := a.q.AdminPrivacyEnsure(ctx, tx, u.ID); err != nil {
		return "", fmt.Errorf("insert privacy settings: %w", err)
	}
	if err := a.audit.Record(ctx, tx, audit.Event{
		Action: actionUserRoleUpdated, TargetType: "user", TargetID: u.ID.String(), Result: audit.ResultSuccess,
		Details: accountDetails(req, u.Role),
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("updated account %s (%s): role %s -> %s%s; signed-in devices get the new role at their next token refresh (within 15 minutes)",
		u.ID, u.Email, u.Role, req.role, branchNote(req.branches)), nil
}

// accountDetails are the audit details of a creation or role change: the
// role (and previous role) and staff branches; never the email or name.
func accountDetails(req createUserRequest, previousRole string) map[string]string {
	d := map[string]string{"role": string(req.role)}
	if previousRole != "" {
		d["previous_role"] = previousRole
	}
	if len(req.branches) > 0 {
		d["branches"] = joinIDs(req.branches)
	}
	return d
}

func branchNote(ids []uuid.UUID) string {
	if len(ids) == 0 {
		return ""
	}
	return ", branches " + joinIDs(ids)
}

func joinIDs(ids []uuid.UUID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ",")
}
