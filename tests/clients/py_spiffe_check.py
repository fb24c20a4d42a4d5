"""An independent Workload API client against `precinct dev-agent`.

py-spiffe (PyPI `spiffe`, gRPC C-core underneath) is the SPIFFE project's
Python library: it shares no code with precinct, and C-core sends the
`:authority` that Python, C++, Ruby and PHP workloads send over unix sockets.

    SPIFFE_ENDPOINT_SOCKET=unix:///path/agent.sock \
        python py_spiffe_check.py <expected SPIFFE ID> <audience>

Prints one line per check and a JSON summary last; exits non-zero on the first
failure. tests/independent_client.rs runs it against an agent it starts.
"""

import json
import sys
import threading
import time
import urllib.request

import jwt  # PyJWT, a dependency of py-spiffe
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import JwtSvid, WorkloadApiClient

ROTATION_WAIT_SECONDS = 20


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        sys.exit(1)


def serial(svid):
    return format(svid.leaf.serial_number, "x")


def verify_chain(svid, authorities):
    """The leaf is signed by one of the bundle's CAs and is not a CA itself."""
    leaf = svid.leaf
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    if constraints.ca:
        return False
    for ca in authorities:
        try:
            ca.public_key().verify(
                leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
            )
            return True
        except Exception:  # noqa: BLE001 - try the next authority
            continue
    return False


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def main():
    expected_id, audience = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient(default_timeout=10)
    summary = {}

    # X.509-SVID and bundles.
    svid = client.fetch_x509_svid()
    check("FetchX509SVID returns the expected SPIFFE ID", str(svid.spiffe_id) == expected_id, str(svid.spiffe_id))
    context = client.fetch_x509_context()
    trust_domain = svid.spiffe_id.trust_domain
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(trust_domain)
    check("the X.509 bundle covers the trust domain", bundle is not None, str(trust_domain))
    authorities = list(bundle.x509_authorities)
    check("the SVID chains to the bundle (leaf CA:false)", verify_chain(svid, authorities))
    bundles = client.fetch_x509_bundles()
    check("FetchX509Bundles agrees", bundles.get_bundle_for_trust_domain(trust_domain) is not None)
    summary["x509_serial"] = serial(svid)
    summary["x509_not_after"] = svid.leaf.not_valid_after_utc.isoformat()

    # One rotation arrives on the stream.
    seen, errors, rotated = [], [], threading.Event()

    def on_success(ctx):
        s = serial(ctx.default_svid)
        if s not in seen:
            seen.append(s)
        if len(seen) >= 2:
            rotated.set()

    handle = client.stream_x509_contexts(on_success=on_success, on_error=errors.append, retry_connect=False)
    started = time.monotonic()
    got = rotated.wait(ROTATION_WAIT_SECONDS)
    handle.cancel()
    check(
        "a rotated X.509-SVID arrives on the stream",
        got and not errors,
        f"serials {seen} after {time.monotonic() - started:.1f}s, errors {errors}",
    )
    summary["rotation_seconds"] = round(time.monotonic() - started, 2)

    # JWT-SVID: fetch, validate through the agent, validate against the bundle.
    jwt_svid = client.fetch_jwt_svid(audience={audience})
    check("FetchJWTSVID returns the expected SPIFFE ID", str(jwt_svid.spiffe_id) == expected_id)
    check("the JWT-SVID carries the audience", audience in jwt_svid.audience, str(jwt_svid.audience))
    validated = client.validate_jwt_svid(jwt_svid.token, audience)
    check("ValidateJWTSVID accepts it", str(validated.spiffe_id) == expected_id)
    try:
        client.validate_jwt_svid(jwt_svid.token, "another-audience")
        refused = False
    except Exception:  # noqa: BLE001 - any refusal is the expected outcome
        refused = True
    check("ValidateJWTSVID refuses another audience", refused)
    jwt_bundles = client.fetch_jwt_bundles()
    jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(trust_domain)
    check("FetchJWTBundles covers the trust domain", jwt_bundle is not None)
    JwtSvid.parse_and_validate(jwt_svid.token, jwt_bundle, {audience})
    check("the JWT-SVID verifies against the JWT bundle", True)

    # The issuer: discovery document → JWKS → the token's kid and signature.
    claims = jwt.decode(jwt_svid.token, options={"verify_signature": False})
    issuer = claims["iss"]
    discovery = http_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    check("discovery names the token's issuer", discovery.get("issuer") == issuer, issuer)
    jwks = http_json(discovery["jwks_uri"])
    kid = jwt.get_unverified_header(jwt_svid.token)["kid"]
    keys = {k.get("kid"): k for k in jwks.get("keys", [])}
    check("the token's kid is in the issuer's JWKS", kid in keys, kid)
    key = jwt.PyJWK(keys[kid]).key
    verified = jwt.decode(jwt_svid.token, key=key, algorithms=["ES256"], audience=audience, issuer=issuer)
    check("the signature verifies with the issuer's JWKS", verified["sub"] == expected_id)
    summary.update(kid=kid, issuer=issuer, jwt_exp=claims["exp"])

    client.close()
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
