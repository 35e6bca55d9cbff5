package integrations

import (
	"maps"
	"slices"
	"sync"
)

// Set groups the clients of a process, for /readyz's information section
// and for code that looks a client up by name. The zero Set is ready to use;
// it is safe for concurrent use.
type Set struct {
	mu      sync.RWMutex
	clients map[string]*Client
}

// NewSet returns a Set holding clients.
func NewSet(clients ...*Client) *Set {
	s := &Set{}
	for _, c := range clients {
		s.Add(c)
	}
	return s
}

// Add puts c in the set, replacing a client of the same name; nil is
// ignored.
func (s *Set) Add(c *Client) {
	if c == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = map[string]*Client{}
	}
	s.clients[c.Name()] = c
}

// Client returns the client named name.
func (s *Set) Client(name string) (*Client, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[name]
	return c, ok
}

// Names returns the clients' names, sorted.
func (s *Set) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.clients))
}

// BreakerStates maps each client's name to its breaker state ("closed",
// "half-open" or "open"). It is information: an open breaker means a
// service is failing, not that this server cannot serve.
func (s *Set) BreakerStates() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	states := make(map[string]string, len(s.clients))
	for name, c := range s.clients {
		states[name] = c.State()
	}
	return states
}
