package main

import (
	"encoding/binary"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// A Connect stream shares its HTTP/2 connection with up to 249 others, and
// net/http's client reads every frame of the connection in one goroutine
// before handing each stream its data. The stream's own read comes later,
// often after other reads of the connection. To know which read carried a
// stream's message, the tool follows the HTTP/2 frames through its
// connection (h2c, so in the clear):
//
//   - on the way out, it decodes each request's headers and finds the
//     token (streamTokenHeader) the stream's request carries, which ties
//     the HTTP/2 stream id to the tool's stream;
//   - on the way in, it follows each stream's DATA frames through the
//     Connect (or gRPC) envelopes and, when an envelope's last byte is
//     read, queues that read's arrival stamp for the stream.
//
// The stream takes one queued arrival for each message it reads, in the
// same order. Nothing is decoded but frame headers, envelope lengths and
// the requests' header blocks, so this costs the tool little.

// streamTokenHeader carries the token that identifies a Connect stream's
// request to the frame tracker of its connection.
const streamTokenHeader = "x-nxg-load-stream"

// Frame types and flags of RFC 9113, section 6.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// clientPreface opens every HTTP/2 connection the client makes (RFC 9113,
// section 3.4); frames follow it.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// streamArrivals is the queue of arrival stamps (Unix nanoseconds, 0 when
// unknown) of the messages of one stream that arrived and were not read yet.
type streamArrivals struct {
	mu   sync.Mutex
	q    []int64
	head int
}

func (a *streamArrivals) push(ns int64) {
	a.mu.Lock()
	if a.head == len(a.q) {
		// Empty: reuse the slice from the start.
		a.q, a.head = a.q[:0], 0
	}
	a.q = append(a.q, ns)
	a.mu.Unlock()
}

// pop returns the arrival of the oldest unread message, or the zero time
// when none is queued or its arrival is unknown.
func (a *streamArrivals) pop() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head == len(a.q) {
		return time.Time{}
	}
	ns := a.q[a.head]
	a.head++
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// streamRegistry holds the arrival queues of the open Connect streams, by
// the token their requests carry.
type streamRegistry struct {
	next atomic.Uint64
	m    sync.Map // token → *streamArrivals
}

// open registers a new stream and returns its token and its queue.
func (r *streamRegistry) open() (string, *streamArrivals) {
	token := strconv.FormatUint(r.next.Add(1), 10)
	a := &streamArrivals{}
	r.m.Store(token, a)
	return token, a
}

// close forgets the stream of token.
func (r *streamRegistry) close(token string) { r.m.Delete(token) }

func (r *streamRegistry) lookup(token string) *streamArrivals {
	a, ok := r.m.Load(token)
	if !ok {
		return nil
	}
	return a.(*streamArrivals)
}

// frameScanner follows the frames of one direction of an HTTP/2
// connection across reads or writes of any size. It passes on the content
// of DATA frames and the header block fragments of HEADERS and
// CONTINUATION frames, without their padding and priority fields, and
// skips every other frame.
type frameScanner struct {
	preface int // bytes of the client preface still to skip
	hdr     [9]byte
	hn      int // bytes of hdr filled

	typ, flags uint8
	stream     uint32
	left       int  // payload bytes of the frame still to come
	padLength  bool // the pad length byte is next
	skip       int  // priority bytes still to skip
	pad        int  // padding at the end of the payload
}

// scan passes on each piece of content in p to content, and tells end
// when a DATA, HEADERS or CONTINUATION frame is over.
func (s *frameScanner) scan(p []byte, content func(typ uint8, stream uint32, b []byte), end func(typ, flags uint8, stream uint32)) {
	for len(p) > 0 {
		if s.preface > 0 {
			n := min(s.preface, len(p))
			s.preface -= n
			p = p[n:]
			continue
		}
		if s.hn < len(s.hdr) {
			n := copy(s.hdr[s.hn:], p)
			s.hn += n
			p = p[n:]
			if s.hn == len(s.hdr) {
				s.startFrame()
				if s.left == 0 {
					s.endFrame(end)
				}
			}
			continue
		}
		var n int
		switch {
		case s.padLength:
			s.pad = int(p[0])
			s.padLength = false
			n = 1
		case s.skip > 0:
			n = min(s.skip, len(p), s.left)
			s.skip -= n
		case s.left > s.pad && s.carries():
			n = min(s.left-s.pad, len(p))
			content(s.typ, s.stream, p[:n])
		default:
			// Padding, or a frame whose content no one follows.
			n = min(s.left, len(p))
		}
		p = p[n:]
		s.left -= n
		if s.left == 0 {
			s.endFrame(end)
		}
	}
}

// carries reports whether the frame's content is passed on.
func (s *frameScanner) carries() bool {
	return s.typ == frameData || s.typ == frameHeaders || s.typ == frameContinuation
}

func (s *frameScanner) startFrame() {
	h := s.hdr[:]
	s.left = int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	s.typ, s.flags = h[3], h[4]
	s.stream = binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
	s.pad, s.skip = 0, 0
	s.padLength = s.left > 0 && s.flags&flagPadded != 0 && (s.typ == frameData || s.typ == frameHeaders)
	if s.typ == frameHeaders && s.flags&flagPriority != 0 {
		s.skip = 5
	}
}

func (s *frameScanner) endFrame(end func(typ, flags uint8, stream uint32)) {
	s.hn = 0
	if s.carries() {
		end(s.typ, s.flags, s.stream)
	}
}

// envelopeScanner follows the length-prefixed envelopes (one byte of
// flags, four of length) that Connect and gRPC put messages in.
type envelopeScanner struct {
	hdr  [5]byte
	hn   int
	left int
}

// scan returns how many envelopes end in b.
func (e *envelopeScanner) scan(b []byte) int {
	ended := 0
	for len(b) > 0 {
		if e.hn < len(e.hdr) {
			n := copy(e.hdr[e.hn:], b)
			e.hn += n
			b = b[n:]
			if e.hn == len(e.hdr) {
				e.left = int(binary.BigEndian.Uint32(e.hdr[1:]))
				if e.left == 0 {
					e.hn = 0
					ended++
				}
			}
			continue
		}
		n := min(e.left, len(b))
		e.left -= n
		b = b[n:]
		if e.left == 0 {
			e.hn = 0
			ended++
		}
	}
	return ended
}

// trackedStream is a stream of the connection whose messages are followed.
type trackedStream struct {
	envelopes envelopeScanner
	arrivals  *streamArrivals
}

// frameTracker follows one HTTP/2 connection's frames in both directions:
// the client's requests to learn which stream is whose, and the server's
// DATA to stamp each message of those streams with its arrival.
type frameTracker struct {
	registry *streamRegistry

	// The writing side: only the client's writer, one write at a time.
	out     frameScanner
	headers *hpack.Decoder
	token   string // the token of the header block being decoded
	broken  bool   // a header block could not be decoded: no stream is tied any more

	// The reading side: only the connection's reader.
	in frameScanner

	mu      sync.Mutex
	streams map[uint32]*trackedStream
}

func newFrameTracker(registry *streamRegistry) *frameTracker {
	t := &frameTracker{registry: registry, out: frameScanner{preface: len(clientPreface)}, streams: map[uint32]*trackedStream{}}
	t.headers = hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == streamTokenHeader {
			t.token = f.Value
		}
	})
	return t
}

