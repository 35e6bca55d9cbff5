package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// envelope is msg in a Connect envelope with the given flags.
func envelope(flags byte, msg string) []byte {
	b := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// headerBlock encodes fields with enc, whose dynamic table carries over
// from block to block as the client's does.
func headerBlock(t *testing.T, enc *hpack.Encoder, buf *bytes.Buffer, fields ...string) []byte {
	t.Helper()
	buf.Reset()
	for i := 0; i < len(fields); i += 2 {
		if err := enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			t.Fatal(err)
		}
	}
	return slices.Clone(buf.Bytes())
}

// feed passes stream to fn in pieces of size bytes (all of it when size is
// 0), each piece with the offset just past its end as its stamp.
func feed(stream []byte, size int, fn func(p []byte, stamp int64)) {
	if size == 0 {
		size = len(stream)
	}
	for off := 0; off < len(stream); off += size {
		end := min(off+size, len(stream))
		fn(stream[off:end], int64(end))
	}
}

func TestFrameTrackerStampsEachStreamsMessages(t *testing.T) {
	registry := &streamRegistry{}
	tokA, _ := registry.open()
	tokB, _ := registry.open()
	gone, _ := registry.open()
	registry.close(gone) // a stream that ended before its request was written

	// What the client writes: the preface, settings, and three requests,
	// the first with priority and padding and its header block split
	// over a CONTINUATION frame.
	var out bytes.Buffer
	out.WriteString(clientPreface)
	fw := http2.NewFramer(&out, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	if err := fw.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	block := headerBlock(t, enc, &hbuf, ":method", "POST", ":path", "/nxg.v1.MachineService/WatchMachines",
		"authorization", "Bearer x", streamTokenHeader, tokA)
	half := len(block) / 2
	if err := fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:half], PadLength: 3,
		Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}}); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteContinuation(1, true, block[half:]); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteData(1, true, envelope(0, "request")); err != nil {
		t.Fatal(err)
	}
	// The same names again: the encoder refers to its dynamic table.
	for _, r := range []struct {
		stream uint32
		token  string
	}{{3, tokB}, {5, gone}} {
		block = headerBlock(t, enc, &hbuf, ":method", "POST", ":path", "/nxg.v1.MachineService/WatchMachines",
			"authorization", "Bearer x", streamTokenHeader, r.token)
		if err := fw.WriteHeaders(http2.HeadersFrameParam{StreamID: r.stream, BlockFragment: block, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}

	// What the server sends back, with the offset just past the last
	// byte of each of A's and B's messages.
	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	var wantA, wantB []int64
	data := func(stream uint32, end bool, pad int, msgs ...[]byte) []int64 {
		t.Helper()
		start := in.Len() + 9
		if pad > 0 {
			start++
		}
		var payload []byte
		var ends []int64
		for _, m := range msgs {
			payload = append(payload, m...)
			ends = append(ends, int64(start+len(payload)))
		}
		var err error
		if pad > 0 {
			err = fr.WriteDataPadded(stream, end, payload, make([]byte, pad))
		} else {
			err = fr.WriteData(stream, end, payload)
		}
		if err != nil {
			t.Fatal(err)
		}
		return ends
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	resp := headerBlock(t, hpack.NewEncoder(&hbuf), &hbuf, ":status", "200")
	for _, s := range []uint32{1, 3, 5} {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s, BlockFragment: resp, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	wantA = append(wantA, data(1, false, 0, envelope(0, "snapshot"), envelope(0, "change 1"))...)
	// B's first message arrives in two frames, the first padded; an
	// empty message ends in its header.
	split := envelope(0, "a longer change of B")
	data(3, false, 7, split[:8])
	wantB = append(wantB, data(3, false, 0, split[8:], envelope(0, ""))...)
	data(5, false, 0, envelope(0, "nobody's"))
	if err := fr.WritePing(false, [8]byte{}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1000); err != nil {
		t.Fatal(err)
	}
	// A's stream ends with its end-of-stream envelope; what comes after
	// on its id is no longer followed.
	wantA = append(wantA, data(1, true, 0, envelope(2, "{}"))...)
	data(1, false, 0, envelope(0, "after the end"))
	wantB = append(wantB, data(3, false, 2, envelope(0, "change 2"))...)

	for _, size := range []int{0, 1, 7, 64} {
		t.Run(fmt.Sprintf("reads of %d bytes", size), func(t *testing.T) {
			a, b := &streamArrivals{}, &streamArrivals{}
			registry.m.Store(tokA, a)
			registry.m.Store(tokB, b)
			tr := newFrameTracker(registry)
			feed(out.Bytes(), size, func(p []byte, _ int64) { tr.sent(p) })
			if tr.broken {
				t.Fatal("the header blocks could not be decoded")
			}
			if len(tr.streams) != 2 || tr.streams[1] == nil || tr.streams[3] == nil {
				t.Fatalf("tied streams %v, want 1 and 3", slices.Sorted(maps.Keys(tr.streams)))
			}
			feed(in.Bytes(), size, tr.received)
			wa, wb := readEnds(wantA, size, in.Len()), readEnds(wantB, size, in.Len())
			if got := drain(a); !slices.Equal(got, wa) {
				t.Errorf("A's arrivals %v, want %v", got, wa)
			}
			if got := drain(b); !slices.Equal(got, wb) {
				t.Errorf("B's arrivals %v, want %v", got, wb)
			}
			if _, ok := tr.streams[1]; ok {
				t.Error("A's stream is still followed after it ended")
			}
		})
	}
}

// readEnds maps each offset to the end of the read of size bytes (of a
// stream of total bytes) that holds it. Size 0 is one read of it all, as
// in feed, so every message has that read's stamp.
func readEnds(offsets []int64, size, total int) []int64 {
	if size == 0 {
		size = total
	}
	out := make([]int64, len(offsets))
	for i, o := range offsets {
		out[i] = min((o+int64(size)-1)/int64(size)*int64(size), int64(total))
	}
	return out
}

// drain pops every queued arrival, as Unix nanoseconds.
func drain(a *streamArrivals) []int64 {
	var out []int64
	for {
		a.mu.Lock()
		empty := a.head == len(a.q)
		a.mu.Unlock()
		if empty {
			return out
		}
		out = append(out, a.pop().UnixNano())
	}
}

// TestFrameTrackerOnARealConnection runs two streams over one h2c
// connection of the tool's own client: a message sent to A, and 40 ms
// later one to B, both read only after that. A's message takes its own
// arrival, before B's was sent, where the connection's latest arrival
// would be B's.
func TestFrameTrackerOnARealConnection(t *testing.T) {
	var mu sync.Mutex
	sends := map[string]chan []byte{}
	outbox := func(token string) chan []byte {
		mu.Lock()
		defer mu.Unlock()
		if sends[token] == nil {
			sends[token] = make(chan []byte, 16)
		}
		return sends[token]
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch := outbox(r.Header.Get(streamTokenHeader))
		w.Header().Set("Content-Type", "application/connect+proto")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case m := <-ch:
				_, _ = w.Write(m)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()

	registry := &streamRegistry{}
	holder := &arrivalHolder{}
	client := h2cClientDialing(arrivalDialer(holder, registry))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() (string, *streamArrivals, *bufio.Reader) {
		t.Helper()
		token, arrivals := registry.open()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(streamTokenHeader, token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor != 2 {
			t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
		}
		return token, arrivals, bufio.NewReader(resp.Body)
	}
	read := func(r *bufio.Reader, want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	}

	tokA, arrA, bodyA := open()
	// The kernel turns stamping on a moment after the first socket asks.
	for tries := 0; ; tries++ {
		if tries == 100 {
			t.Fatal("no message was stamped in 100 tries")
		}
		m := envelope(0, "warm-up")
		outbox(tokA) <- m
		read(bodyA, m)
		if !arrA.pop().IsZero() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tokB, arrB, bodyB := open()
	if holder.conn.Load() == nil {
		t.Fatal("the client did not dial through the holder")
	}

	sentA := time.Now()
	mA := envelope(0, "for A")
	outbox(tokA) <- mA
	time.Sleep(40 * time.Millisecond)
	sentB := time.Now()
	mB := envelope(0, "for B")
	outbox(tokB) <- mB
	time.Sleep(40 * time.Millisecond)
	read(bodyA, mA)
	read(bodyB, mB)
	readAt := time.Now()

	a, b := arrA.pop(), arrB.pop()
	if a.Before(sentA) || !a.Before(sentB) {
		t.Errorf("A's message arrived at %v, want between its send %v and B's %v", a, sentA, sentB)
	}
	if b.Before(sentB) || !b.Before(readAt.Add(-30*time.Millisecond)) {
		t.Errorf("B's message arrived at %v, want after its send %v and well before the read %v", b, sentB, readAt)
	}
	if latest := holder.lastArrival(); latest.Before(sentB) {
		t.Errorf("the connection's latest arrival %v is before B's send %v", latest, sentB)
	}
	if !arrA.pop().IsZero() || !arrB.pop().IsZero() {
		t.Error("an arrival queued for a message never sent")
	}
}

// A header block the tracker cannot decode leaves its table out of step
// with the client's, so it ties no stream from then on, and those
// streams' messages have no arrival of their own.
func TestFrameTrackerStopsTyingOnABadHeaderBlock(t *testing.T) {
	registry := &streamRegistry{}
	token, arrivals := registry.open()
	var out bytes.Buffer
	out.WriteString(clientPreface)
	fw := http2.NewFramer(&out, nil)
	// An indexed field with an index no table has.
	if err := fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0x7f}, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var hbuf bytes.Buffer
	block := headerBlock(t, hpack.NewEncoder(&hbuf), &hbuf, ":method", "POST", streamTokenHeader, token)
	if err := fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	tr := newFrameTracker(registry)
	tr.sent(out.Bytes())
	if !tr.broken || len(tr.streams) != 0 {
		t.Fatalf("broken %v, %d streams tied; want broken and none", tr.broken, len(tr.streams))
	}
	var in bytes.Buffer
	if err := http2.NewFramer(&in, nil).WriteData(3, false, envelope(0, "change")); err != nil {
		t.Fatal(err)
	}
	tr.received(in.Bytes(), 42)
	if got := arrivals.pop(); !got.IsZero() {
		t.Errorf("an untied stream's message has the arrival %v", got)
	}
}
