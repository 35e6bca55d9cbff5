package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
)

// machineConsole serves the machine consoles' side of MachineService,
// for the RPCs and the WebSocket alike: Attach, the stream of what a
// console shows, and ReportActivity, its heartbeats, faults and sets.
//
// Reports go through a floor.Reporter, which writes the reports of every
// console on this process in one transaction per few milliseconds: a
// commit (and a NOTIFY) per report would cap the whole floor at a few
// thousand reports a second.
type machineConsole struct {
	pool    *pgxpool.Pool
	guard   *streamGuard
	feed    *machineFeed
	reports *floor.Reporter
	hub     *realtime.Hub
	log     *slog.Logger
	queries *dbsqlc.Queries
}

func newMachineConsole(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, feed *machineFeed, logger *slog.Logger) *machineConsole {
	c := &machineConsole{
		pool:    pool,
		guard:   guard,
		feed:    feed,
		reports: floor.NewReporter(pool, floor.ReporterOptions{Logger: logger}),
		hub:     fl.Hub,
		log:     logger.With("component", "machine_console"),
		queries: dbsqlc.New(),
	}
	// The report writer stops when the server starts draining, after
	// writing what is queued: later reports are refused with unavailable
	// and the console reports again, to another instance. It must stop
	// before the pool closes, which the drain precedes.
	if fl.Draining != nil {
		context.AfterFunc(fl.Draining, c.reports.Close)
	}
	return c
}

// consoleDevice returns the calling machine console, or permission_denied
// for anybody else (members, staff, other kinds of device).
func consoleDevice(p auth.Principal, what string) (*auth.Device, error) {
	if !p.IsDevice() || p.Device.Kind != auth.DeviceMachine || p.Device.MachineID == uuid.Nil {
		return nil, apperr.PermissionDenied("only a machine console may %s", what)
	}
	return p.Device, nil
}

// attach streams the whole of what p's machine console shows: first now,
// then again after every change of its machine (staff maintenance, a
// fault, a member linking or unlinking, going offline or back online),
// each message numbered from 1. It admits the stream with the guard
// itself, so the RPC and the WebSocket are capped and revoked alike; it
// ends when the guard's context does (the device revoked, the server
// draining) or with resource_exhausted when it falls behind the changes.
func (c *machineConsole) attach(ctx context.Context, p auth.Principal, send func(*nxgv1.AttachResponse) error) error {
	dev, err := consoleDevice(p, "attach to a machine")
	if err != nil {
		return err
	}
	ctx, release, err := c.guard.admit(ctx, p)
	if err != nil {
		return err
	}
	defer release()

	// Subscribed before the first read, so no change committed after that
	// read is missed.
	sub := c.feed.subscribe(dev.BranchID)
	defer sub.Close()
	machineID := dev.MachineID.String()
	// The linked member's workout changes move their next planned set:
	// the filter, on the hub's goroutine, keeps the events naming the
	// member linked at the last push.
	var linked atomic.Pointer[[]byte]
	workouts := c.hub.Subscribe(floor.ChannelWorkouts, func(ev realtime.Event) bool {
		n := linked.Load()
		return ev.Resync || (n != nil && bytes.Contains(ev.Payload, *n))
	})
	defer workouts.Close()

	var seq uint64
	var version int64
	push := func() error {
		st, member, err := c.state(ctx, dev.MachineID)
		if member == uuid.Nil {
			linked.Store(nil)
		} else {
			needle := []byte(member.String())
			linked.Store(&needle)
		}
		if err != nil {
			if ctx.Err() != nil {
				return streamEnd(ctx)
			}
			return err
		}
		seq++
		st.Sequence = seq
		version = st.GetMachine().GetVersion()
		if err := send(st); err != nil {
			if ctx.Err() != nil {
				return streamEnd(ctx)
			}
			return err
		}
		return nil
	}
	if err := push(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case _, ok := <-workouts.Events():
			if !ok {
				return subscriptionEnd(ctx, workouts.Err(), "attach again for the current state")
			}
			if err := push(); err != nil {
				return err
			}
		case evs, ok := <-sub.Events():
			if !ok {
				return subscriptionEnd(ctx, sub.Err(), "attach again for the current state")
			}
			// The link and the member's name are read again only when the
			// machine itself changed (a link or unlink moves its version),
			// once however many of the branch's machines the delivery holds.
			if !slices.ContainsFunc(evs, func(ev *machineEvent) bool {
				return ev.Resync || (ev.Machine.GetId() == machineID && ev.Machine.GetVersion() > version)
			}) {
				continue
			}
			if err := push(); err != nil {
				return err
			}
		}
	}
}

