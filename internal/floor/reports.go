package floor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/apperr"
)

// ReportKind is what a console reports.
type ReportKind int

// Kinds of Report.
const (
	// ReportHeartbeat says the console is alive.
	ReportHeartbeat ReportKind = iota + 1
	// ReportStatus sets or clears the machine's fault.
	ReportStatus
	// ReportSet is a completed set of the linked member.
	ReportSet
)

// Report is one report of a machine console.
type Report struct {
	// Machine is the console's machine.
	Machine uuid.UUID
	Kind    ReportKind
	// Fault is the machine's fault flag, for ReportStatus.
	Fault bool
	// Set is the completed set, for ReportSet; CheckSet has not been
	// applied yet (it needs the machine's type, which the batch loads).
	Set SetValues
}

// ReportResult is what a report left behind.
type ReportResult struct {
	// Machine is the machine after the batch the report was written in.
	Machine dbsqlc.Machine
	// Set is the stored set, for ReportSet.
	Set dbsqlc.MachineSet
	// Duplicate is set when the set had been stored before under the same
	// client_set_id: it was not stored or announced again.
	Duplicate bool
}

// ReporterOptions tune a Reporter. Zero values take the defaults.
type ReporterOptions struct {
	// Window is how long a batch waits for more reports after its first
	// one (0 → 5ms): the longest a report waits before its write starts.
	Window time.Duration
	// MaxBatch is the most reports written in one transaction (0 → 1000);
	// a full batch starts at once.
	MaxBatch int
	// QueueSize bounds the reports waiting for a batch (0 → 20000); beyond
	// it callers are refused with resource_exhausted instead of queueing
	// into their deadlines.
	QueueSize int
	// TxTimeout bounds one batch's transaction (0 → 10s).
	TxTimeout time.Duration
	// Writers is how many batches may be written at once (0 → 2): while
	// one batch waits on the database, the next one fills.
	Writers int
	// Logger gets batch failures (nil → slog.Default()).
	Logger *slog.Logger
}

// ReporterStats count what a Reporter did.
type ReporterStats struct {
	// Batches is the transactions committed, including the one-report
	// transactions of fallbacks.
	Batches uint64
	// Reports is the reports answered (with a result or an error).
	Reports uint64
	// Fallbacks is the batches that failed as a whole and were rewritten
	// one report per transaction.
	Fallbacks uint64
}

// Reporter writes machine consoles' reports in batches: every report that
// arrives within a short window, from every caller, goes into ONE
// transaction with array-based statements, ONE notification per branch for
// the machines whose version moved, and one commit. One commit per report
// tops out at a few thousand reports a second (the commit's fsync and
// NOTIFY's global lock); a batch pays them once for hundreds.
//
// A report's own failure (an implausible set, a set with no member linked)
// is decided inside the batch and answered to its caller alone. Should the
// batch's transaction fail as a whole, its reports are written again one
// per transaction, so one bad report never fails the others.
//
// The writing goroutines start on first use; Close stops them after the
// reports already queued are written. Concurrent batches lock the rows
// they share in the same order (links by machine, then machines by id), so
// they queue behind each other rather than deadlock.
type Reporter struct {
	pool  *pgxpool.Pool
	opts  ReporterOptions
	log   *slog.Logger
	queue chan *pendingReport

	start   sync.Once
	mu      sync.RWMutex // held for reading while queueing, for writing by Close
	closed  bool
	stopped chan struct{} // closed by Close
	done    chan struct{} // closed when the writer has stopped

	batches, reports, fallbacks atomic.Uint64
}

type pendingReport struct {
	ctx context.Context
	r   Report
	out chan reportOutcome // buffered: the writer never blocks on a caller
}

type reportOutcome struct {
	res ReportResult
	err error
}

// NewReporter returns a Reporter writing through pool.
func NewReporter(pool *pgxpool.Pool, opts ReporterOptions) *Reporter {
	if opts.Window <= 0 {
		opts.Window = 5 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 20000
	}
	if opts.TxTimeout <= 0 {
		opts.TxTimeout = 10 * time.Second
	}
	if opts.Writers <= 0 {
		opts.Writers = 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Reporter{
		pool:    pool,
		opts:    opts,
		log:     opts.Logger.With("component", "floor.reporter"),
		queue:   make(chan *pendingReport, opts.QueueSize),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Stats returns what the reporter has done so far.
func (r *Reporter) Stats() ReporterStats {
	return ReporterStats{Batches: r.batches.Load(), Reports: r.reports.Load(), Fallbacks: r.fallbacks.Load()}
}

// Report writes rep in the next batch and returns its result once the batch
// has committed. It fails at once with resource_exhausted when the queue is
// full and with unavailable after Close; when ctx ends first it returns
// ctx's error (the report may still be written: a retried set is stored
// once).
func (r *Reporter) Report(ctx context.Context, rep Report) (ReportResult, error) {
	r.start.Do(r.startWriters)
	p := &pendingReport{ctx: ctx, r: rep, out: make(chan reportOutcome, 1)}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return ReportResult{}, apperr.Unavailable(time.Second, nil, "this server is shutting down; report again to reach another")
	}
	select {
	case r.queue <- p:
		r.mu.RUnlock()
	default:
		r.mu.RUnlock()
		return ReportResult{}, apperr.ResourceExhausted(time.Second, "too many machine reports are waiting to be written; report again shortly")
	}
	select {
	case o := <-p.out:
		return o.res, o.err
	case <-ctx.Done():
		return ReportResult{}, ctx.Err()
	}
}

// Close stops accepting reports, writes those already queued and waits for
// the writer to stop. It is safe to call more than once.
func (r *Reporter) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stopped)
	}
	r.mu.Unlock()
	r.start.Do(func() { close(r.done) }) // never started: nothing to wait for
	<-r.done
}

