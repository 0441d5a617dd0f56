package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// verifyAt is the clock of these tests: an hour after the fixtures' issue.
var verifyAt = certstest.Now.Add(time.Hour)

// verifyFixture is a US→JP exchange on disk: both roots, JP's encryption
// identity, and one message with its receipts.
type verifyFixture struct {
	dir            string
	us, jp         *certs.PKI
	usRoot, jpRoot string // paths
	jpEncKey       string
	jpEncCert      string
	usEncKey       string
	usEncCert      string
	claims         *envelope.Claims
	sealed         *envelope.Sealed
	accepted       []byte
	delivered      []byte
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	f := &verifyFixture{dir: t.TempDir(), us: certstest.NewPKI(t, "US"), jp: certstest.NewPKI(t, "JP")}
	f.usRoot = f.write(t, "us-root.pem", certs.EncodeCertificates(f.us.Root))
	f.jpRoot = f.write(t, "jp-root.pem", certs.EncodeCertificates(f.jp.Root))
	f.jpEncCert, f.jpEncKey = f.writeIdentity(t, "jp-enc", f.jp.Encryption)
	f.usEncCert, f.usEncKey = f.writeIdentity(t, "us-enc", f.us.Encryption)
	f.claims = &envelope.Claims{
		Issuer: "US", Audience: "JP", ID: envelope.NewID(),
		IssuedAt: verifyAt.Unix(), Expiry: verifyAt.Add(7 * 24 * time.Hour).Unix(),
		Type: envelope.LaborEnforcementNotice, Schema: envelope.LaborEnforcementNotice.Schema(),
		Sender: "US:DOL-ILAB", Recipient: "JP:MHLW", Marking: "TLP:AMBER",
		Body: envelope.Example(envelope.LaborEnforcementNotice),
	}
	var err error
	if f.sealed, err = envelope.Seal(f.claims, f.us.Signing, f.jp.Encryption.Cert); err != nil {
		t.Fatal(err)
	}
	f.accepted = f.receipt(t, f.jp.Signing, envelope.StatusAccepted, f.claims.ID, f.sealed.EnvSHA256)
	f.delivered = f.receipt(t, f.jp.Signing, envelope.StatusDelivered, f.claims.ID, f.sealed.EnvSHA256)
	return f
}

