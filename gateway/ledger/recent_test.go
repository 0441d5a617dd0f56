package ledger_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
)

// TestRecent keeps the newest written copy of each record, never one
// without a revision or a terminal one, and forgets the oldest when full;
// a kept copy starts an UpdateFrom that writes without a conflict.
func TestRecent(t *testing.T) {
	status, _ := buckets(t)
	s := ledger.Sent(status)
	ctx := testCtx(t)
	relay := func(r *ledger.Record) bool { return r.AddEvent(ledger.Event(api.StatusRelayed, t0, "")) }
	tests := []struct {
		name string
		// put prepares the store and puts records into c; it returns the id to look up.
		put  func(t *testing.T, c *ledger.Recent, id string)
		want []string // timeline of the kept copy; nil means none kept
	}{{
		name: "created record",
		put:  func(t *testing.T, c *ledger.Recent, id string) { c.Put(mustCreate(t, s, id, api.StatusAccepted)) },
		want: []string{api.StatusAccepted},
	}, {
		name: "an older copy does not replace a newer one",
		put: func(t *testing.T, c *ledger.Recent, id string) {
			old := mustCreate(t, s, id, api.StatusAccepted)
			r, err := s.UpdateFrom(ctx, id, old, relay)
			if err != nil {
				t.Fatal(err)
			}
			c.Put(r)
			c.Put(old)
		},
		want: []string{api.StatusAccepted, api.StatusRelayed},
	}, {
		name: "a record without a revision is not kept",
		put:  func(_ *testing.T, c *ledger.Recent, id string) { c.Put(record(id, "env", api.StatusAccepted)) },
	}, {
		name: "a terminal record is forgotten",
		put: func(t *testing.T, c *ledger.Recent, id string) {
			r := mustCreate(t, s, id, api.StatusAccepted)
			c.Put(r)
			done, err := s.UpdateFrom(ctx, id, r, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusDelivered, t0, ""))
			})
			if err != nil {
				t.Fatal(err)
			}
			c.Put(done)
		},
	}, {
		name: "the kept copy is not the caller's",
		put: func(t *testing.T, c *ledger.Recent, id string) {
			r := mustCreate(t, s, id, api.StatusAccepted)
			c.Put(r)
			r.AddEvent(ledger.Event(api.StatusRelayed, t0, ""))
		},
		want: []string{api.StatusAccepted},
	}}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ledger.NewRecent(8)
			id := fmt.Sprintf("recent-%d", i)
			tc.put(t, c, id)
			got := c.Get(id)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("kept %v, want nothing", statusesOf(got))
				}
				return
			}
			if got == nil || !slices.Equal(statusesOf(got), tc.want) {
				t.Fatalf("kept %v, want %v", got, tc.want)
			}
			// The copy carries the revision it was written at: starting
			// from it writes without a conflict, so without a read.
			stored, rev, err := s.Get(ctx, id)
			if err != nil || !slices.Equal(statusesOf(stored), tc.want) {
				t.Fatalf("stored %v, %v; want %v", stored, err, tc.want)
			}
			if _, err := s.UpdateFrom(ctx, id, got, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusReceived, t0, ""))
			}); err != nil {
				t.Fatal(err)
			}
			if _, rev2, err := s.Get(ctx, id); err != nil || rev2 != rev+1 {
				t.Fatalf("revision %d → %d (%v): want one write", rev, rev2, err)
			}
		})
	}
}

// TestRecentBound forgets the copy kept longest once full; a nil Recent
// keeps nothing.
func TestRecentBound(t *testing.T) {
	status, _ := buckets(t)
	s := ledger.Sent(status)
	c := ledger.NewRecent(2)
	for _, id := range []string{"b1", "b2", "b3"} {
		c.Put(mustCreate(t, s, id, api.StatusAccepted))
	}
	if c.Len() != 2 || c.Get("b1") != nil || c.Get("b2") == nil || c.Get("b3") == nil {
		t.Fatalf("kept %d records (b1 %v, b2 %v, b3 %v), want b2 and b3", c.Len(), c.Get("b1"), c.Get("b2"), c.Get("b3"))
	}
	var none *ledger.Recent
	none.Put(c.Get("b2"))
	if none.Get("b2") != nil || none.Len() != 0 {
		t.Fatal("a nil Recent kept a record")
	}
}
