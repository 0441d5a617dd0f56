package transport

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// An outbox message item carries, after the envelope, the inner signed
// message as evidence for our own auditors (the envelope is encrypted to
// the peer): data = envelope || inner JWS, and HeaderEnvelopeLength says
// where the envelope ends. Only the envelope is ever forwarded. (A header
// cannot hold the JWS: JetStream caps headers at 64 KiB.)
const HeaderEnvelopeLength = "Cmx-Envelope-Length"

// SplitOutboxItem returns the envelope and the inner JWS of an outbox item
// (jws is nil for items without the header, e.g. receipts).
func SplitOutboxItem(hdr map[string][]string, data []byte) (env, jws []byte, err error) {
	v := hdr[HeaderEnvelopeLength]
	if len(v) == 0 {
		return data, nil, nil
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n <= 0 || n > len(data) {
		return nil, nil, fmt.Errorf("transport: outbox item with a bad %s %q", HeaderEnvelopeLength, v[0])
	}
	return data[:n], data[n:], nil
}

// Names of the streams and KV buckets (DESIGN §5, a contract for operators).
const (
	StreamOut   = "CMX_OUT"   // outbox towards the peer, on the sending side
	StreamIn    = "CMX_IN"    // inbound from the peer, on the receiving side
	StreamAudit = "CMX_AUDIT" // the audit log's leaves, in order

	BucketStatus   = "cmx_status"   // message status
	BucketSeen     = "cmx_seen"     // inbound dedup claims, kept for the outage budget plus a day
	BucketIdem     = "cmx_idem"     // ingress Idempotency-Key records, 24 h
	BucketReceipts = "cmx_receipts" // stored receipt bytes
	BucketInbox    = "cmx_inbox"    // pull-delivery inbox entries
)

// Defaults of LayoutConfig.
const (
	DefaultOutageBudget    = 7 * 24 * time.Hour
	DefaultMaxStreamBytes  = int64(1 << 30)
	DefaultMaxMsgSize      = int32(4 << 20)
	DefaultDuplicateWindow = 10 * time.Minute
	IdemTTL                = 24 * time.Hour
)

// Subject prefixes. Everything the gateway publishes lives under "cmx.".
const (
	outPrefix     = "cmx.out."
	xPrefix       = "cmx.x."
	auditSubjects = "cmx.audit.>"
	KindMsg       = "msg"
	KindRcpt      = "rcpt"
)

// ErrSubject reports a subject that is not a well-formed exchange subject.
var ErrSubject = errors.New("transport: malformed exchange subject")

var (
	partyTokenRE = regexp.MustCompile(`^[a-z]{2}$`)
	typeTokenRE  = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

// token is the subject form of a party code: "US" → "us".
func token(party string) string { return strings.ToLower(party) }

// OutMsgSubject is the outbox subject of a message for peer:
// cmx.out.<peer>.msg.<type>.
func OutMsgSubject(peer, msgType string) string {
	return outPrefix + token(peer) + "." + KindMsg + "." + msgType
}

// OutRcptSubject is the outbox subject of a receipt for peer: cmx.out.<peer>.rcpt.
func OutRcptSubject(peer string) string { return outPrefix + token(peer) + "." + KindRcpt }

// XMsgSubject is the border subject of a message from → to:
// cmx.x.<from>.<to>.msg.<type>. It is stored by to's CMX_IN.
func XMsgSubject(from, to, msgType string) string {
	return xPrefix + token(from) + "." + token(to) + "." + KindMsg + "." + msgType
}

// XRcptSubject is the border subject of a receipt from → to: cmx.x.<from>.<to>.rcpt.
func XRcptSubject(from, to string) string {
	return xPrefix + token(from) + "." + token(to) + "." + KindRcpt
}

// ParseXSubject splits a border subject. It accepts exactly
// cmx.x.<from>.<to>.msg.<type> and cmx.x.<from>.<to>.rcpt with lower-case
// two-letter party tokens, from != to, and a type of [a-z0-9_]{1,64};
// anything else is ErrSubject. The result is a routing hint only: the
// receiver trusts the signed claims and rejects any disagreement.
func ParseXSubject(subj string) (from, to, kind, msgType string, err error) {
	t := strings.Split(subj, ".")
	bad := func(why string) (string, string, string, string, error) {
		return "", "", "", "", fmt.Errorf("%w: %q: %s", ErrSubject, subj, why)
	}
	if len(t) < 5 || t[0] != "cmx" || t[1] != "x" {
		return bad("not cmx.x.<from>.<to>.<kind>")
	}
	from, to, kind = t[2], t[3], t[4]
	if !partyTokenRE.MatchString(from) || !partyTokenRE.MatchString(to) {
		return bad("party tokens must be two lower-case letters")
	}
	if from == to {
		return bad("sender and receiver are the same party")
	}
	switch {
	case kind == KindRcpt && len(t) == 5:
		return from, to, kind, "", nil
	case kind == KindMsg && len(t) == 6:
		if !typeTokenRE.MatchString(t[5]) {
			return bad("message type must match [a-z0-9_]{1,64}")
		}
		return from, to, kind, t[5], nil
	default:
		return bad("want <from>.<to>.msg.<type> or <from>.<to>.rcpt")
	}
}

// LayoutConfig describes one side's streams and buckets. Zero values have
// the meanings given per field.
type LayoutConfig struct {
	Party, Peer     string        // party codes, e.g. "US" and "JP"; required, different
	OutageBudget    time.Duration // 0 = 7 days: MaxAge of CMX_OUT and CMX_IN; cmx_seen keeps it plus a day
	MaxOutBytes     int64         // 0 = 1 GiB: MaxBytes of CMX_OUT (Discard New: full means back-pressure)
	MaxInBytes      int64         // 0 = 1 GiB: MaxBytes of CMX_IN
	MaxMsgSize      int32         // 0 = 4 MiB: MaxMsgSize of CMX_OUT and CMX_IN
	Replicas        int           // 0 = 1; 3 in a production cluster
	DuplicateWindow time.Duration // 0 = 10 min: JetStream Msg-Id dedup of publisher and forwarder retries
}

// withDefaults returns cfg with zero values replaced by their defaults.
func (cfg LayoutConfig) withDefaults() LayoutConfig {
	if cfg.OutageBudget == 0 {
		cfg.OutageBudget = DefaultOutageBudget
	}
	if cfg.MaxOutBytes == 0 {
		cfg.MaxOutBytes = DefaultMaxStreamBytes
	}
	if cfg.MaxInBytes == 0 {
		cfg.MaxInBytes = DefaultMaxStreamBytes
	}
	if cfg.MaxMsgSize == 0 {
		cfg.MaxMsgSize = DefaultMaxMsgSize
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	return cfg
}

// Validate reports every problem of cfg at once.
func (cfg LayoutConfig) Validate() error {
	var errs []error
	errs = append(errs, validateParties(cfg.Party, cfg.Peer)...)
	d := cfg.withDefaults()
	if d.OutageBudget < 0 || d.DuplicateWindow < 0 {
		errs = append(errs, errors.New("transport: negative outage budget or duplicate window"))
	}
	if d.DuplicateWindow > d.OutageBudget {
		errs = append(errs, errors.New("transport: duplicate window longer than the outage budget"))
	}
	if d.MaxOutBytes < 0 || d.MaxInBytes < 0 || d.MaxMsgSize < 0 {
		errs = append(errs, errors.New("transport: negative stream size limit"))
	}
	if d.Replicas < 1 || d.Replicas > 5 {
		errs = append(errs, fmt.Errorf("transport: replicas %d not in 1..5", d.Replicas))
	}
	return errors.Join(errs...)
}

// validateParties checks two party codes as used in subjects.
func validateParties(party, peer string) []error {
	var errs []error
	for _, p := range []struct{ name, v string }{{"party", party}, {"peer", peer}} {
		if !partyTokenRE.MatchString(token(p.v)) {
			errs = append(errs, fmt.Errorf("transport: %s %q is not a two-letter party code", p.name, p.v))
		}
	}
	if party != "" && token(party) == token(peer) {
		errs = append(errs, fmt.Errorf("transport: party and peer are both %q", party))
	}
	return errs
}
