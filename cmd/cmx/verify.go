package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	jose "github.com/go-jose/go-jose/v4"
)

const verifyUsage = `usage:
  cmx verify receipt  FILE --trust [XX=]ROOT.pem ... [--party XX] [--aud XX] [--at RFC3339]
  cmx verify message  FILE --trust [XX=]ROOT.pem ... [--party XX] [--aud XX] [--at RFC3339] [--body]
  cmx verify envelope FILE --trust [XX=]ROOT.pem ... --party XX --key ENC.key --cert ENC.pem [--self XX] [--at RFC3339] [--body]
  cmx verify evidence FILE --trust XX=ROOT.pem --trust YY=ROOT.pem [--at RFC3339]

Verifies offline, against pinned roots only, the exact bytes of FILE ('-' is
standard input; whitespace around a token is ignored, inside it is not).
--trust XX=FILE pins the roots in FILE for party XX; a FILE without XX= pins
them for --party, or else for the party the token's signer certificate names.
--at is the time to verify at (default now). When a token verifies only at
its own iat (its signer certificate or the message has expired since), the
verdict is INDETERMINATE: prove the signing time (a trusted timestamp or a
countersigned audit checkpoint) and pass it with --at.
Label the roots (XX=FILE) whenever more than one party's roots are given.
The first line of output is the verdict: VALID, INVALID or INDETERMINATE.
Exit status: 0 VALID; 1 INVALID, INDETERMINATE or an unreadable input; 2 usage.`

// errNotValid is returned by runVerify when the verdict it printed is
// INVALID or INDETERMINATE: main exits 1 without printing it again.
var errNotValid = errors.New("verify: not valid")

// Seams for tests: the clock and standard input.
var (
	verifyNow             = time.Now
	verifyStdin io.Reader = os.Stdin
)

// maxVerifyInput bounds what verify reads from one file (an evidence bundle
// holds an envelope of at most ~1.4 MiB of base64 and its receipts).
const maxVerifyInput = 8 << 20

// runVerify implements "cmx verify": offline verification of a receipt, an
// inner message, an envelope or an evidence bundle.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, verifyUsage)
		return fmt.Errorf("%w: verify: missing subcommand", errUsage)
	}
	kinds := map[string]func(*verifyCmd) outcome{
		"receipt": verifyReceiptCmd, "message": verifyMessageCmd,
		"envelope": verifyEnvelopeCmd, "evidence": verifyEvidenceCmd,
	}
	if h := args[0]; h == "help" || h == "-h" || h == "--help" {
		fmt.Fprintln(stdout, verifyUsage)
		return nil
	}
	run, ok := kinds[args[0]]
	if !ok {
		fmt.Fprintln(stderr, verifyUsage)
		return fmt.Errorf("%w: verify: unknown subcommand %q", errUsage, args[0])
	}
	cmd, err := parseVerifyArgs(args[0], args[1:], stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	out := run(cmd)
	if out.err != nil {
		return out.err
	}
	out.print(stdout)
	if out.verdict != valid {
		return errNotValid
	}
	return nil
}

// verifyCmd is a parsed "cmx verify" command line.
type verifyCmd struct {
	kind, file      string
	input           []byte
	trust           *trustSet
	party, aud      string
	self, key, cert string
	at              time.Time
	atGiven         bool
	body            bool
}

func parseVerifyArgs(kind string, args []string, stderr io.Writer) (*verifyCmd, error) {
	fs := flag.NewFlagSet("cmx verify "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, verifyUsage) }
	c := &verifyCmd{kind: kind, trust: &trustSet{}}
	fs.Var(c.trust, "trust", "pinned root certificates, `[XX=]FILE` (repeatable)")
	fs.StringVar(&c.party, "party", "", "party that signed the token, `XX`")
	fs.StringVar(&c.aud, "aud", "", "expected audience party, `XX`")
	fs.StringVar(&c.self, "self", "", "our party for envelope (default: the party of --cert)")
	fs.StringVar(&c.key, "key", "", "our decryption key (PEM) for envelope")
	fs.StringVar(&c.cert, "cert", "", "our encryption certificate chain (PEM) for envelope")
	at := fs.String("at", "", "verification time, RFC 3339 (default now)")
	fs.BoolVar(&c.body, "body", false, "also print the message body")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: verify %s: %w", errUsage, kind, err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return nil, fmt.Errorf("%w: verify %s: want exactly one FILE, have %d", errUsage, kind, len(pos))
	}
	c.file = pos[0]
	if len(c.trust.specs) == 0 {
		return nil, fmt.Errorf("%w: verify %s: at least one --trust is required", errUsage, kind)
	}
	if c.party != "" && !certs.ValidParty(c.party) || c.aud != "" && !certs.ValidParty(c.aud) {
		return nil, fmt.Errorf("%w: verify %s: --party and --aud are two upper-case letters", errUsage, kind)
	}
	if kind == "envelope" && (c.party == "" || c.key == "" || c.cert == "") {
		return nil, fmt.Errorf("%w: verify envelope: --party, --key and --cert are required", errUsage)
	}
	c.at, c.atGiven = verifyNow(), *at != ""
	if c.atGiven {
		if c.at, err = time.Parse(time.RFC3339, *at); err != nil {
			return nil, fmt.Errorf("%w: verify %s: --at: %w", errUsage, kind, err)
		}
	}
	if err := c.trust.load(); err != nil {
		return nil, err
	}
	c.input, err = readVerifyInput(c.file)
	return c, err
}

