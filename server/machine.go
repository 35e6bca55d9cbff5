package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/pagination"
	"github.com/nxg-fitness/nxg/jobs"
)

// actionMachineStatusChanged records staff putting a machine into or out
// of maintenance.
const actionMachineStatusChanged = "machine.status_changed"

// machineListName ties page tokens to ListMachines.
const machineListName = "machines"

// Page sizes of ListMachines, as its request documents them: a branch's
// floor usually fits one page.
const (
	machinePageDefault = 100
	machinePageMax     = 500
)

// machineService serves nxg.v1.MachineService: live availability for every
// signed-in caller, links for members checked in at the machine's branch,
// maintenance for staff. The consoles' side (Attach, ReportActivity) is
// machineConsole's.
type machineService struct {
	nxgv1connect.UnimplementedMachineServiceHandler
	pool    *pgxpool.Pool
	id      Identity
	fl      Floor
	guard   *streamGuard
	feed    *machineFeed
	log     *slog.Logger
	queries *dbsqlc.Queries
	now     func() time.Time
	console *machineConsole
}

// NewMachineService returns the MachineService handler.
func NewMachineService(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, logger *slog.Logger) *machineService {
	feed := newMachineFeed(pool, fl.Hub, logger)
	feed.lag = fl.Lag
	return &machineService{
		pool: pool, id: id, fl: fl, guard: guard, feed: feed, log: logger,
		queries: dbsqlc.New(), now: time.Now,
		console: newMachineConsole(pool, id, fl, guard, feed, logger),
	}
}

// handlerOptions are the options the MachineService handler needs on top
// of the shared ones: codecs that send a machine event's bytes, encoded
// once, on every stream.
func (s *machineService) handlerOptions() []connect.HandlerOption {
	return machineCodecOptions(s.feed)
}

// machineCursor is the keyset position after the last machine of a page.
type machineCursor struct {
	Name string    `json:"n"`
	ID   uuid.UUID `json:"i"`
}

