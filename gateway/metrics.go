package gateway

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
)

// meterName names the gateway's meter after its import path.
const meterName = "github.com/cmx-exchange/cmx/gateway"

// Attribute keys of the gateway's metrics, declared once.
var (
	attrDirection = attribute.Key("direction")
	attrType      = attribute.Key("type")
	attrStatus    = attribute.Key("status")
	attrReason    = attribute.Key("reason")
	attrAgency    = attribute.Key("agency")
	attrOutcome   = attribute.Key("outcome")
	attrPeer      = attribute.Key("peer")
)

// instruments are the gateway's metrics (Prometheus names after export in
// comments). Every status change of every message is counted where it is
// recorded, in the ledger, so no stage can forget one.
type instruments struct {
	messages   metric.Int64Counter     // cmx_messages_total{direction,type,status}
	rejections metric.Int64Counter     // cmx_rejections_total{direction,reason}
	roundTrip  metric.Float64Histogram // cmx_roundtrip_duration_seconds{type,status}: accepted → receipt verified
	ingress    metric.Float64Histogram // cmx_ingress_duration_seconds{type}: submit → 202
	webhooks   metric.Int64Counter     // cmx_webhook_attempts_total{agency,outcome}
}

var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

func newInstruments(mp metric.MeterProvider) (*instruments, error) {
	m := mp.Meter(meterName)
	var in instruments
	var err error
	if in.messages, err = m.Int64Counter("cmx.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Message status changes, by direction, type and status.")); err != nil {
		return nil, err
	}
	if in.rejections, err = m.Int64Counter("cmx.rejections", metric.WithUnit("{message}"),
		metric.WithDescription("Signed rejections, issued (inbound) or received (outbound), by reason code.")); err != nil {
		return nil, err
	}
	if in.roundTrip, err = m.Float64Histogram("cmx.roundtrip.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from acceptance of a sent message to each verified peer receipt."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, err
	}
	if in.ingress, err = m.Float64Histogram("cmx.ingress.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to seal and durably store a submitted message (the 202)."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, err
	}
	if in.webhooks, err = m.Int64Counter("cmx.webhook.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Deliveries to agencies by webhook call or pull inbox, by outcome.")); err != nil {
		return nil, err
	}
	return &in, nil
}

// onEvent is the ledger hook: one count per status change.
func (in *instruments) onEvent(ctx context.Context, r *ledger.Record, e api.Event) {
	in.messages.Add(ctx, 1, metric.WithAttributes(attrDirection.String(r.Direction), attrType.String(r.Type), attrStatus.String(e.Status)))
	if e.Status == api.StatusRejected {
		in.rejections.Add(ctx, 1, metric.WithAttributes(attrDirection.String(r.Direction), attrReason.String(e.Reason)))
	}
	if r.Direction != api.Outbound {
		return
	}
	switch e.Status {
	case api.StatusReceived, api.StatusDelivered, api.StatusRejected:
		for _, a := range r.Timeline {
			if a.Status == api.StatusAccepted {
				in.roundTrip.Record(ctx, time.Since(a.At).Seconds(), metric.WithAttributes(attrType.String(r.Type), attrStatus.String(e.Status)))
			}
		}
	}
}

// onSentEvent is the outbound ledger's hook: metrics, and the time of the
// last receipt accepted from the peer.
func (n *Node) onSentEvent(ctx context.Context, r *ledger.Record, e api.Event) {
	n.metrics.onEvent(ctx, r, e)
	switch e.Status {
	case api.StatusReceived, api.StatusDelivered, api.StatusRejected:
		n.lastReceipt.Store(n.now().UnixNano())
	}
}

// observeLink registers the gauges read at scrape time: leafnode state,
// outbox backlog and receipt lag.
func (n *Node) observeLink(mp metric.MeterProvider) error {
	m := mp.Meter(meterName)
	// No unit: a unit of "1" would make the Prometheus name cmx_link_up_ratio.
	up, err := m.Int64ObservableGauge("cmx.link.up",
		metric.WithDescription("1 when the leafnode to the peer is connected (embedded NATS) or the last forward succeeded."))
	if err != nil {
		return err
	}
	backlog, err := m.Int64ObservableGauge("cmx.outbox.backlog", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox items (messages and receipts) not yet acknowledged by the peer."))
	if err != nil {
		return err
	}
	age, err := m.Float64ObservableGauge("cmx.outbox.oldest.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest outbox item not yet acknowledged by the peer."))
	if err != nil {
		return err
	}
	lag, err := m.Float64ObservableGauge("cmx.receipt.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest sent message still without the peer's accepted receipt; 0 when none waits."))
	if err != nil {
		return err
	}
	peer := metric.WithAttributes(attrPeer.String(n.cfg.Peer.Party))
	n.gauges, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ps, err := backend{n}.Peers(ctx)
		if err != nil || len(ps) == 0 {
			return err
		}
		v := int64(0)
		if ps[0].Link == "up" {
			v = 1
		}
		o.ObserveInt64(up, v, peer)
		o.ObserveInt64(backlog, int64(ps[0].Backlog), peer)
		o.ObserveFloat64(age, ps[0].OldestAgeSecs, peer)
		o.ObserveFloat64(lag, ps[0].ReceiptLagSecs, peer)
		return nil
	}, up, backlog, age, lag)
	return err
}

func outcomeOf(pull bool, err error, permanent bool) string {
	switch {
	case err == nil && pull:
		return "inbox"
	case err == nil:
		return "delivered"
	case permanent:
		return "permanent_failure"
	}
	return "transient_failure"
}
