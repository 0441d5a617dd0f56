package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Limits of Inbox.List.
const (
	DefaultListLimit = 100
	MaxListLimit     = 500
)

var (
	// ErrNotInInbox: the agency's inbox holds no such message (never put,
	// or already removed after its delivered receipt).
	ErrNotInInbox = errors.New("delivery: message not in inbox")
	// ErrInboxConflict: Put found the key holding different content. A
	// verified message id has one content; this is equivocation or a bug.
	ErrInboxConflict = errors.New("delivery: inbox holds different content for this message id")
	// ErrInvalidLimit: List was asked for a limit outside 0..MaxListLimit.
	ErrInvalidLimit = errors.New("delivery: inbox list limit outside 0..500")
)

// watchDrainTimeout bounds the wait for a stopped KV watcher to close.
const watchDrainTimeout = 5 * time.Second

// Inbox is the pull inbox of every agency, one KV entry per undelivered
// message under the key "<agency>.<message id>". It is safe for concurrent
// use; its durability is the bucket's (file storage and replicas chosen by
// whoever creates it).
type Inbox struct {
	kv jetstream.KeyValue
}

// NewInbox returns an Inbox over kv (the gateway creates the bucket).
func NewInbox(kv jetstream.KeyValue) *Inbox { return &Inbox{kv: kv} }

// Put stores d in agency's inbox. It is idempotent: if the key already holds
// the same content, or held it and was removed (the delivered receipt was
// issued), Put returns nil and stores nothing, so a redelivered message does
// not reappear. Different content under the same key is ErrInboxConflict.
func (i *Inbox) Put(ctx context.Context, agency string, d *api.Delivery) error {
	if d == nil {
		return invalid("invalid_id", ErrInvalidID)
	}
	key, err := inboxKey(agency, d.ID)
	if err != nil {
		return err
	}
	val, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("delivery: encode inbox entry %s: %w", key, err)
	}
	// Revision 0 demands that the key has no history at all, not even the
	// marker Remove leaves: unlike KeyValue.Create, a removed item is not
	// written again.
	_, err = i.kv.Update(ctx, key, val, 0)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("delivery: inbox put %s: %w", key, err)
	}
	e, err := i.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil // removed after delivery: the redelivered copy is a duplicate
	case err != nil:
		return fmt.Errorf("delivery: inbox put %s: %w", key, err)
	case bytes.Equal(e.Value(), val):
		return nil
	}
	return &api.Error{Kind: api.KindConflict, Code: "inbox_conflict", Detail: key, Err: ErrInboxConflict}
}

// List returns up to limit messages of agency's inbox, oldest first (by KV
// revision, i.e. the order they were put). limit 0 means DefaultListLimit.
func (i *Inbox) List(ctx context.Context, agency string, limit int) ([]api.Delivery, error) {
	if !validAgency(agency) {
		return nil, invalid("invalid_agency", ErrInvalidAgency)
	}
	if limit < 0 || limit > MaxListLimit {
		return nil, invalid("invalid_limit", ErrInvalidLimit)
	}
	if limit == 0 {
		limit = DefaultListLimit
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watcher's initial values are the last entry of each key in
	// stream order, so the oldest come first and the scan stops at limit.
	w, err := i.kv.Watch(ctx, agency+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("delivery: inbox list %s: %w", agency, err)
	}
	defer stopWatch(w)
	out := make([]api.Delivery, 0, min(limit, 32))
	for len(out) < limit {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("delivery: inbox list %s: watcher closed", agency)
			}
			if e == nil {
				return out, nil // all current entries seen
			}
			var d api.Delivery
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				return nil, fmt.Errorf("delivery: inbox entry %s: %w", e.Key(), err)
			}
			out = append(out, d)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// Get returns message id from agency's inbox, or ErrNotInInbox.
func (i *Inbox) Get(ctx context.Context, agency, id string) (*api.Delivery, error) {
	key, err := inboxKey(agency, id)
	if err != nil {
		return nil, err
	}
	e, err := i.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, notInInbox(key)
	}
	if err != nil {
		return nil, fmt.Errorf("delivery: inbox get %s: %w", key, err)
	}
	var d api.Delivery
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return nil, fmt.Errorf("delivery: inbox entry %s: %w", key, err)
	}
	if d.ID != id {
		return nil, fmt.Errorf("delivery: inbox entry %s holds message %q", key, d.ID)
	}
	return &d, nil
}

// Remove takes message id out of agency's inbox, after the gateway has
// durably issued its delivered receipt. Removing a message that is not
// there is nil (a repeated ack), and leaves no marker: only a message that
// was put can be kept from reappearing. The content is purged, not just
// hidden.
func (i *Inbox) Remove(ctx context.Context, agency, id string) error {
	key, err := inboxKey(agency, id)
	if err != nil {
		return err
	}
	e, err := i.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delivery: inbox remove %s: %w", key, err)
	}
	err = i.kv.Purge(ctx, key, jetstream.LastRevision(e.Revision()))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Someone else removed it first; entries are never rewritten.
		if _, gerr := i.kv.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("delivery: inbox remove %s: %w", key, err)
	}
	return nil
}

func inboxKey(agency, id string) (string, error) {
	if !validAgency(agency) {
		return "", invalid("invalid_agency", ErrInvalidAgency)
	}
	if !validID(id) {
		return "", invalid("invalid_id", ErrInvalidID)
	}
	return agency + "." + id, nil
}

func invalid(code string, err error) error {
	return &api.Error{Kind: api.KindInvalid, Code: code, Err: err}
}

func notInInbox(key string) error {
	return &api.Error{Kind: api.KindNotFound, Code: "not_in_inbox", Detail: key, Err: ErrNotInInbox}
}

// stopWatch stops w and drains its channel until the watcher closes it: a
// watcher blocks its delivery goroutine on a full channel, and an
// abandoned one would leak it.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	timer := time.NewTimer(watchDrainTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-timer.C:
			return
		}
	}
}
