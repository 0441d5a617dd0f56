package gateway

import (
	"strings"
	"testing"
)

// TestConfigValidateMemory: limits.memory_bytes is -1 (no limit), 0 (the
// default) or a limit of at least 32 MiB; anything else is a config error.
func TestConfigValidateMemory(t *testing.T) {
	tests := []struct {
		name    string
		memory  int64
		wantErr bool
	}{
		{name: "default", memory: 0},
		{name: "no limit", memory: -1},
		{name: "256 MiB", memory: 256 << 20},
		{name: "smallest", memory: 32 << 20},
		{name: "too small", memory: 32<<20 - 1, wantErr: true},
		{name: "one byte", memory: 1, wantErr: true},
		{name: "other negative", memory: -2, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{
				Party: "JP", Signing: KeyFiles{Cert: "s.pem", Key: "s.key"}, Encryption: []KeyFiles{{Cert: "e.pem", Key: "e.key"}},
				Peer:     PeerConfig{Party: "US", Trust: "us-roots.pem", Encryption: "us-enc.pem"},
				Agencies: []AgencyConfig{{ID: "METI", Token: strings.Repeat("t", 32), Receive: []string{"non_market_practice_report"}}},
				NATS:     NATSConfig{Embedded: EmbeddedNATS{StoreDir: "store"}},
				Limits:   LimitsConfig{MemoryBytes: tc.memory},
			}
			err := cfg.Validate()
			if got := err != nil && strings.Contains(err.Error(), "limits.memory_bytes"); got != tc.wantErr {
				t.Fatalf("Validate() = %v; want a limits.memory_bytes error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}