func (f *verifyFixture) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *verifyFixture) writeIdentity(t *testing.T, name string, id *certs.Identity) (cert, key string) {
	t.Helper()
	k, err := certs.EncodePrivateKey(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return f.write(t, name+".pem", certs.EncodeCertificates(id.Chain...)), f.write(t, name+".key", k)
}

// receipt issues a receipt about msg, signed by signer (issuer: its party).
func (f *verifyFixture) receipt(t *testing.T, signer *certs.Identity, status envelope.Status, msg, envSHA string) []byte {
	t.Helper()
	r := &envelope.Receipt{
		Issuer: signer.Party, Audience: "US", IssuedAt: verifyAt.Unix(), Msg: msg, Status: status,
		EnvSHA256: envSHA, MsgSHA256: f.sealed.MsgSHA256,
	}
	if signer.Party == "US" {
		r.Audience = "JP"
	}
	switch status {
	case envelope.StatusDelivered:
		r.Recipient, r.DeliveredAt = signer.Party+":MHLW", verifyAt.Unix()
	case envelope.StatusRejected:
		r.Reason = envelope.ReasonPolicyDenied
	}
	tok, err := envelope.IssueReceipt(r, signer)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// runVerifyAt runs "cmx verify" with the clock at now and stdin as given.
func runVerifyAt(t *testing.T, now time.Time, stdin []byte, args ...string) (string, error) {
	t.Helper()
	oldNow, oldStdin := verifyNow, verifyStdin
	verifyNow = func() time.Time { return now }
	verifyStdin = bytes.NewReader(stdin)
	t.Cleanup(func() { verifyNow, verifyStdin = oldNow, oldStdin })
	var stdout, stderr bytes.Buffer
	err := runVerify(context.Background(), args, &stdout, &stderr)
	return stdout.String(), err
}

// segments returns the compact segments of tok, and join puts them back.
func segments(tok []byte) []string { return strings.Split(string(tok), ".") }
func join(segs []string) []byte    { return []byte(strings.Join(segs, ".")) }

// tamper changes one base64url character in the middle of the payload.
func tamper(tok []byte) []byte {
	segs := segments(tok)
	p := []byte(segs[1])
	i := len(p) / 2
	if p[i] == 'A' {
		p[i] = 'B'
	} else {
		p[i] = 'A'
	}
	segs[1] = string(p)
	return join(segs)
}

// prettyPayload re-encodes the payload as indented JSON: the same claims,
// other bytes (catalogue R-10).
func prettyPayload(t *testing.T, tok []byte) []byte {
	t.Helper()
	segs := segments(tok)
	raw, err := base64.RawURLEncoding.DecodeString(segs[1])
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	segs[1] = base64.RawURLEncoding.EncodeToString(buf.Bytes())
	return join(segs)
}

// verifyCase is one "cmx verify" run and what it must print.
type verifyCase struct {
	name  string
	input []byte // written to FILE; nil = the fixture's default
	args  func(file string) []string
	now   time.Time // zero = verifyAt
	want  error     // nil or errNotValid
	first string    // the first line of output starts with this
	has   string    // and the output contains this ("" = no check)
}

func runVerifyCases(t *testing.T, f *verifyFixture, def []byte, tests []verifyCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := tt.input
			if input == nil {
				input = def
			}
			file := f.write(t, strings.ReplaceAll(t.Name(), "/", "_")+".in", input)
			now := tt.now
			if now.IsZero() {
				now = verifyAt
			}
			out, err := runVerifyAt(t, now, input, tt.args(file)...)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("runVerify = %v, want %v\n%s", err, tt.want, out)
			}
			if !strings.HasPrefix(out, tt.first) {
				t.Errorf("output starts %q, want %q\n%s", firstLine(out), tt.first, out)
			}
			if !strings.Contains(out, tt.has) {
				t.Errorf("output lacks %q\n%s", tt.has, out)
			}
		})
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func TestVerifyReceipt(t *testing.T) {
	f := newVerifyFixture(t)
	id := f.claims.ID
	rcpt := func(extra ...string) func(string) []string {
		return func(file string) []string { return append([]string{"receipt", file}, extra...) }
	}
	later := verifyAt.Add(2 * 365 * 24 * time.Hour) // the JP signing certificate has expired
	tests := []verifyCase{
		{name: "valid", args: rcpt("--trust", f.jpRoot, "--party", "JP", "--aud", "US"),
			first: "VALID receipt " + id + ".delivered: delivered of message " + id + " issued by JP to US at " + stamp(verifyAt) + "; signer ",
			has:   "delivered to JP:MHLW at"},
		{name: "valid_party_from_signer", args: rcpt("--trust", f.jpRoot), first: "VALID receipt " + id + ".delivered:"},
		{name: "valid_labelled_trust_stdin", args: func(string) []string { return []string{"receipt", "-", "--trust", "JP=" + f.jpRoot} },
			first: "VALID receipt"},
		{name: "whitespace_around", input: append(append([]byte("\n  "), f.delivered...), "\r\n"...),
			args: rcpt("--trust", f.jpRoot), first: "VALID receipt"},
		{name: "flags_first", args: func(file string) []string { return []string{"receipt", "--trust", f.jpRoot, "--", file} },
			first: "VALID receipt"},
		{name: "R-10_tampered_byte", input: tamper(f.delivered), args: rcpt("--trust", f.jpRoot, "--party", "JP"),
			want: errNotValid, first: "INVALID: signature_invalid: "},
		{name: "R-10_pretty_printed_payload", input: prettyPayload(t, f.delivered), args: rcpt("--trust", f.jpRoot, "--party", "JP"),
			want: errNotValid, first: "INVALID: signature_invalid: "},
		{name: "R-10_line_wrapped", input: append(append(append([]byte{}, f.delivered[:40]...), '\n'), f.delivered[40:]...),
			args: rcpt("--trust", f.jpRoot), want: errNotValid, first: "INVALID: malformed: "},
		{name: "R-09_other_partys_root", args: rcpt("--trust", f.usRoot, "--party", "JP"),
			want: errNotValid, first: "INVALID: untrusted_signer: ", has: "no path to a pinned root"},
		{name: "R-09_other_partys_root_inferred", args: rcpt("--trust", f.usRoot),
			want: errNotValid, first: "INVALID: untrusted_signer: "},
		{name: "R-09_no_root_for_party", args: rcpt("--trust", "US="+f.usRoot),
			want: errNotValid, first: "INVALID: untrusted_signer: no --trust root for party JP"},
		{name: "R-03_wrong_party", args: rcpt("--trust", f.jpRoot, "--party", "US"),
			want: errNotValid, first: "INVALID: untrusted_signer: "},
		{name: "aud_mismatch", args: rcpt("--trust", f.jpRoot, "--aud", "JP"),
			want: errNotValid, first: "INVALID: claims_invalid: "},
		{name: "R-04_message_as_receipt", input: f.sealed.Inner, args: rcpt("--trust", f.usRoot),
			want: errNotValid, first: "INVALID: malformed: "},
		{name: "R-08_signer_expired_since", now: later, args: rcpt("--trust", f.jpRoot),
			want: errNotValid, first: "INDETERMINATE: needs_trusted_time: ", has: "it verifies at its own iat " + stamp(verifyAt)},
		{name: "R-08_trusted_time_given", now: later, args: rcpt("--trust", f.jpRoot, "--at", stamp(verifyAt.Add(time.Minute))),
			first: "VALID receipt", has: "verified at " + stamp(verifyAt.Add(time.Minute))},
		{name: "R-08_given_time_outside_validity", args: rcpt("--trust", f.jpRoot, "--at", stamp(later)),
			want: errNotValid, first: "INVALID: untrusted_signer: "},
	}
	runVerifyCases(t, f, f.delivered, tests)
}