// parseInterspersed parses flags anywhere among the positional arguments,
// which it returns in order. Everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func readVerifyInput(name string) ([]byte, error) {
	var r io.Reader = verifyStdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxVerifyInput+1))
	if err != nil {
		return nil, fmt.Errorf("verify: read %s: %w", name, err)
	}
	if len(b) > maxVerifyInput {
		return nil, fmt.Errorf("verify: %s is over %d bytes", name, maxVerifyInput)
	}
	return b, nil
}

// trustSet is the --trust flag: root files, optionally labelled by party.
type trustSet struct {
	specs      []string
	byParty    map[string][]*x509.Certificate
	unlabelled []*x509.Certificate
}

func (t *trustSet) String() string { return strings.Join(t.specs, ",") }

func (t *trustSet) Set(v string) error {
	if v == "" {
		return errors.New("empty --trust")
	}
	t.specs = append(t.specs, v)
	return nil
}

// load reads every --trust file. A value "XX=FILE" labels the roots for XX.
func (t *trustSet) load() error {
	t.byParty = map[string][]*x509.Certificate{}
	for _, spec := range t.specs {
		party, file, labelled := strings.Cut(spec, "=")
		if !labelled || !certs.ValidParty(party) {
			party, file = "", spec
		}
		pemBytes, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("verify: --trust: %w", err)
		}
		roots, err := certs.ParseCertificates(pemBytes)
		if err != nil {
			return fmt.Errorf("verify: --trust %s: %w", file, err)
		}
		if party == "" {
			t.unlabelled = append(t.unlabelled, roots...)
		} else {
			t.byParty[party] = append(t.byParty[party], roots...)
		}
	}
	return nil
}

// bundle pins, for party, the roots labelled for it and, if withUnlabelled,
// the unlabelled ones. No root for the party is an untrusted signer.
func (t *trustSet) bundle(party string, withUnlabelled bool) (*certs.Bundle, *failure) {
	roots := t.byParty[party]
	if withUnlabelled {
		roots = append(roots[:len(roots):len(roots)], t.unlabelled...)
	}
	if len(roots) == 0 {
		return nil, &failure{string(envelope.ReasonUntrustedSigner), "no --trust root for party " + party + " (unknown anchor)"}
	}
	b, err := certs.NewBundle(party, roots...)
	if err != nil {
		return nil, &failure{string(envelope.ReasonUntrustedSigner), err.Error()}
	}
	return b, nil
}

// verdict of one verification, from best to worst.
type verdict int

const (
	valid verdict = iota
	indeterminate
	invalid
)

// failure is an INVALID verdict: a stable reason code and a detail.
type failure struct {
	reason string // an envelope.Reason, or a code of verify's own checks
	detail string
}

// outcome is what one verification prints: a verdict line and details.
// err is an operational error (not a verdict).
type outcome struct {
	verdict verdict
	items   []string // printed before line (evidence: one per item)
	line    string
	details []string
	err     error
}

func (o outcome) print(w io.Writer) {
	for _, it := range o.items {
		fmt.Fprintln(w, it)
	}
	fmt.Fprintln(w, o.line)
	for _, d := range o.details {
		fmt.Fprintln(w, "  "+d)
	}
}

func invalidOutcome(f *failure) outcome {
	return outcome{verdict: invalid, line: "INVALID: " + f.reason + ": " + f.detail}
}

// failureOf turns a verification error into a failure, keeping the reason
// code of an *envelope.Error.
func failureOf(err error) *failure {
	reason := envelope.ReasonOf(err)
	detail := strings.TrimPrefix(err.Error(), "envelope: "+string(reason)+": ")
	return &failure{string(reason), detail}
}

// timeBound reports whether err only says that something has expired by now:
// the message's exp or a certificate of the signer's chain.
func timeBound(err error) bool {
	return errors.Is(err, envelope.ErrExpired) || errors.Is(err, certs.ErrExpired)
}

