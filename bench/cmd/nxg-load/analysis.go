package main

// Delivery is how the confirmed changes reached the subscribers. Every
// subscriber that had its first snapshot expects each change whose version
// is above the one in that snapshot; each expected delivery ends in exactly
// one of Delivered, Resynced, Superseded or Lost.
type Delivery struct {
	// Changes is the distinct (machine, version) pairs the server confirmed.
	Changes int `json:"changes"`
	// Expected is the sum over subscribers of the changes each should get.
	Expected uint64 `json:"expected"`
	// Delivered arrived as a change message.
	Delivered uint64 `json:"delivered"`
	// Resynced did not arrive as a message, but a later snapshot (after a
	// reconnect or a resync) carried that version or a newer one.
	Resynced uint64 `json:"resynced"`
	// Superseded did not arrive, but a newer version of the same machine did:
	// the subscriber's state is right, one intermediate change was skipped.
	Superseded uint64 `json:"superseded"`
	// Lost neither arrived nor was made up for: the subscriber's view of the
	// machine is stale.
	Lost uint64 `json:"lost"`
	// LostOnHeld is the part of Lost on subscribers whose stream never
	// ended during the run ("nothing lost for connected subscribers").
	LostOnHeld uint64 `json:"lost_on_held"`
	// NotReady is subscribers that never got a first snapshot; they expect nothing.
	NotReady int `json:"not_ready"`
}

// analyze matches the confirmed changes against what each subscriber saw.
// It reads the subscribers' bookkeeping, so their goroutines must have stopped.
func analyze(subs []*subscriber, changes []change) Delivery {
	type key struct {
		machine int
		version int64
	}
	seen := make(map[key]bool, len(changes))
	distinct := changes[:0:0]
	for _, c := range changes {
		k := key{c.machine, c.version}
		if !seen[k] {
			seen[k] = true
			distinct = append(distinct, c)
		}
	}
	d := Delivery{Changes: len(distinct)}
	for _, s := range subs {
		if !s.ready {
			d.NotReady++
			continue
		}
		for _, c := range distinct {
			t := &s.tracks[c.machine]
			if c.version <= t.base {
				continue
			}
			d.Expected++
			switch {
			case t.has(c.version):
				d.Delivered++
			case t.covered >= c.version:
				d.Resynced++
			case t.maxSeen > c.version:
				d.Superseded++
			default:
				d.Lost++
				if s.drops == 0 {
					d.LostOnHeld++
				}
			}
		}
	}
	return d
}