func TestVerifyMessage(t *testing.T) {
	f := newVerifyFixture(t)
	msg := func(extra ...string) func(string) []string {
		return func(file string) []string { return append([]string{"message", file}, extra...) }
	}
	tests := []verifyCase{
		{name: "valid", args: msg("--trust", f.usRoot, "--party", "US", "--aud", "JP"),
			first: "VALID message " + f.claims.ID + ": labor_enforcement_notice from US:DOL-ILAB to JP:MHLW issued at " + stamp(verifyAt),
			has:   "msg_sha256 " + f.sealed.MsgSHA256},
		{name: "body_on_request", args: msg("--trust", f.usRoot, "--body"), first: "VALID message", has: "body {"},
		{name: "R-10_tampered_byte", input: tamper(f.sealed.Inner), args: msg("--trust", f.usRoot),
			want: errNotValid, first: "INVALID: signature_invalid: "},
		{name: "R-09_other_partys_root", args: msg("--trust", f.jpRoot, "--party", "US"),
			want: errNotValid, first: "INVALID: untrusted_signer: "},
		{name: "J-22_other_audience", args: msg("--trust", f.usRoot, "--aud", "GB"),
			want: errNotValid, first: "INVALID: claims_invalid: "},
		{name: "expired_since", now: verifyAt.Add(9 * 24 * time.Hour), args: msg("--trust", f.usRoot),
			want: errNotValid, first: "INDETERMINATE: needs_trusted_time: "},
		{name: "expired_at_given_time", args: msg("--trust", f.usRoot, "--at", stamp(verifyAt.Add(9*24*time.Hour))),
			want: errNotValid, first: "INVALID: expired: "},
	}
	runVerifyCases(t, f, f.sealed.Inner, tests)
	if got := strings.Count(string(f.sealed.Inner), "."); got != 2 {
		t.Fatalf("fixture message has %d dots", got)
	}
}

