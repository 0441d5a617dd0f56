package ledger

import (
	"container/list"
	"sync"
)

// Recent keeps, for a bounded number of messages, the copy of each record
// this process wrote last and the KV revision it was written at, so that
// the next update can start from it (UpdateFrom) instead of reading the
// record back. A stale copy is safe: the write is a compare-and-swap on the
// revision, and a conflict falls back to a read. When full, the copy kept
// longest is dropped. Safe for concurrent use.
type Recent struct {
	mu    sync.Mutex
	max   int
	byID  map[string]*list.Element // of *Record
	order *list.List               // oldest first
}

// NewRecent returns a cache of at most n records (at least one).
func NewRecent(n int) *Recent {
	return &Recent{max: max(n, 1), byID: map[string]*list.Element{}, order: list.New()}
}

// Put keeps a copy of r, a record just read or written through a Store,
// unless the copy kept is newer. A terminal record is forgotten instead:
// nothing is expected to change it soon.
func (c *Recent) Put(r *Record) {
	if c == nil || r == nil || r.rev == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[r.ID]; ok {
		if e.Value.(*Record).rev > r.rev {
			return
		}
		c.order.Remove(e)
		delete(c.byID, r.ID)
	}
	if r.Terminal() {
		return
	}
	c.byID[r.ID] = c.order.PushBack(r.clone())
	for c.order.Len() > c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.byID, oldest.Value.(*Record).ID)
	}
}

// Get returns the copy kept for id, or nil. The caller must not modify it.
func (c *Recent) Get(id string) *Record {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[id]; ok {
		return e.Value.(*Record)
	}
	return nil
}

// Len is the number of records kept.
func (c *Recent) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
