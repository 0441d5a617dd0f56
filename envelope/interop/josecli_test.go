package interop

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	jose "github.com/go-jose/go-jose/v4"
)

// joseCLI runs José (latchset, the "jose" binary) with args in dir and
// returns its standard output.
func joseCLI(t *testing.T, bin, dir string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &cliError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

type cliError struct {
	err    error
	stderr string
}

func (e *cliError) Error() string { return e.err.Error() + ": " + e.stderr }
func (e *cliError) Unwrap() error { return e.err }

// writeJWK writes key (private or public) as a JWK file in dir.
func writeJWK(t *testing.T, dir, name string, key crypto.PublicKey) {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, name, b)
}

func writeFile(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestJoseCLIOpensCmxEnvelope: José decrypts a cmx envelope with the JP
// encryption key and verifies the inner message with the US signing key;
// the payload it returns is byte for byte what cmx signed.
func TestJoseCLIOpensCmxEnvelope(t *testing.T) {
	bin := needTool(t, "jose")
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	dir := t.TempDir()
	c := messageClaims(envelope.InvestmentReviewBestPractice)
	sealed, err := envelope.Seal(c, us.Signing, jp.Encryption.Cert)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "env.jwe", sealed.Envelope)
	writeJWK(t, dir, "jp-enc.jwk", jp.Encryption.Key)
	writeJWK(t, dir, "us-sig.jwk", us.Signing.Cert.PublicKey)
	writeJWK(t, dir, "jp-sig.jwk", jp.Signing.Cert.PublicKey)

	inner, err := joseCLI(t, bin, dir, "jwe", "dec", "-i", "env.jwe", "-k", "jp-enc.jwk")
	if err != nil {
		t.Fatalf("jose jwe dec: %v", err)
	}
	if !bytes.Equal(inner, sealed.Inner) {
		t.Fatalf("jose jwe dec returned %q, want the inner JWS cmx sealed", inner)
	}
	writeFile(t, dir, "msg.jws", inner)
	payload, err := joseCLI(t, bin, dir, "jws", "ver", "-i", "msg.jws", "-k", "us-sig.jwk", "-O", "-")
	if err != nil {
		t.Fatalf("jose jws ver: %v", err)
	}
	if want := signedPayload(t, sealed.Inner); !bytes.Equal(payload, want) {
		t.Errorf("jose jws ver payload = %s, want %s", payload, want)
	}
	var got envelope.Claims
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	sameClaims(t, &got, c)
	// The same tool refuses the message under another party's key.
	if _, err := joseCLI(t, bin, dir, "jws", "ver", "-i", "msg.jws", "-k", "jp-sig.jwk"); err == nil {
		t.Errorf("jose jws ver accepted the US message under the JP signing key")
	}
}

// TestJoseCLIVerifiesCmxReceipt: José verifies a cmx receipt with the JP
// signing key and refuses it with the US one.
func TestJoseCLIVerifiesCmxReceipt(t *testing.T) {
	bin := needTool(t, "jose")
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	dir := t.TempDir()
	r := receiptFor(envelope.StatusDelivered)
	tok, err := envelope.IssueReceipt(r, jp.Signing)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rcpt.jws", tok)
	writeJWK(t, dir, "jp-sig.jwk", jp.Signing.Cert.PublicKey)
	writeJWK(t, dir, "us-sig.jwk", us.Signing.Cert.PublicKey)
	payload, err := joseCLI(t, bin, dir, "jws", "ver", "-i", "rcpt.jws", "-k", "jp-sig.jwk", "-O", "-")
	if err != nil {
		t.Fatalf("jose jws ver: %v", err)
	}
	if want := signedPayload(t, tok); !bytes.Equal(payload, want) {
		t.Errorf("jose jws ver payload = %s, want %s", payload, want)
	}
	var got envelope.Receipt
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, r) {
		t.Errorf("receipt:\n got %+v\nwant %+v", got, *r)
	}
	if _, err := joseCLI(t, bin, dir, "jws", "ver", "-i", "rcpt.jws", "-k", "us-sig.jwk"); err == nil {
		t.Errorf("jose jws ver accepted the JP receipt under the US signing key")
	}
}

// signedPayload is the payload segment of a compact JWS, decoded: the
// exact bytes the signature covers.
func signedPayload(t *testing.T, tok []byte) []byte {
	t.Helper()
	parts := strings.Split(string(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d segments", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// joseCLISign signs payload with José under the profile's JWS header for
// typ, with signer's kid and x5c, and returns the compact JWS.
func joseCLISign(t *testing.T, bin, dir string, payload []byte, typ string, signer *certs.Identity) []byte {
	t.Helper()
	tmpl, err := json.Marshal(map[string]any{"protected": map[string]any{
		"alg": "ES256", "typ": typ, "kid": signer.KID, "x5c": x5c(signer),
	}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "payload.json", payload)
	writeFile(t, dir, "sig.tmpl", tmpl)
	writeJWK(t, dir, "signer.jwk", signer.Key)
	out, err := joseCLI(t, bin, dir, "jws", "sig", "-I", "payload.json", "-s", "sig.tmpl", "-k", "signer.jwk", "-c")
	if err != nil {
		t.Fatalf("jose jws sig: %v", err)
	}
	return out
}

// TestCmxVerifiesJoseCLIReceipt: a receipt signed by José verifies in cmx.
func TestCmxVerifiesJoseCLIReceipt(t *testing.T) {
	bin := needTool(t, "jose")
	jp := certstest.NewPKI(t, "JP")
	want := receiptFor(envelope.StatusRejected)
	payload, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	tok := joseCLISign(t, bin, t.TempDir(), payload, envelope.TypReceipt, jp.Signing)
	v := &envelope.ReceiptVerifier{Self: "US", Peer: certstest.Bundle(t, "JP")}
	got, err := v.Verify(tok, now)
	if err != nil {
		t.Fatalf("Verify(José receipt) = %v", err)
	}
	if !reflect.DeepEqual(&got.Receipt, want) {
		t.Errorf("receipt:\n got %+v\nwant %+v", got.Receipt, *want)
	}
}

// TestCmxOpensJoseCLIEnvelope: a message signed and encrypted by José (to
// the JP encryption key, compact, under the profile's headers) opens in cmx.
func TestCmxOpensJoseCLIEnvelope(t *testing.T) {
	bin := needTool(t, "jose")
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	dir := t.TempDir()
	c := messageClaims(envelope.NonMarketPracticeReport)
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	inner := joseCLISign(t, bin, dir, payload, envelope.TypMessage, us.Signing)
	tmpl, err := json.Marshal(map[string]any{"protected": map[string]any{
		"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT", "kid": jp.Encryption.KID,
	}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "inner.jws", inner)
	writeFile(t, dir, "enc.tmpl", tmpl)
	writeJWK(t, dir, "jp-enc.pub.jwk", jp.Encryption.Cert.PublicKey)
	env, err := joseCLI(t, bin, dir, "jwe", "enc", "-I", "inner.jws", "-i", "enc.tmpl", "-k", "jp-enc.pub.jwk", "-c")
	if err != nil {
		t.Fatalf("jose jwe enc: %v", err)
	}
	got, err := openerJP(t).Open(env, now)
	if err != nil {
		t.Fatalf("Open(José envelope) = %v", err)
	}
	sameClaims(t, &got.Claims, c)
	if !bytes.Equal(got.Inner, inner) {
		t.Errorf("Opened.Inner is not the JWS José signed")
	}
}