// startWriters starts the writing goroutines, and closes done once they
// have all stopped.
func (r *Reporter) startWriters() {
	var wg sync.WaitGroup
	for range r.opts.Writers {
		wg.Go(r.run)
	}
	go func() {
		wg.Wait()
		close(r.done)
	}()
}

// run collects batches and writes them until Close, then writes what is
// left in the queue.
func (r *Reporter) run() {
	for {
		var first *pendingReport
		select {
		case first = <-r.queue:
		case <-r.stopped:
			r.drain()
			return
		}
		batch := append(make([]*pendingReport, 0, 64), first)
		window := time.NewTimer(r.opts.Window)
	collect:
		for len(batch) < r.opts.MaxBatch {
			select {
			case p := <-r.queue:
				batch = append(batch, p)
			case <-window.C:
				break collect
			case <-r.stopped:
				break collect
			}
		}
		window.Stop()
		r.write(batch)
	}
}

// drain writes the reports queued before Close. Nothing is queued after
// Close marked the reporter closed, so the queue empties.
func (r *Reporter) drain() {
	for {
		batch := make([]*pendingReport, 0, 64)
	collect:
		for len(batch) < r.opts.MaxBatch {
			select {
			case p := <-r.queue:
				batch = append(batch, p)
			default:
				break collect
			}
		}
		if len(batch) == 0 {
			return
		}
		r.write(batch)
	}
}

// write writes one batch and answers its callers.
func (r *Reporter) write(batch []*pendingReport) {
	live := batch[:0]
	for _, p := range batch {
		// A caller that gave up is not written for: its report may be
		// retried, and a set is idempotent anyway.
		if err := p.ctx.Err(); err != nil {
			r.answer(p, reportOutcome{err: err})
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	// The transaction belongs to the batch, not to any one caller: a
	// caller giving up must not roll back the others' writes.
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.TxTimeout)
	defer cancel()
	outs, err := r.writeRetrying(ctx, live)
	if err == nil {
		for i, p := range live {
			r.answer(p, outs[i])
		}
		return
	}
	if len(live) == 1 {
		r.log.Error("machine report failed", "error", err)
		r.answer(live[0], reportOutcome{err: fmt.Errorf("floor: write machine report: %w", err)})
		return
	}
	r.fallbacks.Add(1)
	r.log.Warn("machine report batch failed; writing its reports one by one", "reports", len(live), "error", err)
	for _, p := range live {
		outs, err := r.writeRetrying(ctx, []*pendingReport{p})
		if err != nil {
			r.log.Error("machine report failed", "error", err)
			r.answer(p, reportOutcome{err: fmt.Errorf("floor: write machine report: %w", err)})
			continue
		}
		r.answer(p, outs[0])
	}
}

func (r *Reporter) answer(p *pendingReport, o reportOutcome) {
	r.reports.Add(1)
	p.out <- o
}

// writeRetrying writes a batch, again when it lost a deadlock or a
// serialization conflict (a link or maintenance change racing it).
func (r *Reporter) writeRetrying(ctx context.Context, items []*pendingReport) ([]reportOutcome, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var outs []reportOutcome
		outs, err = r.writeBatch(ctx, items)
		if err == nil {
			r.batches.Add(1)
			return outs, nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return nil, err
		}
	}
	return nil, err
}

// setKey is a set's idempotency key.
type setKey struct {
	machine  uuid.UUID
	clientID string
}