func TestVerifyEnvelope(t *testing.T) {
	f := newVerifyFixture(t)
	env := func(key, cert string, extra ...string) func(string) []string {
		return func(file string) []string {
			return append([]string{"envelope", file, "--trust", f.usRoot, "--party", "US", "--key", key, "--cert", cert}, extra...)
		}
	}
	tests := []verifyCase{
		{name: "valid", args: env(f.jpEncKey, f.jpEncCert),
			first: "VALID message " + f.claims.ID + ": labor_enforcement_notice from US:DOL-ILAB to JP:MHLW",
			has:   "env_sha256 " + f.sealed.EnvSHA256},
		{name: "valid_self_given", args: env(f.jpEncKey, f.jpEncCert, "--self", "JP", "--body"), first: "VALID message", has: "body {"},
		{name: "not_our_key", args: env(f.usEncKey, f.usEncCert),
			want: errNotValid, first: "INVALID: decrypt_failed: "},
		{name: "J-17_tampered_ciphertext", input: tamperSegment(f.sealed.Envelope, 3), args: env(f.jpEncKey, f.jpEncCert),
			want: errNotValid, first: "INVALID: decrypt_failed: "},
		{name: "expired_since", now: verifyAt.Add(9 * 24 * time.Hour), args: env(f.jpEncKey, f.jpEncCert),
			want: errNotValid, first: "INDETERMINATE: needs_trusted_time: ", has: "its own iat " + stamp(verifyAt)},
	}
	runVerifyCases(t, f, f.sealed.Envelope, tests)
}

// tamperSegment flips one character in the middle of segment i.
func tamperSegment(tok []byte, i int) []byte {
	segs := segments(tok)
	s := []byte(segs[i])
	j := len(s) / 2
	s[j] ^= 'A' ^ 'B' // 'A'<->'B', 'a'<->'b', ... stays in the alphabet for letters
	if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", rune(s[j])) {
		s[j] = 'Q'
	}
	segs[i] = string(s)
	return join(segs)
}

