package main

import "testing"

func TestAnalyzeClassifiesEachExpectedDelivery(t *testing.T) {
	// Two machines; the subscriber's snapshot had machine 0 at version 10
	// and machine 1 at version 3.
	s := &subscriber{ready: true, tracks: make([]machineTrack, 2)}
	s.tracks[0] = machineTrack{base: 10, maxSeen: 10}
	s.tracks[1] = machineTrack{base: 3, maxSeen: 3}
	for _, v := range []int64{11, 12, 15} {
		if s.tracks[0].mark(v) {
			t.Fatalf("version %d marked twice", v)
		}
	}
	if !s.tracks[0].mark(12) {
		t.Fatal("marking 12 again did not report a duplicate")
	}
	s.tracks[0].maxSeen = 15
	s.tracks[1].covered = 5 // a resync snapshot carried machine 1 at version 5

	changes := []change{
		{machine: 0, version: 9},  // before the snapshot: not expected
		{machine: 0, version: 11}, // delivered
		{machine: 0, version: 12}, // delivered
		{machine: 0, version: 12}, // the same change confirmed twice counts once
		{machine: 0, version: 13}, // superseded by 15
		{machine: 0, version: 15}, // delivered
		{machine: 0, version: 16}, // lost
		{machine: 1, version: 4},  // resynced
		{machine: 1, version: 5},  // resynced
		{machine: 1, version: 6},  // lost
	}
	notReady := &subscriber{tracks: make([]machineTrack, 2)}
	d := analyze([]*subscriber{s, notReady}, changes)
	want := Delivery{Changes: 9, Expected: 8, Delivered: 3, Resynced: 2, Superseded: 1, Lost: 2, LostOnHeld: 2, NotReady: 1}
	if d != want {
		t.Errorf("analyze = %+v\nwant      %+v", d, want)
	}

	s.drops = 1 // the same losses on a subscriber whose stream ended once
	d = analyze([]*subscriber{s}, changes)
	if d.Lost != 2 || d.LostOnHeld != 0 {
		t.Errorf("lost %d on held %d, want 2 and 0 once the subscriber dropped", d.Lost, d.LostOnHeld)
	}
}

func TestMachineTrackBitsAcrossWords(t *testing.T) {
	tr := machineTrack{base: 100}
	for _, v := range []int64{101, 164, 165, 300} {
		tr.mark(v)
	}
	for v := int64(101); v <= 301; v++ {
		want := v == 101 || v == 164 || v == 165 || v == 300
		if tr.has(v) != want {
			t.Errorf("has(%d) = %v, want %v", v, tr.has(v), want)
		}
	}
	if !tr.has(50) || tr.mark(50) {
		t.Error("versions at or below the base are not expected and never duplicates")
	}
}
