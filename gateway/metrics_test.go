package gateway_test

// What operators scrape and poll: GET /metrics (Prometheus text format,
// names and help texts that pass promlint) and GET /v1/peers, on two real
// gateways after real traffic, with the link up and cut.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// scrape reads side's /metrics (no credentials: it is mounted without
// authentication) and returns the raw exposition and its parsed families.
func scrape(t *testing.T, s *pair.Side) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%s GET /metrics: %s %q", s.Party, resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s /metrics does not parse: %v", s.Party, err)
	}
	return body, fams
}

// value is the value of the series of family name with exactly labels (a
// histogram's sample count), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// series is one expected series value.
type series struct {
	name   string
	labels map[string]string
	want   float64
}

// unmet lists the series of want that fams does not show.
func unmet(fams map[string]*dto.MetricFamily, want []series) []string {
	var out []string
	for _, s := range want {
		if got, ok := value(fams, s.name, s.labels); !ok || got != s.want {
			out = append(out, fmt.Sprintf("%s%v = %v (present %v), want %v", s.name, s.labels, got, ok, s.want))
		}
	}
	return out
}

// waitSeries scrapes side until every expected series shows, and returns
// the last scrape.
func waitSeries(t *testing.T, s *pair.Side, want []series) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, fams := scrape(t, s)
		gap := unmet(fams, want)
		if len(gap) == 0 {
			return body, fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /metrics:\n%s", s.Party, strings.Join(gap, "\n"))
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// lintCmx runs promlint over an exposition: no problem is allowed for our
// cmx_* metrics; problems of the Go, process and HTTP instrumentation
// libraries are logged, not ours to fix.
func lintCmx(t *testing.T, party string, body []byte, fams map[string]*dto.MetricFamily) {
	t.Helper()
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("%s promlint: %v", party, err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "cmx_") {
			t.Errorf("%s promlint: %s: %s", party, p.Metric, p.Text)
		} else {
			t.Logf("%s promlint (library metric): %s: %s", party, p.Metric, p.Text)
		}
	}
	kinds := map[string]dto.MetricType{
		"cmx_messages_total": dto.MetricType_COUNTER, "cmx_rejections_total": dto.MetricType_COUNTER,
		"cmx_webhook_attempts_total": dto.MetricType_COUNTER, "cmx_ingress_duration_seconds": dto.MetricType_HISTOGRAM,
		"cmx_roundtrip_duration_seconds": dto.MetricType_HISTOGRAM, "cmx_link_up": dto.MetricType_GAUGE,
		"cmx_outbox_backlog": dto.MetricType_GAUGE, "cmx_outbox_oldest_age_seconds": dto.MetricType_GAUGE,
		"cmx_receipt_lag_seconds": dto.MetricType_GAUGE,
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "cmx_") {
			continue
		}
		if want, ok := kinds[name]; !ok || f.GetType() != want || f.GetHelp() == "" {
			t.Errorf("%s: %s %s %q: not a documented cmx metric of that type with help", party, name, f.GetType(), f.GetHelp())
		}
	}
}

func TestMetricsAfterTraffic(t *testing.T) {
	x := startTel(t, telOptions{})
	var us, jp []series
	for _, typ := range envelope.Types {
		m := x.sendAndWait("US", typ)
		ty := string(m.Type)
		us = append(us,
			series{"cmx_messages_total", lbl("direction", "outbound", "status", "delivered", "type", ty), 1},
			series{"cmx_roundtrip_duration_seconds", lbl("status", "delivered", "type", ty), 1},
			series{"cmx_roundtrip_duration_seconds", lbl("status", "received", "type", ty), 1})
		jp = append(jp,
			series{"cmx_messages_total", lbl("direction", "inbound", "status", "delivered", "type", ty), 1},
			series{"cmx_webhook_attempts_total", lbl("agency", pair.AgencyFor("JP", typ), "outcome", "delivered"), 1})
	}
	labor := string(envelope.LaborEnforcementNotice)
	x.sendRejected(envelope.LaborEnforcementNotice, "JP:NOBODY", "unknown_recipient")
	us = append(us,
		series{"cmx_messages_total", lbl("direction", "outbound", "status", "accepted", "type", labor), 2},
		series{"cmx_messages_total", lbl("direction", "outbound", "status", "rejected", "type", labor), 1},
		series{"cmx_rejections_total", lbl("direction", "outbound", "reason", "unknown_recipient"), 1},
		series{"cmx_roundtrip_duration_seconds", lbl("status", "rejected", "type", labor), 1},
		series{"cmx_ingress_duration_seconds", lbl("type", labor), 2},
		series{"cmx_ingress_duration_seconds", lbl("type", string(envelope.NonMarketPracticeReport)), 1},
		series{"cmx_link_up", lbl("peer", "JP"), 1},
		series{"cmx_outbox_backlog", lbl("peer", "JP"), 0},
		series{"cmx_receipt_lag_seconds", lbl("peer", "JP"), 0})
	jp = append(jp,
		series{"cmx_messages_total", lbl("direction", "inbound", "status", "rejected", "type", labor), 1},
		series{"cmx_rejections_total", lbl("direction", "inbound", "reason", "unknown_recipient"), 1},
		series{"cmx_link_up", lbl("peer", "US"), 1},
		series{"cmx_outbox_backlog", lbl("peer", "US"), 0})
	body, fams := waitSeries(t, x.US, us)
	lintCmx(t, "US", body, fams)
	body, fams = waitSeries(t, x.JP, jp)
	lintCmx(t, "JP", body, fams)
}