// atTime runs check at the command's time. If that fails only because
// something expired, the time was not given, and check passes at the
// token's own iat, the verdict is INDETERMINATE (catalogue R-08): the
// token is authentic if it was signed when it says, which only trusted time
// can prove.
func (c *verifyCmd) atTime(iatOf func() int64, check func(now time.Time) error) (verdict, *failure, string) {
	err := check(c.at)
	if err == nil {
		return valid, nil, "verified at " + stamp(c.at)
	}
	if c.atGiven || !timeBound(err) {
		return invalid, failureOf(err), ""
	}
	iat := iatOf()
	if iat <= 0 || check(time.Unix(iat, 0)) != nil {
		return invalid, failureOf(err), ""
	}
	f := failureOf(err)
	return indeterminate, f, fmt.Sprintf("INDETERMINATE: needs_trusted_time: fails at %s with %s (%s); "+
		"it verifies at its own iat %s: prove the signing time and pass --at", stamp(c.at), f.reason, f.detail, stamp(time.Unix(iat, 0)))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// peeked is what verify reads from a JWS before verifying it, only to choose
// the roots, the audience and a fallback time. None of it is trusted: the
// verification that follows checks every value again.
type peeked struct {
	leafParty string
	Iss       string `json:"iss"`
	Aud       string `json:"aud"`
	Iat       int64  `json:"iat"`
}

func peek(tok []byte) peeked {
	var p peeked
	segs := strings.Split(string(tok), ".")
	if len(segs) != 3 {
		return p
	}
	var h struct {
		X5C []string `json:"x5c"`
	}
	if raw, err := base64.RawURLEncoding.DecodeString(segs[0]); err == nil && json.Unmarshal(raw, &h) == nil && len(h.X5C) > 0 {
		if der, err := base64.StdEncoding.DecodeString(h.X5C[0]); err == nil {
			if leaf, err := x509.ParseCertificate(der); err == nil {
				p.leafParty, _, _ = certs.PartyOf(leaf)
			}
		}
	}
	if raw, err := base64.RawURLEncoding.DecodeString(segs[1]); err == nil {
		_ = json.Unmarshal(raw, &p) // best effort: verification decides
	}
	return p
}

// signerParty is --party, or else the party the token's leaf names.
func (c *verifyCmd) signerParty(p peeked) (string, *failure) {
	switch {
	case c.party != "":
		return c.party, nil
	case p.leafParty != "":
		return p.leafParty, nil
	}
	return "", &failure{string(envelope.ReasonUntrustedSigner), "cannot tell the signer's party from the token; give --party"}
}

func signerDesc(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%q (kid %s)", chain[0].Subject.String(), certs.KID(chain[0]))
}

// checkReceipt verifies one receipt token issued by party (aud "" = any).
func (c *verifyCmd) checkReceipt(tok []byte, party, aud string, withUnlabelled bool) (*envelope.VerifiedReceipt, outcome) {
	peer, f := c.trust.bundle(party, withUnlabelled)
	if f != nil {
		return nil, invalidOutcome(f)
	}
	v := &envelope.ReceiptVerifier{Self: aud, Peer: peer}
	var vr *envelope.VerifiedReceipt
	verd, f, note := c.atTime(func() int64 { return peek(tok).Iat }, func(now time.Time) (err error) {
		vr, err = v.Verify(tok, now)
		return err
	})
	switch verd {
	case invalid:
		return nil, invalidOutcome(f)
	case indeterminate: // vr verified at its own iat
		return vr, outcome{verdict: indeterminate, line: note}
	}
	status := string(vr.Status)
	if vr.Reason != "" {
		status += " (" + string(vr.Reason) + ")"
	}
	out := outcome{line: fmt.Sprintf("VALID receipt %s: %s of message %s issued by %s to %s at %s; signer %s",
		vr.ID, status, vr.Msg, vr.Issuer, vr.Audience, stamp(time.Unix(vr.IssuedAt, 0)), signerDesc(vr.Chain))}
	if vr.Recipient != "" {
		out.details = append(out.details, fmt.Sprintf("delivered to %s at %s", vr.Recipient, stamp(time.Unix(vr.DeliveredAt, 0))))
	}
	out.details = append(out.details, "env_sha256 "+vr.EnvSHA256)
	if vr.MsgSHA256 != "" {
		out.details = append(out.details, "msg_sha256 "+vr.MsgSHA256)
	}
	out.details = append(out.details, note)
	return vr, out
}

func verifyReceiptCmd(c *verifyCmd) outcome {
	tok := bytes.TrimSpace(c.input)
	party, f := c.signerParty(peek(tok))
	if f != nil {
		return invalidOutcome(f)
	}
	_, out := c.checkReceipt(tok, party, c.aud, true)
	return out
}

// checkMessage verifies an inner JWS signed by party for aud.
func (c *verifyCmd) checkMessage(tok []byte, party, aud string, withUnlabelled bool) (*envelope.Opened, outcome) {
	peer, f := c.trust.bundle(party, withUnlabelled)
	if f != nil {
		return nil, invalidOutcome(f)
	}
	if aud == "" {
		// The payload has no readable aud, so it cannot verify; a
		// placeholder lets OpenInner report the first failing check in
		// its order (a tampered payload is a bad signature).
		aud = "-"
	}
	op := &envelope.Opener{Self: aud, Peer: peer, ValidateBody: envelope.ValidateBody}
	var m *envelope.Opened
	verd, f, note := c.atTime(func() int64 { return peek(tok).Iat }, func(now time.Time) (err error) {
		m, err = op.OpenInner(tok, now)
		return err
	})
	return m, c.messageOutcome(m, verd, f, note)
}

func (c *verifyCmd) messageOutcome(m *envelope.Opened, verd verdict, f *failure, note string) outcome {
	switch verd {
	case invalid:
		return invalidOutcome(f)
	case indeterminate:
		return outcome{verdict: indeterminate, line: note}
	}
	cl := m.Claims
	to := cl.Recipient
	if to == "" {
		to = cl.Audience + " (default agency)"
	}
	out := outcome{line: fmt.Sprintf("VALID message %s: %s from %s to %s issued at %s, expires %s; signer %s",
		cl.ID, cl.Type, cl.Sender, to, stamp(time.Unix(cl.IssuedAt, 0)), stamp(time.Unix(cl.Expiry, 0)), signerDesc(m.Chain))}
	out.details = append(out.details, "iss "+cl.Issuer+", aud "+cl.Audience+", schema "+cl.Schema)
	if cl.CorrelationID != "" {
		out.details = append(out.details, fmt.Sprintf("correlation_id %q", cl.CorrelationID))
	}
	if cl.Marking != "" {
		out.details = append(out.details, "marking "+cl.Marking)
	}
	if m.EnvSHA256 != "" {
		out.details = append(out.details, "env_sha256 "+m.EnvSHA256)
	}
	out.details = append(out.details, "msg_sha256 "+m.MsgSHA256, note)
	if c.body {
		var buf bytes.Buffer
		if json.Indent(&buf, cl.Body, "  ", "  ") == nil {
			out.details = append(out.details, "body "+buf.String())
		}
	}
	return out
}

func verifyMessageCmd(c *verifyCmd) outcome {
	tok := bytes.TrimSpace(c.input)
	p := peek(tok)
	party, f := c.signerParty(p)
	if f != nil {
		return invalidOutcome(f)
	}
	aud := c.aud
	if aud == "" {
		aud = p.Aud
	}
	_, out := c.checkMessage(tok, party, aud, true)
	return out
}

func verifyEnvelopeCmd(c *verifyCmd) outcome {
	env := bytes.TrimSpace(c.input)
	dk, self, err := c.decryptionKey()
	if err != nil {
		return outcome{err: err}
	}
	peer, f := c.trust.bundle(c.party, true)
	if f != nil {
		return invalidOutcome(f)
	}
	keys, err := certs.NewKeySet(0, dk)
	if err != nil {
		return outcome{err: fmt.Errorf("verify envelope: %w", err)}
	}
	op := &envelope.Opener{Self: self, Peer: peer, Keys: keys, ValidateBody: envelope.ValidateBody}
	var m *envelope.Opened
	check := func(now time.Time) (err error) {
		m, err = op.Open(env, now)
		return err
	}
	// The inner iat is read only to retry at the message's own time.
	iatOf := func() int64 { return peek(decryptUnverified(env, dk)).Iat }
	verd, f, note := c.atTime(iatOf, check)
	return c.messageOutcome(m, verd, f, note)
}

// decryptionKey loads --cert and --key, and our party: --self or the one
// the encryption certificate names.
func (c *verifyCmd) decryptionKey() (*certs.DecryptionKey, string, error) {
	chainPEM, err := os.ReadFile(c.cert)
	if err != nil {
		return nil, "", fmt.Errorf("verify envelope: --cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.key)
	if err != nil {
		return nil, "", fmt.Errorf("verify envelope: --key: %w", err)
	}
	dk, err := certs.ParseDecryptionKey(chainPEM, keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("verify envelope: %w", err)
	}
	self := c.self
	if self == "" {
		if self, _, err = certs.PartyOf(dk.Cert); err != nil {
			return nil, "", fmt.Errorf("verify envelope: --cert: %w; give --self", err)
		}
	}
	return dk, self, nil
}

// decryptUnverified returns the plaintext of env, or nil. It is used only
// to learn the inner iat after Open has already decrypted and verified
// everything but time.
func decryptUnverified(env []byte, dk *certs.DecryptionKey) []byte {
	obj, err := jose.ParseEncryptedCompact(string(env),
		[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil
	}
	plain, err := obj.Decrypt(dk.Key)
	if err != nil {
		return nil
	}
	return plain
}