// state reads what a console shows now, and the id of the member linked
// (uuid.Nil for none).
func (c *machineConsole) state(ctx context.Context, machine uuid.UUID) (*nxgv1.AttachResponse, uuid.UUID, error) {
	row, err := c.queries.ConsoleState(ctx, c.pool, machine)
	if db.IsNotFound(err) {
		return nil, uuid.Nil, apperr.FailedPrecondition("this console's machine no longer exists")
	}
	if err != nil {
		return nil, uuid.Nil, fmt.Errorf("read console state: %w", err)
	}
	var member uuid.UUID
	out := &nxgv1.AttachResponse{Machine: machineProto(row.Machine)}
	if row.LinkID.Valid {
		// The display name and the next set of the member's plan on this
		// machine only: a console in the middle of the floor shows nothing
		// else of who is using it. The state is pushed again when the
		// member's workout changes (a set logged from the app or a
		// machine), so the next set follows.
		out.Member = &nxgv1.LinkedMember{
			DisplayName: row.MemberDisplayName.String,
			LinkId:      row.LinkID.UUID.String(),
			LinkedAt:    timestamppb.New(row.LinkLinkedAt.Time),
		}
		linked, err := c.queries.WorkoutMachineMember(ctx, c.pool, machine)
		switch {
		case err == nil:
			member = linked.UserID
			if out.Member.NextSet, err = nextPlannedSet(ctx, c.pool, c.queries, linked.UserID, linked.MachineType); err != nil {
				return nil, uuid.Nil, err
			}
		case !db.IsNotFound(err): // unlinked meanwhile: no next set
			return nil, uuid.Nil, fmt.Errorf("read linked member: %w", err)
		}
	}
	return out, member, nil
}

// report records one report of p's machine console. req has been
// validated against the proto's rules; what they cannot say (a set's
// plausibility on this type of machine, a member being linked) is checked
// in the batch that writes it.
func (c *machineConsole) report(ctx context.Context, p auth.Principal, req *nxgv1.ReportActivityRequest) (*nxgv1.ReportActivityResponse, error) {
	dev, err := consoleDevice(p, "report activity")
	if err != nil {
		return nil, err
	}
	rep := floor.Report{Machine: dev.MachineID}
	switch a := req.GetActivity().(type) {
	case *nxgv1.ReportActivityRequest_Heartbeat:
		rep.Kind = floor.ReportHeartbeat
	case *nxgv1.ReportActivityRequest_Status:
		rep.Kind, rep.Fault = floor.ReportStatus, a.Status.GetFault()
	case *nxgv1.ReportActivityRequest_Set:
		s := a.Set
		rep.Kind = floor.ReportSet
		rep.Set = floor.SetValues{
			ClientSetID:     s.GetClientSetId(),
			Reps:            s.GetReps(),
			WeightKg:        s.GetWeightKg(),
			DurationSeconds: s.GetDurationSeconds(),
			DistanceM:       s.GetDistanceM(),
			Calories:        s.GetCalories(),
		}
	default:
		return nil, apperr.InvalidArgument("activity", "one of heartbeat, status or set is required")
	}
	res, err := c.reports.Report(ctx, rep)
	if err != nil {
		return nil, err
	}
	out := &nxgv1.ReportActivityResponse{}
	switch rep.Kind {
	case floor.ReportStatus:
		// The detail is for staff; it is logged rather than stored, as the
		// machine's record has no place for it yet.
		c.log.Info("machine console reported its status",
			"machine_id", dev.MachineID, "device_id", dev.ID, "fault", rep.Fault, "detail", req.GetStatus().GetDetail())
		out.Machine = machineProto(res.Machine)
	case floor.ReportSet:
		out.Set, out.Duplicate = machineSetProto(res.Set), res.Duplicate
	}
	return out, nil
}
