"""An independent mutual-TLS client of precinct's internal API: Python's own
`ssl` module (OpenSSL), with an X.509-SVID fetched by py-spiffe from a
Workload API socket (or PEM files given on the command line).

    mtls_client.py svid SOCKET DIR
        (SOCKET: a path or a unix:// address)
        fetch the socket's X.509-SVID with py-spiffe; write DIR/svid.pem
        (the chain), DIR/key.pem and DIR/bundle.pem; print its SPIFFE ID
    mtls_client.py call CERT KEY BUNDLE HOST PORT METHOD PATH [BODY]
        one request on a new connection; prints one JSON line:
        {"status": 200, "body": ..., "server_serial": "…"} or
        {"error": "…"} when the handshake or the request failed
    mtls_client.py resume CERT KEY BUNDLE HOST PORT
        two connections, the second offering the first's TLS session;
        prints {"first": status, "second": status, "reused": bool}
    mtls_client.py stream SOCKET BUNDLE HOST PORT SECONDS
        a new connection per request for SECONDS, fetching the client's SVID
        from SOCKET before each (it rotates); prints one JSON line with every
        server certificate serial seen, in order, and the failures
The server's certificate chain is verified against the bundle; its name is
not (SPIFFE certificates carry a SPIFFE ID, not a host name).
"""

import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
import time


def fetch_svid(sock: str, out: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from spiffe import WorkloadApiClient

    if not sock.startswith(("unix://", "tcp://")):
        sock = "unix://" + os.path.abspath(sock)
    with WorkloadApiClient(sock, default_timeout=10) as client:
        svid = client.fetch_x509_svid()
        bundles = client.fetch_x509_bundles()
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain)
    key = svid.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    bundle = b""
    for b in bundles.bundles:
        for authority in b.x509_authorities:
            bundle += authority.public_bytes(serialization.Encoding.PEM)
    for name, data in (("svid.pem", chain), ("key.pem", key), ("bundle.pem", bundle)):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    return str(svid.spiffe_id)


def context(cert: str | None, key: str | None, bundle: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(bundle)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def call(ctx: ssl.SSLContext, host: str, port: int, method: str, path: str, body: str | None) -> dict:
    try:
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        headers = {}
        if body is not None:
            headers["content-type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        peer = conn.sock.getpeercert(binary_form=True)
        conn.close()
        serial = None
        if peer:
            from cryptography import x509

            serial = format(x509.load_der_x509_certificate(peer).serial_number, "x")
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode(errors="replace")
        return {"status": resp.status, "body": parsed, "server_serial": serial}
    except (ssl.SSLError, OSError, http.client.HTTPException) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> int:
    cmd = sys.argv[1]
    if cmd == "svid":
        print(fetch_svid(sys.argv[2], sys.argv[3]))
        return 0
    if cmd == "call":
        cert, key, bundle, host, port, method, path = sys.argv[2:9]
        body = sys.argv[9] if len(sys.argv) > 9 else None
        ctx = context(cert or None, key or None, bundle)
        print(json.dumps(call(ctx, host, int(port), method, path, body)))
        return 0
    if cmd == "resume":
        cert, key, bundle, host, port = sys.argv[2:7]
        ctx = context(cert, key, bundle)
        statuses, session, reused = [], None, None
        for _ in range(2):
            raw = socket.create_connection((host, int(port)), timeout=10)
            tls = ctx.wrap_socket(raw, session=session)
            tls.sendall(b"POST /internal/v1/introspect HTTP/1.1\r\nhost: x\r\n"
                        b"content-type: application/x-www-form-urlencoded\r\n"
                        b"content-length: 7\r\nconnection: close\r\n\r\ntoken=x")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
            statuses.append(int(data.split(b" ", 2)[1]))
            # TLS 1.3 tickets arrive after the handshake: read, then take it.
            session, reused = tls.session, tls.session_reused
            tls.close()
        print(json.dumps({"first": statuses[0], "second": statuses[1], "reused": reused,
                          "ticket_offered": session is not None and session.has_ticket}))
        return 0
    if cmd == "stream":
        sock, bundle, host, port, seconds = sys.argv[2:7]
        serials, client_ids, failures, calls = [], [], [], 0
        until = time.time() + float(seconds)
        with tempfile.TemporaryDirectory() as d:
            while time.time() < until:
                client_ids.append(fetch_svid(sock, d))
                ctx = context(os.path.join(d, "svid.pem"), os.path.join(d, "key.pem"), bundle)
                r = call(ctx, host, int(port), "POST", "/internal/v1/introspect", "token=x")
                calls += 1
                if r.get("status") != 200:
                    failures.append(r)
                elif not serials or serials[-1] != r["server_serial"]:
                    serials.append(r["server_serial"])
                time.sleep(0.05)
        print(json.dumps({"calls": calls, "server_serials": serials, "failures": failures[:5],
                          "failed": len(failures)}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
