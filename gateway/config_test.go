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

// TestConfigValidateListen: without TLS the API may listen on loopback only,
// so bearer tokens never cross a network in clear.
func TestConfigValidateListen(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		tls     bool
		wantErr bool
	}{
		{name: "default", listen: ""},
		{name: "ipv4 loopback", listen: "127.0.0.1:8443"},
		{name: "ipv6 loopback", listen: "[::1]:8443"},
		{name: "localhost", listen: "localhost:0"},
		{name: "all interfaces in clear", listen: "0.0.0.0:8443", wantErr: true},
		{name: "a LAN address in clear", listen: "10.1.2.3:8443", wantErr: true},
		{name: "all interfaces with tls", listen: "0.0.0.0:8443", tls: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{
				Party: "JP", Listen: tc.listen, Signing: KeyFiles{Cert: "s.pem", Key: "s.key"}, Encryption: []KeyFiles{{Cert: "e.pem", Key: "e.key"}},
				Peer:     PeerConfig{Party: "US", Trust: "us-roots.pem", Encryption: "us-enc.pem"},
				Agencies: []AgencyConfig{{ID: "METI", Token: strings.Repeat("t", 32), Receive: []string{"non_market_practice_report"}}},
				NATS:     NATSConfig{Embedded: EmbeddedNATS{StoreDir: "store"}},
			}
			if tc.tls {
				cfg.TLS = TLSFiles{Cert: "tls.pem", Key: "tls.key"}
			}
			err := cfg.Validate()
			if got := err != nil && strings.Contains(err.Error(), "listen:"); got != tc.wantErr {
				t.Fatalf("Validate() = %v; want a listen error: %v", err, tc.wantErr)
			}
		})
	}
}
