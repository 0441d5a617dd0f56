// jose.mjs: the cmx wire format seen through an independent JOSE
// implementation (panva/jose). It reads one JSON request on stdin and writes
// one JSON answer on stdout, so the Go interop tests can drive it:
//
//   {"op":"open", "jwe", "key", "signer_cert"}
//       compactDecrypt (ECDH-ES+A256KW / A256GCM only), then compactVerify of
//       the inner JWS (ES256 only) with the key of the x5c leaf, which must be
//       byte-identical to the pinned signer_cert.
//       -> {"jwe_header", "jws_header", "claims", "message"}
//   {"op":"verify-receipt", "jws", "signer_cert"}
//       -> {"header", "claims"}
//   {"op":"seal", "claims", "key", "chain", "recipient_cert",
//    "jws_header"?, "jwe_header"?}
//       signs claims with ES256 under {alg, typ, kid, x5c}, then encrypts the
//       compact JWS to recipient_cert under {alg, enc, cty, kid}. The optional
//       header objects are merged over those defaults (a null value removes a
//       member), which is how the tests build off-profile tokens.
//       -> {"jwe", "jws"}
//   {"op":"sign-receipt", "claims", "key", "chain", "jws_header"?}
//       -> {"jws"}
//
// Keys are PKCS#8 PEM, certificates PEM, chain a list of PEM certificates
// (leaf first). kid is always the x5t#S256 of the certificate, computed here.
// On failure the answer is {"error", "code"} and the exit status is 1.
import * as jose from 'jose';
import { X509Certificate, createHash } from 'node:crypto';

const ALG_SIG = 'ES256';
const ALG_KW = 'ECDH-ES+A256KW';
const ENC = 'A256GCM';

// der returns the DER bytes of a PEM certificate.
function der(pem) {
  return new X509Certificate(pem).raw;
}

// kidOf is the x5t#S256 thumbprint: base64url SHA-256 of the DER.
function kidOf(pem) {
  return createHash('sha256').update(der(pem)).digest('base64url');
}

// x5cPEM turns an x5c entry (standard base64 DER) back into PEM.
function x5cPEM(b64) {
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

// merge applies overrides to base; a null override deletes the member.
function merge(base, overrides) {
  const out = { ...base };
  for (const [k, v] of Object.entries(overrides ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

// pinnedLeafKey resolves the verification key from the x5c leaf, after
// checking that the leaf is exactly the pinned certificate. Chain building to
// a root is the cmx verifier's job; this tool checks the JOSE layer.
function pinnedLeafKey(signerCert) {
  const pinned = der(signerCert);
  return async (header) => {
    if (!Array.isArray(header.x5c) || header.x5c.length === 0) {
      throw new Error('protected header has no x5c');
    }
    const leaf = x5cPEM(header.x5c[0]);
    if (!der(leaf).equals(pinned)) throw new Error('x5c leaf is not the pinned signer certificate');
    if (header.kid !== kidOf(leaf)) throw new Error('kid is not the x5t#S256 of the x5c leaf');
    return jose.importX509(leaf, ALG_SIG);
  };
}

async function verify(jws, signerCert) {
  const { payload, protectedHeader } = await jose.compactVerify(jws, pinnedLeafKey(signerCert), {
    algorithms: [ALG_SIG],
  });
  return { header: protectedHeader, claims: JSON.parse(new TextDecoder().decode(payload)) };
}

async function open(req) {
  const key = await jose.importPKCS8(req.key, ALG_KW);
  const { plaintext, protectedHeader } = await jose.compactDecrypt(req.jwe, key, {
    keyManagementAlgorithms: [ALG_KW],
    contentEncryptionAlgorithms: [ENC],
  });
  const message = new TextDecoder().decode(plaintext);
  const inner = await verify(message, req.signer_cert);
  return { jwe_header: protectedHeader, jws_header: inner.header, claims: inner.claims, message };
}

async function sign(claims, keyPEM, chain, typ, overrides) {
  const key = await jose.importPKCS8(keyPEM, ALG_SIG);
  const header = merge(
    { alg: ALG_SIG, typ, kid: kidOf(chain[0]), x5c: chain.map((c) => der(c).toString('base64')) },
    overrides,
  );
  const payload = new TextEncoder().encode(JSON.stringify(claims));
  return new jose.CompactSign(payload).setProtectedHeader(header).sign(key);
}

async function seal(req) {
  const jws = await sign(req.claims, req.key, req.chain, 'cmx-msg+jwt', req.jws_header);
  const header = merge({ alg: ALG_KW, enc: ENC, cty: 'JWT', kid: kidOf(req.recipient_cert) }, req.jwe_header);
  const recipient = await jose.importX509(req.recipient_cert, header.alg);
  const jwe = await new jose.CompactEncrypt(new TextEncoder().encode(jws))
    .setProtectedHeader(header)
    .encrypt(recipient);
  return { jwe, jws };
}

const ops = {
  open,
  seal,
  'verify-receipt': (req) => verify(req.jws, req.signer_cert),
  'sign-receipt': async (req) => ({
    jws: await sign(req.claims, req.key, req.chain, 'cmx-rcpt+jwt', req.jws_header),
  }),
};

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const req = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const op = ops[req.op];
  if (!op) throw Object.assign(new Error(`unknown op ${JSON.stringify(req.op)}`), { code: 'ERR_USAGE' });
  return op(req);
}

try {
  process.stdout.write(JSON.stringify(await main()) + '\n');
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err?.message ?? err), code: err?.code ?? '' }) + '\n');
  process.exitCode = 1;
}