// writeBatch writes items in one transaction and returns each one's outcome.
// Statements run in the order the rest of the floor locks rows in: the
// machines' links first, then the machines.
func (r *Reporter) writeBatch(ctx context.Context, items []*pendingReport) ([]reportOutcome, error) {
	var outs []reportOutcome
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		outs = make([]reportOutcome, len(items))

		// The machines: their types judge the sets, their versions before
		// the batch tell which ones the batch changed.
		ids := make([]uuid.UUID, 0, len(items))
		for _, p := range items {
			ids = append(ids, p.r.Machine)
		}
		ids = sortedUnique(ids)
		machines, err := queries.ConsoleMachines(ctx, tx, ids)
		if err != nil {
			return fmt.Errorf("load machines: %w", err)
		}
		before := make(map[uuid.UUID]dbsqlc.Machine, len(machines))
		for _, m := range machines {
			before[m.ID] = m
		}

		// Which reports go on: sets that are plausible, and the final
		// fault of each machine (the last status report of the batch wins).
		var sets []int
		finalFault := map[uuid.UUID]bool{}
		for i, p := range items {
			m, ok := before[p.r.Machine]
			if !ok {
				outs[i].err = apperr.FailedPrecondition("this console's machine no longer exists")
				continue
			}
			switch p.r.Kind {
			case ReportSet:
				if err := CheckSet(m.MachineType, p.r.Set); err != nil {
					outs[i].err = err
					continue
				}
				sets = append(sets, i)
			case ReportStatus:
				finalFault[p.r.Machine] = p.r.Fault
			}
		}

		newSets, linksUsed, err := writeSets(ctx, tx, items, outs, sets, finalFault)
		if err != nil {
			return err
		}

		// A fault that starts while a member is linked ends the link: the
		// member cannot go on using a broken machine.
		for machineID, fault := range finalFault {
			if l, ok := linksUsed[machineID]; ok && fault {
				if _, err := EndLink(ctx, tx, l.ID, LinkEndMaintenance); err != nil && !errors.Is(err, ErrAlreadyEnded) {
					return err
				}
			}
		}

		// Every report proves its console alive; status reports set the fault.
		var upd dbsqlc.ConsoleMachinesReportParams
		for _, id := range ids {
			if _, ok := before[id]; !ok {
				continue
			}
			fault, has := finalFault[id]
			upd.Ids = append(upd.Ids, id)
			upd.HasStatus = append(upd.HasStatus, has)
			upd.Faults = append(upd.Faults, fault)
		}
		after := map[uuid.UUID]dbsqlc.Machine{}
		if len(upd.Ids) > 0 {
			updated, err := queries.ConsoleMachinesReport(ctx, tx, upd)
			if err != nil {
				return fmt.Errorf("record reports on machines: %w", err)
			}
			for _, m := range updated {
				after[m.ID] = m
			}
		}
		for i, p := range items {
			if outs[i].err == nil {
				outs[i].res.Machine = after[p.r.Machine]
			}
		}

		// One notification per branch, naming only the machines whose
		// version moved.
		changed := map[uuid.UUID][]MachineVersion{}
		for _, m := range after {
			if m.Version > before[m.ID].Version {
				changed[m.BranchID] = append(changed[m.BranchID], MachineVersion{ID: m.ID, Version: m.Version})
			}
		}
		branches := make([]uuid.UUID, 0, len(changed))
		for b := range changed {
			branches = append(branches, b)
		}
		branches = sortedUnique(branches)
		for _, b := range branches {
			if err := NotifyMachines(ctx, tx, b, changed[b]...); err != nil {
				return err
			}
		}
		// The new sets land in their members' open workouts in the same
		// transaction, so the workout and the machine's record never differ.
		landing := make([]uuid.UUID, 0, len(newSets))
		for _, ev := range newSets {
			landing = append(landing, ev.ID)
		}
		if err := LandMachineSets(ctx, tx, landing); err != nil {
			return err
		}
		return notifyMembers(ctx, tx, newSets)
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// writeSets stores the plausible sets (items[i] for i in sets): a set
// stored before is answered as a duplicate; a set on a machine nobody is
// linked to is refused; the others are inserted and their links' activity
// moved. It returns the member events to send for the new sets, and the
// open links it locked (those of the machines with sets or a fault).
func writeSets(ctx context.Context, tx pgx.Tx, items []*pendingReport, outs []reportOutcome, sets []int, finalFault map[uuid.UUID]bool) ([]MemberEvent, map[uuid.UUID]dbsqlc.MachineLink, error) {
	keyOf := func(i int) setKey { return setKey{items[i].r.Machine, items[i].r.Set.ClientSetID} }
	find := func(idx []int) (map[setKey]dbsqlc.MachineSet, error) {
		found := map[setKey]dbsqlc.MachineSet{}
		if len(idx) == 0 {
			return found, nil
		}
		var params dbsqlc.ConsoleSetsFindParams
		for _, i := range idx {
			params.MachineIds = append(params.MachineIds, items[i].r.Machine)
			params.ClientSetIds = append(params.ClientSetIds, items[i].r.Set.ClientSetID)
		}
		stored, err := queries.ConsoleSetsFind(ctx, tx, params)
		if err != nil {
			return nil, fmt.Errorf("find stored sets: %w", err)
		}
		for _, s := range stored {
			found[setKey{s.MachineID, s.ClientSetID}] = s
		}
		return found, nil
	}

	// Retried sets first: a retry is answered even when the member has
	// unlinked since.
	stored, err := find(sets)
	if err != nil {
		return nil, nil, err
	}
	var fresh []int
	for _, i := range sets {
		if s, ok := stored[keyOf(i)]; ok {
			outs[i].res.Set, outs[i].res.Duplicate = s, true
			continue
		}
		fresh = append(fresh, i)
	}

	// The open links of the machines with new sets or a fault.
	var lockIDs []uuid.UUID
	for _, i := range fresh {
		lockIDs = append(lockIDs, items[i].r.Machine)
	}
	for id, fault := range finalFault {
		if fault {
			lockIDs = append(lockIDs, id)
		}
	}
	links := map[uuid.UUID]dbsqlc.MachineLink{}
	if len(lockIDs) > 0 {
		open, err := queries.ConsoleLinksLock(ctx, tx, sortedUnique(lockIDs))
		if err != nil {
			return nil, nil, fmt.Errorf("lock links: %w", err)
		}
		for _, l := range open {
			links[l.MachineID] = l
		}
	}

	var ins dbsqlc.ConsoleSetsInsertParams
	var inserting []int
	for _, i := range fresh {
		l, ok := links[items[i].r.Machine]
		if !ok {
			outs[i].err = apperr.FailedPrecondition("no member is linked to this machine")
			continue
		}
		s := items[i].r.Set
		ins.UserIds = append(ins.UserIds, l.UserID)
		ins.GymSessionIds = append(ins.GymSessionIds, l.GymSessionID)
		ins.MachineIds = append(ins.MachineIds, l.MachineID)
		ins.LinkIds = append(ins.LinkIds, l.ID)
		ins.ClientSetIds = append(ins.ClientSetIds, s.ClientSetID)
		ins.Reps = append(ins.Reps, s.Reps)
		ins.WeightsKg = append(ins.WeightsKg, s.WeightKg)
		ins.DurationsSeconds = append(ins.DurationsSeconds, s.DurationSeconds)
		ins.DistancesM = append(ins.DistancesM, s.DistanceM)
		ins.Calories = append(ins.Calories, s.Calories)
		inserting = append(inserting, i)
	}
	if len(inserting) == 0 {
		return nil, links, nil
	}
	inserted, err := queries.ConsoleSetsInsert(ctx, tx, ins)
	if err != nil {
		return nil, nil, fmt.Errorf("insert sets: %w", err)
	}
	newByKey := map[setKey]dbsqlc.MachineSet{}
	for _, s := range inserted {
		newByKey[setKey{s.MachineID, s.ClientSetID}] = s
	}
	// Keys that were not inserted were stored meanwhile by another batch,
	// or twice in this one: read them back as duplicates.
	var missing []int
	for _, i := range inserting {
		if _, ok := newByKey[keyOf(i)]; !ok {
			missing = append(missing, i)
		}
	}
	storedNow, err := find(missing)
	if err != nil {
		return nil, nil, err
	}
	var events []MemberEvent
	var touched []uuid.UUID
	claimed := map[setKey]bool{}
	for _, i := range inserting {
		k := keyOf(i)
		if s, ok := newByKey[k]; ok && !claimed[k] {
			claimed[k] = true
			outs[i].res.Set = s
			events = append(events, MemberEvent{User: s.UserID, Kind: MemberSetReported, ID: s.ID})
			touched = append(touched, s.LinkID)
			continue
		}
		s, ok := newByKey[k]
		if !ok {
			if s, ok = storedNow[k]; !ok {
				return nil, nil, fmt.Errorf("set %q of machine %s neither stored nor found", k.clientID, k.machine)
			}
		}
		outs[i].res.Set, outs[i].res.Duplicate = s, true
	}
	if len(touched) > 0 {
		if err := queries.ConsoleLinksTouch(ctx, tx, sortedUnique(touched)); err != nil {
			return nil, nil, fmt.Errorf("move link activity: %w", err)
		}
	}
	return events, links, nil
}

// notifyMembers sends the member events in one statement.
func notifyMembers(ctx context.Context, tx pgx.Tx, events []MemberEvent) error {
	if len(events) == 0 {
		return nil
	}
	payloads := make([]string, len(events))
	for i, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("floor: encode member event: %w", err)
		}
		payloads[i] = string(b)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", ChannelMembers, payloads); err != nil {
		return fmt.Errorf("floor: notify members: %w", err)
	}
	return nil
}

// sortedUnique sorts ids and drops repeats, so that rows are locked in the
// same order by every batch.
func sortedUnique(ids []uuid.UUID) []uuid.UUID {
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ids)
}
