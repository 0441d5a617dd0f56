package gateway

import (
	"strings"
	"testing"
)

// TestConfigValidateWebhook: a webhook URL that delivery would refuse is a
// config error at startup (and in cmxd validate), not a signed rejection of
// every message for that agency at run time.
func TestConfigValidateWebhook(t *testing.T) {
	tests := []struct {
		name    string
		webhook string
		wantErr bool
	}{
		{name: "pull delivery", webhook: ""},
		{name: "https", webhook: "https://agency.example/cmx?token=secret"},
		{name: "http on loopback", webhook: "http://127.0.0.1:9000/hook"},
		{name: "no scheme", webhook: "agency.example/hook", wantErr: true},
		{name: "other scheme", webhook: "ftp://agency.example/hook", wantErr: true},
		{name: "no host", webhook: "https:///hook", wantErr: true},
		{name: "unparsable", webhook: "https://agency.example/%zz", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{
				Party: "JP", Signing: KeyFiles{Cert: "s.pem", Key: "s.key"}, Encryption: []KeyFiles{{Cert: "e.pem", Key: "e.key"}},
				Peer:     PeerConfig{Party: "US", Trust: "us-roots.pem", Encryption: "us-enc.pem"},
				Agencies: []AgencyConfig{{ID: "METI", Token: strings.Repeat("t", 32), Receive: []string{"non_market_practice_report"}, Webhook: tc.webhook}},
				NATS:     NATSConfig{Embedded: EmbeddedNATS{StoreDir: "store"}},
			}
			err := cfg.Validate()
			if got := err != nil && strings.Contains(err.Error(), "agencies[0].webhook"); got != tc.wantErr {
				t.Fatalf("Validate() = %v; want a webhook error: %v", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Validate() echoes the URL: %v", err)
			}
			if !tc.wantErr && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}
