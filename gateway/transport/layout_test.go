package transport_test

import (
	"errors"
	"testing"

	"github.com/cmx-exchange/cmx/gateway/transport"
)

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{transport.OutMsgSubject("JP", "labor_enforcement_notice"), "cmx.out.jp.msg.labor_enforcement_notice"},
		{transport.OutRcptSubject("JP"), "cmx.out.jp.rcpt"},
		{transport.XMsgSubject("US", "JP", "non_market_practice_report"), "cmx.x.us.jp.msg.non_market_practice_report"},
		{transport.XRcptSubject("JP", "US"), "cmx.x.jp.us.rcpt"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestParseXSubject(t *testing.T) {
	for _, c := range []struct {
		subj                    string
		from, to, kind, msgType string
		wantErr                 bool
	}{
		{subj: "cmx.x.us.jp.msg.labor_enforcement_notice", from: "us", to: "jp", kind: "msg", msgType: "labor_enforcement_notice"},
		{subj: "cmx.x.jp.us.rcpt", from: "jp", to: "us", kind: "rcpt"},
		{subj: "cmx.x.us.jp.rcpt.extra", wantErr: true},
		{subj: "cmx.x.us.jp.msg", wantErr: true},
		{subj: "cmx.x.us.jp.msg.a.b", wantErr: true},
		{subj: "cmx.x.us.jp.msg.", wantErr: true},
		{subj: "cmx.x.us.jp.msg.Labor", wantErr: true},
		{subj: "cmx.x.US.jp.rcpt", wantErr: true},
		{subj: "cmx.x.us.us.rcpt", wantErr: true},
		{subj: "cmx.x.usa.jp.rcpt", wantErr: true},
		{subj: "cmx.x.*.jp.rcpt", wantErr: true},
		{subj: "cmx.x.us.jp.>", wantErr: true},
		{subj: "cmx.out.jp.rcpt", wantErr: true},
		{subj: "cmx.x.us.jp.ckpt", wantErr: true},
		{subj: "", wantErr: true},
	} {
		t.Run(c.subj, func(t *testing.T) {
			from, to, kind, msgType, err := transport.ParseXSubject(c.subj)
			if c.wantErr {
				if !errors.Is(err, transport.ErrSubject) {
					t.Fatalf("err = %v, want ErrSubject", err)
				}
				return
			}
			if err != nil || from != c.from || to != c.to || kind != c.kind || msgType != c.msgType {
				t.Fatalf("= %q %q %q %q %v", from, to, kind, msgType, err)
			}
		})
	}
}

// FuzzParseXSubject: whatever parses rebuilds to exactly the input.
func FuzzParseXSubject(f *testing.F) {
	for _, s := range []string{"cmx.x.us.jp.msg.t", "cmx.x.jp.us.rcpt", "cmx.x.us.jp.msg.a.b", "cmx.x..jp.rcpt", "cmx.x.us.jp.rcpt\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subj string) {
		from, to, kind, msgType, err := transport.ParseXSubject(subj)
		if err != nil {
			return
		}
		var rebuilt string
		if kind == transport.KindRcpt {
			rebuilt = transport.XRcptSubject(from, to)
		} else {
			rebuilt = transport.XMsgSubject(from, to, msgType)
		}
		if rebuilt != subj {
			t.Fatalf("ParseXSubject(%q) rebuilds to %q", subj, rebuilt)
		}
	})
}