// sent follows bytes the client writes.
func (t *frameTracker) sent(p []byte) {
	t.out.scan(p, t.sentContent, t.sentEnd)
}

func (t *frameTracker) sentContent(typ uint8, _ uint32, b []byte) {
	if typ == frameData || t.broken {
		return
	}
	if _, err := t.headers.Write(b); err != nil {
		t.broken = true
	}
}

func (t *frameTracker) sentEnd(typ, flags uint8, stream uint32) {
	if typ == frameData || flags&flagEndHeaders == 0 || t.broken {
		return
	}
	if err := t.headers.Close(); err != nil {
		// The decoder's table may no longer match the client's: no later
		// header block can be trusted, so no stream is tied from here on.
		t.broken = true
		return
	}
	token := t.token
	t.token = ""
	if token == "" {
		return
	}
	if a := t.registry.lookup(token); a != nil {
		t.mu.Lock()
		t.streams[stream] = &trackedStream{arrivals: a}
		t.mu.Unlock()
	}
}

// received follows bytes the client read, which arrived at stamp (Unix
// nanoseconds, 0 when unknown).
func (t *frameTracker) received(p []byte, stamp int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.in.scan(p, func(typ uint8, stream uint32, b []byte) {
		if typ != frameData {
			return
		}
		s := t.streams[stream]
		if s == nil {
			return
		}
		for range s.envelopes.scan(b) {
			s.arrivals.push(stamp)
		}
	}, func(_, flags uint8, stream uint32) {
		if flags&flagEndStream != 0 {
			delete(t.streams, stream)
		}
	})
}
