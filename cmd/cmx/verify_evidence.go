package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// Reason codes of the evidence bindings, beside envelope's reason codes.
const (
	reasonIDMismatch     = "id_mismatch"          // a token is about another message than the bundle
	reasonDigestMismatch = "digest_mismatch"      // a receipt does not bind the bundle's exact bytes
	reasonConflict       = "conflicting_receipts" // rejected and accepted/delivered for one message
)

// evidenceCheck verifies an evidence bundle item by item: the inner message
// (signed by the sender), then every receipt (signed by the receiver), each
// bound to the bundle's id and to the digests of its exact bytes. The
// envelope cannot be decrypted offline (it is encrypted to the receiver's
// gateway); receipts bind it by env_sha256.
type evidenceCheck struct {
	cmd           *verifyCmd
	ev            api.Evidence
	sender, rcvr  string // parties, from the verified message when there is one
	items         []string
	worst         verdict
	failed, total int
	statuses      map[envelope.Status]bool
}

func verifyEvidenceCmd(c *verifyCmd) outcome {
	if len(c.trust.unlabelled) > 0 {
		return outcome{err: fmt.Errorf("%w: verify evidence: a bundle involves both parties: label every --trust as XX=FILE", errUsage)}
	}
	e := &evidenceCheck{cmd: c, statuses: map[envelope.Status]bool{}}
	if err := json.Unmarshal(c.input, &e.ev); err != nil {
		return invalidOutcome(&failure{string(envelope.ReasonMalformed), "evidence is not a JSON bundle: " + err.Error()})
	}
	if !envelope.ValidID(e.ev.ID) {
		return invalidOutcome(&failure{string(envelope.ReasonMalformed), fmt.Sprintf("evidence id %q is not a message id", clipText(e.ev.ID, 64))})
	}
	e.checkMessage()
	e.checkEnvelope()
	for i, r := range e.ev.Receipts {
		e.checkReceipt(i+1, []byte(r)) // the exact bytes, never trimmed
	}
	e.checkConflicts()
	return e.result()
}

// add records one item's outcome.
func (e *evidenceCheck) add(name string, o outcome) {
	e.total++
	if o.verdict == invalid {
		e.failed++
	}
	e.worst = max(e.worst, o.verdict)
	e.items = append(e.items, name+": "+o.line)
	for _, d := range o.details {
		e.items = append(e.items, "    "+d)
	}
}

func (e *evidenceCheck) checkMessage() {
	if e.ev.Message == "" {
		e.items = append(e.items, "message: absent (receipts are checked against the envelope only)")
		return
	}
	tok := []byte(e.ev.Message)
	p := peek(tok)
	party := p.Iss
	if party == "" {
		party = p.leafParty
	}
	m, o := e.cmd.checkMessage(tok, party, p.Aud, false)
	if m != nil {
		e.sender, e.rcvr = m.Claims.Issuer, m.Claims.Audience
		if m.Claims.ID != e.ev.ID {
			o = invalidOutcome(&failure{reasonIDMismatch, fmt.Sprintf("message jti %s is not the bundle id %s", m.Claims.ID, e.ev.ID)})
		}
	}
	e.add("message", o)
}

func (e *evidenceCheck) checkEnvelope() {
	if e.ev.Envelope == "" {
		e.items = append(e.items, "envelope: absent (env_sha256 of receipts not checked)")
		return
	}
	if strings.Count(e.ev.Envelope, ".") != 4 {
		e.add("envelope", invalidOutcome(&failure{string(envelope.ReasonMalformed), "not a compact JWE"}))
		return
	}
	e.items = append(e.items, fmt.Sprintf("envelope: sha256 %s, %d bytes (encrypted to the receiver; bound by the receipts' env_sha256)",
		envelope.Digest([]byte(e.ev.Envelope)), len(e.ev.Envelope)))
}

func (e *evidenceCheck) checkReceipt(n int, tok []byte) {
	name := fmt.Sprintf("receipt %d", n)
	issuer, aud := e.rcvr, e.sender
	if issuer == "" { // no verified message: the receipt names its issuer, verification checks it
		p := peek(tok)
		if issuer = p.Iss; issuer == "" {
			issuer = p.leafParty
		}
	}
	vr, o := e.cmd.checkReceipt(tok, issuer, aud, false)
	if vr != nil {
		if f := e.binding(vr); f != nil {
			o = invalidOutcome(f)
		} else {
			e.statuses[vr.Status] = true
		}
	}
	e.add(name, o)
}

// binding checks that a verified receipt is about this bundle's message and
// its exact bytes (catalogue ).
func (e *evidenceCheck) binding(vr *envelope.VerifiedReceipt) *failure {
	if vr.Msg != e.ev.ID {
		return &failure{reasonIDMismatch, fmt.Sprintf("receipt %s is about message %s, not %s", vr.ID, vr.Msg, e.ev.ID)}
	}
	if e.ev.Message != "" {
		want := envelope.Digest([]byte(e.ev.Message))
		switch {
		case vr.MsgSHA256 == "" && vr.Status != envelope.StatusRejected:
			return &failure{reasonDigestMismatch, fmt.Sprintf("%s receipt %s carries no msg_sha256", vr.Status, vr.ID)}
		case vr.MsgSHA256 != "" && vr.MsgSHA256 != want:
			return &failure{reasonDigestMismatch, fmt.Sprintf("receipt %s msg_sha256 %s is not the digest of the message (%s)", vr.ID, vr.MsgSHA256, want)}
		}
	}
	if e.ev.Envelope != "" {
		if want := envelope.Digest([]byte(e.ev.Envelope)); vr.EnvSHA256 != want {
			return &failure{reasonDigestMismatch, fmt.Sprintf("receipt %s env_sha256 %s is not the digest of the envelope (%s)", vr.ID, vr.EnvSHA256, want)}
		}
	}
	return nil
}

// checkConflicts flags a rejection beside an acceptance or a delivery of the
// same message: both are signed, neither wins automatically.
func (e *evidenceCheck) checkConflicts() {
	if e.statuses[envelope.StatusRejected] && (e.statuses[envelope.StatusAccepted] || e.statuses[envelope.StatusDelivered]) {
		e.add("receipts", invalidOutcome(&failure{reasonConflict, "the receiver signed both a rejection and an acceptance or delivery"}))
	}
}

func (e *evidenceCheck) result() outcome {
	receipts := len(e.ev.Receipts)
	out := outcome{verdict: e.worst, items: e.items}
	if e.total == 0 {
		out.verdict = invalid
		out.line = fmt.Sprintf("INVALID evidence %s: neither a message nor a receipt to verify", e.ev.ID)
		return out
	}
	switch e.worst {
	case valid:
		out.line = fmt.Sprintf("VALID evidence %s: %d of %d items verify (%s, %d receipts)", e.ev.ID, e.total, e.total, e.ev.Direction, receipts)
	case indeterminate:
		out.line = fmt.Sprintf("INDETERMINATE evidence %s: authentic only if signed when stated; pass a trusted time with --at", e.ev.ID)
	default:
		out.line = fmt.Sprintf("INVALID evidence %s: %d of %d items failed", e.ev.ID, e.failed, e.total)
	}
	return out
}

// clipText bounds foreign text echoed in a verdict.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
