package pair

import (
	"context"
	"fmt"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// Sent is one message submitted through a Pair.
type Sent struct {
	ID       string
	From, To string
	Agency   string // sending agency
	Type     envelope.Type
	Accepted time.Time
}

// Send submits an example message of type t from party's agency for t to
// the peer.
func (p *Pair) Send(ctx context.Context, from string, t envelope.Type, idemKey string) (*Sent, error) {
	s := p.Side(from)
	agency := AgencyFor(from, t)
	req := &api.SubmitRequest{Type: string(t), To: s.Peer, Body: envelope.Example(t)}
	start := time.Now()
	resp, err := s.Client(agency).Submit(ctx, req, idemKey)
	if err != nil {
		return nil, fmt.Errorf("send %s from %s: %w", t, from, err)
	}
	return &Sent{ID: resp.ID, From: from, To: s.Peer, Agency: agency, Type: t, Accepted: start}, nil
}

// DrainInboxes acks everything waiting in the pull inboxes of both sides,
// as a pull agency would; it returns how many it acked.
func (p *Pair) DrainInboxes(ctx context.Context) (int, error) {
	n := 0
	for _, s := range []*Side{p.US, p.JP} {
		for _, agency := range s.Pull {
			c := s.Client(agency)
			items, err := c.Inbox(ctx, 100)
			if err != nil {
				return n, err
			}
			for _, d := range items {
				if err := c.Ack(ctx, d.ID); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	return n, nil
}

// WaitStatus polls the sender's API until message m reaches status (or a
// terminal status), draining pull inboxes meanwhile.
func (p *Pair) WaitStatus(ctx context.Context, m *Sent, status string, timeout time.Duration) (*api.Message, error) {
	c := p.Side(m.From).Client(m.Agency)
	deadline := time.Now().Add(timeout)
	for {
		if _, err := p.DrainInboxes(ctx); err != nil {
			return nil, err
		}
		msg, err := c.Message(ctx, m.ID)
		if err == nil && (msg.Status == status || msg.Status == api.StatusRejected || msg.Status == api.StatusFailed) {
			return msg, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return msg, fmt.Errorf("message %s still %s after %s", m.ID, msg.Status, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}