func (s *machineService) ListMachines(ctx context.Context, req *connect.Request[nxgv1.ListMachinesRequest]) (*connect.Response[nxgv1.ListMachinesResponse], error) {
	if _, err := auth.MustPrincipal(ctx); err != nil {
		return nil, err
	}
	branch, err := uuid.Parse(req.Msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	var cursor machineCursor
	hasCursor, err := pagination.Decode(machineListName, req.Msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := req.Msg.GetPageSize()
	switch {
	case size <= 0:
		size = machinePageDefault
	case size > machinePageMax:
		size = machinePageMax
	}
	if err := s.requireBranch(ctx, branch); err != nil {
		return nil, err
	}
	rows, err := s.queries.MachineListByBranchPage(ctx, s.pool, dbsqlc.MachineListByBranchPageParams{
		BranchID:  branch,
		HasCursor: hasCursor,
		AfterName: cursor.Name,
		AfterID:   cursor.ID,
		PageLimit: size + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	out := &nxgv1.ListMachinesResponse{}
	if len(rows) > int(size) {
		rows = rows[:size]
		last := rows[len(rows)-1]
		out.NextPageToken = pagination.Encode(machineListName, machineCursor{Name: last.Name, ID: last.ID})
	}
	out.Machines = make([]*nxgv1.Machine, len(rows))
	for i, r := range rows {
		out.Machines[i] = machineProto(r)
	}
	return connect.NewResponse(out), nil
}

// requireBranch fails with not_found when the branch does not exist.
func (s *machineService) requireBranch(ctx context.Context, branch uuid.UUID) error {
	if _, err := s.queries.BranchGet(ctx, s.pool, branch); db.IsNotFound(err) {
		return apperr.NotFound("branch", branch.String())
	} else if err != nil {
		return fmt.Errorf("read branch: %w", err)
	}
	return nil
}

func (s *machineService) GetMachine(ctx context.Context, req *connect.Request[nxgv1.GetMachineRequest]) (*connect.Response[nxgv1.GetMachineResponse], error) {
	if _, err := auth.MustPrincipal(ctx); err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetMachineId())
	if err != nil {
		return nil, apperr.InvalidArgument("machine_id", "must be a UUID")
	}
	m, err := s.queries.MachineGet(ctx, s.pool, id)
	if db.IsNotFound(err) {
		return nil, apperr.NotFound("machine", id.String())
	}
	if err != nil {
		return nil, fmt.Errorf("read machine: %w", err)
	}
	return connect.NewResponse(&nxgv1.GetMachineResponse{Machine: machineProto(m)}), nil
}

func (s *machineService) LinkMachine(ctx context.Context, req *connect.Request[nxgv1.LinkMachineRequest]) (*connect.Response[nxgv1.LinkMachineResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsMember() {
		return nil, apperr.PermissionDenied("only members link machines")
	}
	var machineID uuid.UUID
	tag := req.Msg.GetMachineTag()
	if tag == "" {
		if machineID, err = uuid.Parse(req.Msg.GetMachineId()); err != nil {
			return nil, apperr.InvalidArgument("machine_id", "must be a UUID")
		}
	}
	res, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.LinkMachineResponse, error) {
		// The machine is locked first, so its status cannot change
		// between the check below and the link.
		var m dbsqlc.Machine
		var err error
		if tag != "" {
			m, err = s.queries.MachineGetByTagForUpdate(ctx, tx, tag)
		} else {
			m, err = s.queries.MachineGetForUpdate(ctx, tx, machineID)
		}
		if db.IsNotFound(err) {
			if tag != "" {
				return nil, apperr.NotFound("machine with tag", tag)
			}
			return nil, apperr.NotFound("machine", machineID.String())
		}
		if err != nil {
			return nil, fmt.Errorf("read machine: %w", err)
		}
		session, err := s.queries.MachineLinkSessionOpen(ctx, tx, p.UserID)
		if db.IsNotFound(err) || (err == nil && session.BranchID != m.BranchID) {
			return nil, apperr.FailedPrecondition("check in at this branch first: linking needs an open gym session at the machine's branch")
		}
		if err != nil {
			return nil, fmt.Errorf("read gym session: %w", err)
		}
		held, err := s.queries.MachineLinkOpenForUser(ctx, tx, p.UserID)
		hasHeld := err == nil
		if err != nil && !db.IsNotFound(err) {
			return nil, fmt.Errorf("read open link: %w", err)
		}
		if hasHeld && held.MachineID == m.ID {
			// Linking the machine already held is a retry: the open
			// link is the answer.
			return &nxgv1.LinkMachineResponse{Link: machineLinkProto(held, m.BranchID, m.Name)}, nil
		}
		if status := m.Status.String; status != "available" {
			return nil, apperr.FailedPrecondition("machine %q is %s", m.Name, machineStatusText(status))
		}
		out := &nxgv1.LinkMachineResponse{}
		if hasHeld {
			// A member holds one machine at a time: the one they held is
			// released in the same transaction.
			ended, err := floor.EndLink(ctx, tx, held.ID, floor.LinkEndReplaced)
			if err != nil {
				return nil, err
			}
			prev, err := s.queries.MachineGet(ctx, tx, ended.MachineID)
			if err != nil {
				return nil, fmt.Errorf("read replaced machine: %w", err)
			}
			out.Replaced = machineLinkProto(ended, prev.BranchID, prev.Name)
		}
		link, err := s.queries.MachineLinkInsert(ctx, tx, dbsqlc.MachineLinkInsertParams{MachineID: m.ID, UserID: p.UserID, GymSessionID: session.ID})
		switch {
		case uniqueViolationOn(err, "machine_links_open_machine_key"):
			return nil, apperr.FailedPrecondition("machine %q is in use", m.Name)
		case uniqueViolationOn(err, "machine_links_open_user_key"):
			return nil, apperr.FailedPrecondition("another link of yours is being made at the same time; try again")
		case err != nil:
			return nil, fmt.Errorf("insert link: %w", err)
		}
		linked, err := s.queries.MachineSetLink(ctx, tx, dbsqlc.MachineSetLinkParams{ID: m.ID, LinkID: uuid.NullUUID{UUID: link.ID, Valid: true}})
		if err != nil {
			return nil, fmt.Errorf("point machine at link: %w", err)
		}
		if err := floor.NotifyMachines(ctx, tx, linked.BranchID, floor.MachineVersion{ID: linked.ID, Version: linked.Version}); err != nil {
			return nil, err
		}
		if err := floor.NotifyMember(ctx, tx, p.UserID, floor.MemberMachineLinked, link.ID); err != nil {
			return nil, err
		}
		branch, err := s.queries.BranchGet(ctx, tx, m.BranchID)
		if err != nil {
			return nil, fmt.Errorf("read branch: %w", err)
		}
		idleAt := s.now().Add(s.fl.Settings.IdleUnlinkAfter(branch.IdleUnlinkMinutes))
		if _, err := s.id.River.InsertTx(ctx, tx, jobs.IdleUnlinkArgs{LinkID: link.ID}, &river.InsertOpts{ScheduledAt: idleAt}); err != nil {
			return nil, fmt.Errorf("schedule idle unlink: %w", err)
		}
		out.Link = machineLinkProto(link, m.BranchID, m.Name)
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (s *machineService) UnlinkMachine(ctx context.Context, _ *connect.Request[nxgv1.UnlinkMachineRequest]) (*connect.Response[nxgv1.UnlinkMachineResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	res, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (*nxgv1.UnlinkMachineResponse, error) {
		held, err := s.queries.MachineLinkOpenForUser(ctx, tx, p.UserID)
		if db.IsNotFound(err) {
			// Nothing held: unlinking is idempotent.
			return &nxgv1.UnlinkMachineResponse{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read open link: %w", err)
		}
		ended, err := floor.EndLink(ctx, tx, held.ID, floor.LinkEndMember)
		if errors.Is(err, floor.ErrAlreadyEnded) {
			return &nxgv1.UnlinkMachineResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		m, err := s.queries.MachineGet(ctx, tx, ended.MachineID)
		if err != nil {
			return nil, fmt.Errorf("read machine: %w", err)
		}
		return &nxgv1.UnlinkMachineResponse{Link: machineLinkProto(ended, m.BranchID, m.Name)}, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (s *machineService) SetMachineStatus(ctx context.Context, req *connect.Request[nxgv1.SetMachineStatusRequest]) (*connect.Response[nxgv1.SetMachineStatusResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsStaff() {
		return nil, apperr.PermissionDenied("only staff of the machine's branch and admins change a machine's status")
	}
	id, err := uuid.Parse(req.Msg.GetMachineId())
	if err != nil {
		return nil, apperr.InvalidArgument("machine_id", "must be a UUID")
	}
	var maintenance bool
	switch req.Msg.GetStatus() {
	case nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE:
		maintenance = true
	case nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE:
	default:
		return nil, apperr.InvalidArgument("status", "must be MACHINE_STATUS_AVAILABLE or MACHINE_STATUS_MAINTENANCE")
	}
	m, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Machine, error) {
		m, err := s.queries.MachineGetForUpdate(ctx, tx, id)
		if db.IsNotFound(err) {
			return dbsqlc.Machine{}, apperr.NotFound("machine", id.String())
		}
		if err != nil {
			return dbsqlc.Machine{}, fmt.Errorf("read machine: %w", err)
		}
		if err := requireStaffOf(ctx, tx, p, m.BranchID, "change machines"); err != nil {
			return dbsqlc.Machine{}, err
		}
		if maintenance && m.CurrentLinkID.Valid {
			// Nobody keeps using a machine taken out of service.
			if _, err := floor.EndLink(ctx, tx, m.CurrentLinkID.UUID, floor.LinkEndMaintenance); err != nil && !errors.Is(err, floor.ErrAlreadyEnded) {
				return dbsqlc.Machine{}, err
			}
		}
		before := m.Status.String
		updated, err := s.queries.MachineSetMaintenance(ctx, tx, dbsqlc.MachineSetMaintenanceParams{ID: id, Maintenance: maintenance})
		if err != nil {
			return dbsqlc.Machine{}, fmt.Errorf("set maintenance: %w", err)
		}
		if updated.Version != m.Version {
			if err := floor.NotifyMachines(ctx, tx, updated.BranchID, floor.MachineVersion{ID: updated.ID, Version: updated.Version}); err != nil {
				return dbsqlc.Machine{}, err
			}
		}
		event := requestEvent(ctx, audit.Event{
			ActorID:    p.UserID,
			Action:     actionMachineStatusChanged,
			TargetType: "machine",
			TargetID:   id.String(),
			Result:     audit.ResultSuccess,
			Details: map[string]string{
				"branch_id":   m.BranchID.String(),
				"from":        before,
				"to":          updated.Status.String,
				"maintenance": fmt.Sprint(maintenance),
			},
		})
		if err := s.id.Audit.Record(ctx, tx, event); err != nil {
			return dbsqlc.Machine{}, err
		}
		return updated, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.SetMachineStatusResponse{Machine: machineProto(m)}), nil
}

func (s *machineService) WatchMachines(ctx context.Context, req *connect.Request[nxgv1.WatchMachinesRequest], stream *connect.ServerStream[nxgv1.WatchMachinesResponse]) error {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	branch, err := uuid.Parse(req.Msg.GetBranchId())
	if err != nil {
		return apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	ctx, release, err := s.guard.admit(ctx, p)
	if err != nil {
		return err
	}
	defer release()
	return s.watch(ctx, branch, streamBatchFrom(ctx), func(msg *nxgv1.WatchMachinesResponse, _ *machineEvent) error {
		return stream.Send(msg)
	}, nil)
}

// watch streams branch's machines to send: a snapshot, then every change,
// numbered from 1 without gaps. ctx should be a stream guard's context;
// when it ends, watch returns streamEnd(ctx).
//
// ev is the change being sent (nil for snapshots), so a caller can send its
// shared encodings instead of encoding msg. msg is reused between calls:
// send must not keep it. Changes that have queued up are sent in one batch.
//
// sink, when not nil, is the stream's connection written directly: while
// the stream is idle, the feed writes its changes there itself instead of
// waking this goroutine (see directDelivery).
func (s *machineService) watch(ctx context.Context, branch uuid.UUID, batch streamBatch, send func(msg *nxgv1.WatchMachinesResponse, ev *machineEvent) error, sink machineDirectSink) error {
	if err := s.requireBranch(ctx, branch); err != nil {
		return err
	}
	// Subscribing before the snapshot is read means no change committed
	// after the snapshot is missed; changes the snapshot already shows
	// are skipped by version.
	sub := s.feed.subscribe(branch)
	defer sub.Close()
	// The stream's end closes the subscription, so waiting for a delivery
	// is a plain channel receive rather than a select that also watches
	// ctx: one wait per delivery for thousands of watchers.
	defer context.AfterFunc(ctx, sub.Close)()

	w := &machineWatcher{seen: make(map[uuid.UUID]int64), sink: sink}
	msg := &nxgv1.WatchMachinesResponse{}
	change := &nxgv1.WatchMachinesResponse_Machine{}
	snapshot := func() error {
		machines, err := s.feed.snapshot(ctx, branch)
		if err != nil {
			if ctx.Err() != nil {
				return streamEnd(ctx)
			}
			return err
		}
		clear(w.seen)
		for _, m := range machines {
			id, err := uuid.Parse(m.GetId())
			if err != nil {
				return fmt.Errorf("snapshot machine id %q: %w", m.GetId(), err)
			}
			w.seen[id] = m.GetVersion()
		}
		w.seq++
		return send(&nxgv1.WatchMachinesResponse{
			Sequence: w.seq,
			Event:    &nxgv1.WatchMachinesResponse_Snapshot{Snapshot: &nxgv1.MachinesSnapshot{Machines: machines}},
		}, nil)
	}
	if err := snapshot(); err != nil {
		return err
	}
	// handle sends one event if the watcher has not seen it yet, and says
	// whether it sent a message.
	handle := func(ev *machineEvent) (bool, error) {
		if ev.Resync {
			return true, snapshot()
		}
		if !w.unseen(ev) {
			return false, nil
		}
		change.Machine = ev.Machine
		msg.Sequence, msg.Event = w.seq, change
		return true, send(msg, ev)
	}
	// pending is what is left to send of the deliveries taken so far.
	// Deliveries are taken whole, but a big one (a change to every machine
	// of a large branch) is split over several batches of at most
	// streamBatchLimit messages: each write stays small and the first
	// changes go out without waiting for the encoding of all the others.
	var pending []*machineEvent
	events := sub.Events()
	for {
		if len(pending) == 0 {
			if sink != nil {
				// Idle, with everything written: the feed may write this
				// stream's changes itself until it cannot do so at once.
				sub.goDirect(w)
			}
			evs, ok := <-events
			if !ok {
				return subscriptionEnd(ctx, sub.Err(), "reconnect for a fresh snapshot")
			}
			pending = evs
		} else if ctx.Err() != nil {
			return streamEnd(ctx)
		}
		// Whatever else has queued goes out in the same batch, up to
		// its limit; nothing waits for more to arrive. An empty delivery
		// (a direct write left unfinished) makes an empty batch, whose
		// release finishes that write.
		closed := false
		batch.hold()
	fill:
		for sent := 0; sent < streamBatchLimit; {
			if len(pending) == 0 {
				select {
				case evs, ok := <-events:
					if !ok {
						closed = true
						break fill
					}
					pending = evs
					continue
				default:
					break fill
				}
			}
			ev := pending[0]
			pending = pending[1:]
			ok, err := handle(ev)
			if err != nil {
				_ = batch.release()
				return err
			}
			if ok {
				sent++
			}
		}
		if err := batch.release(); err != nil {
			return err
		}
		if closed {
			return subscriptionEnd(ctx, sub.Err(), "reconnect for a fresh snapshot")
		}
	}
}

// machineWatcher is what one WatchMachines stream has sent: its sequence
// and the version of every machine it has shown. Its goroutine owns it,
// except while the stream is in direct delivery, when the feed does.
type machineWatcher struct {
	seq  uint64
	seen map[uuid.UUID]int64
	sink machineDirectSink
}

// unseen reports whether ev is newer than what the stream has shown, and
// if so counts it as shown under the next sequence number.
func (w *machineWatcher) unseen(ev *machineEvent) bool {
	if ev.version <= w.seen[ev.id] {
		return false
	}
	w.seen[ev.id] = ev.version
	w.seq++
	return true
}

// deliverNow writes a delivery's changes straight to the stream's
// connection, for the feed (see directDelivery). A resync needs a snapshot
// read from the database, and a connection busy with another write would
// make the feed wait: both are left to the stream's goroutine.
func (w *machineWatcher) deliverNow(events []*machineEvent) directResult {
	for _, ev := range events {
		if ev.Resync {
			return notDelivered
		}
	}
	if !w.sink.tryHold() {
		return notDelivered
	}
	for _, ev := range events {
		if w.unseen(ev) {
			w.sink.appendChange(w.seq, ev)
		}
	}
	if w.sink.releaseNow() {
		return deliveredNow
	}
	return deliveredUnflushed
}

// machineDirectSink is a stream's connection as the feed writes it in
// direct delivery. None of its methods may block.
type machineDirectSink interface {
	// tryHold starts a direct write and reports true if the connection is
	// free and has nothing left to write; otherwise it does nothing.
	tryHold() bool
	// appendChange adds the wire form of the change message numbered seq
	// carrying ev to the write.
	appendChange(seq uint64, ev *machineEvent)
	// releaseNow ends the write, sending as much as the connection takes
	// without blocking, and reports whether all of it went out. The rest
	// goes out, before anything else, on the connection's next write.
	releaseNow() bool
}

// Attach is machineConsole's; it admits the stream with the guard itself.
// Attach is the machine consoles' stream; machineConsole serves it.
func (s *machineService) Attach(ctx context.Context, _ *connect.Request[nxgv1.AttachRequest], stream *connect.ServerStream[nxgv1.AttachResponse]) error {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	return s.console.attach(ctx, p, stream.Send)
}

// ReportActivity is the machine consoles' reports; machineConsole serves it.
func (s *machineService) ReportActivity(ctx context.Context, req *connect.Request[nxgv1.ReportActivityRequest]) (*connect.Response[nxgv1.ReportActivityResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.console.report(ctx, p, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}
