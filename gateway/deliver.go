package gateway

import (
	"context"
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery"
	"github.com/cmx-exchange/cmx/gateway/inbound"
)

// deliverer routes a verified message to its agency's webhook or pull inbox
// (inbound.Deliverer).
type deliverer struct {
	dir     *directory
	webhook *delivery.Webhook
	inbox   *delivery.Inbox
}

func (d *deliverer) Deliver(ctx context.Context, agency string, m *api.Delivery, hdr nats.Header) inbound.Outcome {
	a, ok := d.dir.agencies[agency]
	if !ok {
		return inbound.Outcome{Err: errors.New("gateway: unknown agency " + agency), Permanent: true}
	}
	if a.Webhook == "" {
		if err := d.inbox.Put(ctx, agency, m); err != nil {
			return inbound.Outcome{Err: err}
		}
		return inbound.Outcome{Pull: true}
	}
	h := http.Header{}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := hdr.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	err := d.webhook.Deliver(ctx, a.Webhook, m, h)
	if err == nil {
		return inbound.Outcome{}
	}
	out := inbound.Outcome{Err: err, Permanent: errors.Is(err, delivery.ErrPermanent)}
	var f *delivery.Failure
	if errors.As(err, &f) {
		out.RetryAfter = f.RetryAfter
	}
	return out
}
