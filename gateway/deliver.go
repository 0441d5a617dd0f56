package gateway

import (
	"context"
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"

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
	metrics *instruments
}

func (d *deliverer) Deliver(ctx context.Context, agency string, m *api.Delivery, hdr nats.Header) inbound.Outcome {
	out := d.deliver(ctx, agency, m, hdr)
	d.metrics.webhooks.Add(ctx, 1, metric.WithAttributes(attrAgency.String(agency), attrOutcome.String(outcomeOf(out.Pull, out.Err, out.Permanent))))
	return out
}

func (d *deliverer) deliver(ctx context.Context, agency string, m *api.Delivery, hdr nats.Header) inbound.Outcome {
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
	// The otelhttp transport injects the CLIENT span's traceparent.
	err := d.webhook.Deliver(ctx, a.Webhook, m, http.Header{})
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