// sendRejected submits the example of typ from US to recipient and waits
// for JP's signed rejection with reason.
func (x *telStack) sendRejected(typ envelope.Type, recipient, reason string) *pair.Sent {
	x.t.Helper()
	agency := pair.AgencyFor("US", typ)
	req := &api.SubmitRequest{Type: string(typ), To: "JP", Recipient: recipient, Body: envelope.Example(typ)}
	resp, err := x.US.Client(agency).Submit(x.ctx, req, "")
	if err != nil {
		x.t.Fatal(err)
	}
	m := &pair.Sent{ID: resp.ID, From: "US", To: "JP", Agency: agency, Type: typ}
	got := x.waitStatus(m, api.StatusRejected)
	if r := got.Timeline[len(got.Timeline)-1]; r.Reason != reason {
		x.t.Fatalf("%s rejected for %q, want %s", m.ID, r.Reason, reason)
	}
	return m
}

// peer reads GET /v1/peers at US as an operator.
func (x *telStack) peer() api.PeerStatus {
	x.t.Helper()
	ps, err := x.US.Client("OPS").Peers(x.ctx)
	if err != nil {
		x.t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Party != "JP" {
		x.t.Fatalf("GET /v1/peers: %+v, want JP only", ps)
	}
	return ps[0]
}

func TestPeersAndGaugesShowLinkBacklogAndReceiptLag(t *testing.T) {
	x := startTel(t, telOptions{proxy: true})
	before := time.Now()
	x.sendAndWait("US", envelope.LaborEnforcementNotice)
	p := x.peer()
	if p.Link != "up" || p.Backlog != 0 || p.AwaitingReceipt != 0 || p.ReceiptLagSecs != 0 ||
		p.LastReceiptAt == nil || p.LastReceiptAt.Before(before.Add(-time.Second)) {
		t.Fatalf("after a delivered message: %+v", p)
	}

	x.Proxy.Cut()
	m, err := x.Send(x.ctx, "US", envelope.NonMarketPracticeReport, "")
	if err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 15*time.Second, func() bool {
		p = x.peer()
		return p.Link == "down" && p.Backlog >= 1 && p.OldestAgeSecs > 0 && p.AwaitingReceipt == 1 && p.ReceiptLagSecs > 0
	}, "GET /v1/peers shows the cut link, the backlog and the receipt lag")
	_, fams := scrape(t, x.US)
	for _, s := range []struct {
		name string
		ok   func(float64) bool
	}{
		{"cmx_link_up", func(v float64) bool { return v == 0 }},
		{"cmx_outbox_backlog", func(v float64) bool { return v >= 1 }},
		{"cmx_outbox_oldest_age_seconds", func(v float64) bool { return v > 0 }},
		{"cmx_receipt_lag_seconds", func(v float64) bool { return v > 0 }},
	} {
		if v, ok := value(fams, s.name, lbl("peer", "JP")); !ok || !s.ok(v) {
			t.Errorf("link cut: %s{peer=JP} = %v (present %v)", s.name, v, ok)
		}
	}

	x.Proxy.Restore()
	x.waitStatus(m, api.StatusDelivered)
	transporttest.WaitFor(t, 15*time.Second, func() bool {
		p = x.peer()
		return p.Link == "up" && p.Backlog == 0 && p.AwaitingReceipt == 0 && p.ReceiptLagSecs == 0
	}, "GET /v1/peers recovers once the link is back")
}