// evidenceJSON builds a bundle for the fixture's message with receipts.
func (f *verifyFixture) evidenceJSON(t *testing.T, mutate func(*api.Evidence)) []byte {
	t.Helper()
	ev := api.Evidence{
		ID: f.claims.ID, Direction: api.Outbound,
		Envelope: string(f.sealed.Envelope), Message: string(f.sealed.Inner),
		Receipts: []string{string(f.accepted), string(f.delivered)},
	}
	if mutate != nil {
		mutate(&ev)
	}
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyEvidence(t *testing.T) {
	f := newVerifyFixture(t)
	other := envelope.NewID()
	swapped := f.receipt(t, f.jp.Signing, envelope.StatusDelivered, other, f.sealed.EnvSHA256)
	otherEnv := f.receipt(t, f.jp.Signing, envelope.StatusDelivered, f.claims.ID, envelope.Digest([]byte("another envelope")))
	rejected := f.receipt(t, f.jp.Signing, envelope.StatusRejected, f.claims.ID, f.sealed.EnvSHA256)
	byUS := f.receipt(t, f.us.Signing, envelope.StatusAccepted, f.claims.ID, f.sealed.EnvSHA256)
	ev := func(mutate func(*api.Evidence)) []byte { return f.evidenceJSON(t, mutate) }
	args := func(file string) []string {
		return []string{"evidence", file, "--trust", "US=" + f.usRoot, "--trust", "JP=" + f.jpRoot}
	}
	tests := []verifyCase{
		{name: "valid", args: args, first: "message: VALID message " + f.claims.ID,
			has: "VALID evidence " + f.claims.ID + ": 3 of 3 items verify (outbound, 2 receipts)"},
		{name: "valid_without_envelope", input: ev(func(e *api.Evidence) { e.Envelope = "" }), args: args,
			first: "message: VALID", has: "VALID evidence"},
		{name: "R-01_swapped_receipt", input: ev(func(e *api.Evidence) { e.Receipts[1] = string(swapped) }), args: args,
			want: errNotValid, first: "message: VALID", has: "receipt 2: INVALID: id_mismatch: "},
		{name: "R-02_receipt_of_another_envelope", input: ev(func(e *api.Evidence) { e.Receipts[1] = string(otherEnv) }), args: args,
			want: errNotValid, first: "message: VALID", has: "receipt 2: INVALID: digest_mismatch: "},
		{name: "R-10_message_re_encoded", input: ev(func(e *api.Evidence) { e.Message = string(prettyPayload(t, f.sealed.Inner)) }), args: args,
			want: errNotValid, first: "message: INVALID: signature_invalid", has: "INVALID evidence " + f.claims.ID + ": "},
		{name: "R-10_receipt_with_trailing_newline", input: ev(func(e *api.Evidence) { e.Receipts[0] += "\n" }), args: args,
			want: errNotValid, first: "message: VALID", has: "receipt 1: INVALID: malformed: "},
		{name: "R-03_receipt_signed_by_sender", input: ev(func(e *api.Evidence) { e.Receipts[0] = string(byUS) }), args: args,
			want: errNotValid, first: "message: VALID", has: "receipt 1: INVALID: untrusted_signer: "},
		{name: "R-06_conflicting_receipts", input: ev(func(e *api.Evidence) { e.Receipts = append(e.Receipts, string(rejected)) }), args: args,
			want: errNotValid, first: "message: VALID", has: "receipts: INVALID: conflicting_receipts: "},
		{name: "message_of_another_id", input: ev(func(e *api.Evidence) { e.ID = other }), args: args,
			want: errNotValid, first: "message: INVALID: id_mismatch: "},
		{name: "nothing_to_verify", input: ev(func(e *api.Evidence) { e.Message, e.Envelope, e.Receipts = "", "", nil }), args: args,
			want: errNotValid, first: "message: absent", has: "INVALID evidence " + f.claims.ID + ": neither"},
		{name: "not_json", input: []byte("eyJ..."), args: args, want: errNotValid, first: "INVALID: malformed: "},
	}
	runVerifyCases(t, f, ev(nil), tests)
}

// TestVerifyUsage: operator mistakes and unreadable inputs are errors, never
// a verdict; mistakes on the command line are usage errors.
func TestVerifyUsage(t *testing.T) {
	f := newVerifyFixture(t)
	file := f.write(t, "rcpt.jws", f.delivered)
	ev := f.write(t, "ev.json", f.evidenceJSON(t, nil))
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool // errUsage (exit 2) rather than an input error (exit 1)
	}{
		{name: "no_subcommand", args: nil, want: "missing subcommand", usage: true},
		{name: "unknown_subcommand", args: []string{"checkpoint", file}, want: "unknown subcommand", usage: true},
		{name: "no_file", args: []string{"receipt", "--trust", f.jpRoot}, want: "exactly one FILE", usage: true},
		{name: "two_files", args: []string{"receipt", file, file, "--trust", f.jpRoot}, want: "exactly one FILE", usage: true},
		{name: "no_trust", args: []string{"receipt", file}, want: "--trust is required", usage: true},
		{name: "trust_not_pem", args: []string{"receipt", file, "--trust", file}, want: "--trust"},
		{name: "missing_file", args: []string{"receipt", filepath.Join(f.dir, "nope"), "--trust", f.jpRoot}, want: "no such file"},
		{name: "bad_at", args: []string{"receipt", file, "--trust", f.jpRoot, "--at", "yesterday"}, want: "--at", usage: true},
		{name: "bad_party", args: []string{"receipt", file, "--trust", f.jpRoot, "--party", "jp"}, want: "two upper-case letters", usage: true},
		{name: "envelope_without_key", args: []string{"envelope", file, "--trust", f.usRoot, "--party", "US"}, want: "--key", usage: true},
		{name: "evidence_unlabelled_trust", args: []string{"evidence", ev, "--trust", f.usRoot, "--trust", "JP=" + f.jpRoot}, want: "label every --trust", usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runVerifyAt(t, verifyAt, nil, tt.args...)
			if err == nil || errors.Is(err, errNotValid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("runVerify = %v, want an error naming %q", err, tt.want)
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Errorf("errors.Is(%v, errUsage) = %v, want %v", err, !tt.usage, tt.usage)
			}
		})
	}
}

// TestVerifyExitStatus: through the cmx main, VALID exits 0, INVALID and
// INDETERMINATE exit 1, usage errors exit 2.
func TestVerifyExitStatus(t *testing.T) {
	f := newVerifyFixture(t)
	good := f.write(t, "good.jws", f.delivered)
	bad := f.write(t, "bad.jws", tamper(f.delivered))
	tests := []struct {
		name string
		now  time.Time
		args []string
		want int
	}{
		{name: "valid", now: verifyAt, args: []string{"verify", "receipt", good, "--trust", f.jpRoot}, want: 0},
		{name: "invalid", now: verifyAt, args: []string{"verify", "receipt", bad, "--trust", f.jpRoot}, want: 1},
		{name: "indeterminate", now: verifyAt.Add(2 * 365 * 24 * time.Hour), args: []string{"verify", "receipt", good, "--trust", f.jpRoot}, want: 1},
		{name: "usage", now: verifyAt, args: []string{"verify", "receipt", good}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldNow := verifyNow
			verifyNow = func() time.Time { return tt.now }
			t.Cleanup(func() { verifyNow = oldNow })
			var stdout, stderr bytes.Buffer
			if got := run(context.Background(), tt.args, &stdout, &stderr); got != tt.want {
				t.Fatalf("exit status %d, want %d\nstdout: %s\nstderr: %s", got, tt.want, stdout.String(), stderr.String())
			}
			if tt.want == 1 && stderr.Len() != 0 {
				t.Errorf("a verdict is printed once, on stdout; stderr has %q", stderr.String())
			}
		})
	}
}

// TestVerifyEvidenceFromGateways: the evidence bundles that two real
// gateways serve for one exchanged message (the sender's outbound bundle
// and the receiver's inbound one) verify offline with nothing but both
// parties' pinned roots.
func TestVerifyEvidenceFromGateways(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pair.Start(ctx, pair.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	m, err := p.Send(ctx, "US", envelope.LaborEnforcementNotice, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.WaitStatus(ctx, m, api.StatusDelivered, 20*time.Second); err != nil || got.Status != api.StatusDelivered {
		t.Fatalf("message did not reach delivered: %v %+v", err, got)
	}
	trust := []string{
		"--trust", "US=" + filepath.Join(p.US.PKIDir, certs.FileBundle),
		"--trust", "JP=" + filepath.Join(p.JP.PKIDir, certs.FileBundle),
	}
	sides := []struct {
		name   string
		side   *pair.Side
		agency string
	}{
		{name: "outbound_at_sender", side: p.US, agency: m.Agency},
		{name: "inbound_at_receiver", side: p.JP, agency: pair.AgencyFor("JP", m.Type)},
	}
	for _, s := range sides {
		t.Run(s.name, func(t *testing.T) {
			ev, err := s.side.Client(s.agency).Evidence(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Envelope == "" || ev.Message == "" || len(ev.Receipts) < 2 {
				t.Fatalf("bundle lacks envelope, message or receipts: %+v", ev)
			}
			b, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "evidence.json")
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runVerifyAt(t, time.Now(), nil, append([]string{"evidence", file}, trust...)...)
			if err != nil {
				t.Fatalf("verify evidence: %v\n%s", err, out)
			}
			if !strings.Contains(out, "VALID evidence "+m.ID+": ") || strings.Contains(out, "INVALID") {
				t.Errorf("verdict:\n%s", out)
			}
		})
	}
}
