#!/bin/sh
# Throw-away certificates for deploy/docker-compose.yml (and for tests/deploy/validate.sh):
#
#   OUT/xmpp/ca.pem                     CA the gateways verify Prosody with (--upstream-ca)
#   OUT/xmpp/localhost.crt, .key        Prosody's certificate for localhost, signed by it
#   OUT/lb/xmpp.pem                     HAProxy's certificate + key for https://localhost/
#   OUT/cluster/cluster.secret          the secret the gateways of the cluster share
#
# Usage: gen-certs.sh OUT. Existing files are kept, so restarting the stack keeps its
# certificates. POSIX sh + openssl only (the compose service runs it in a small Alpine image).
# Never use these outside a demo: the keys are world-readable so that Prosody and HAProxy,
# running as their own users in their containers, can read them.
set -eu

out=${1:?usage: gen-certs.sh OUT}
mkdir -p "$out/xmpp" "$out/lb" "$out/cluster"

if [ ! -s "$out/xmpp/ca.pem" ] || [ ! -s "$out/xmpp/localhost.crt" ]; then
	tmp=$(mktemp -d)
	# EC P-256: quick to generate. webpki (rustls) checks only the subjectAltName and rejects
	# a CA certificate presented as a server certificate, hence the extensions.
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$tmp/ca.key" -out "$out/xmpp/ca.pem" -days 365 \
		-subj "/CN=xmpp-gateway compose demo CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$out/xmpp/localhost.key" -out "$tmp/localhost.csr" -subj "/CN=localhost" 2>/dev/null
	cat >"$tmp/server.ext" <<-EOF
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth
		subjectAltName=DNS:localhost,DNS:conference.localhost
	EOF
	openssl x509 -req -in "$tmp/localhost.csr" -CA "$out/xmpp/ca.pem" -CAkey "$tmp/ca.key" \
		-CAcreateserial -CAserial "$tmp/ca.srl" -out "$out/xmpp/localhost.crt" -days 365 -extfile "$tmp/server.ext" 2>/dev/null
	rm -rf "$tmp"
	chmod 0644 "$out/xmpp/ca.pem" "$out/xmpp/localhost.crt" "$out/xmpp/localhost.key"
fi

if [ ! -s "$out/lb/xmpp.pem" ]; then
	tmp=$(mktemp -d)
	# Self-signed for https://localhost/: the browser asks once to accept it.
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$tmp/lb.key" -out "$tmp/lb.crt" -days 365 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost" 2>/dev/null
	# HAProxy's crt file: certificate followed by its key.
	cat "$tmp/lb.crt" "$tmp/lb.key" >"$out/lb/xmpp.pem"
	rm -rf "$tmp"
	chmod 0644 "$out/lb/xmpp.pem"
fi

if [ ! -s "$out/cluster/cluster.secret" ]; then
	# 32 random bytes, base64: what [cluster] secret_file wants (at least 16 bytes). Readable by
	# the gateways' distroless user; only their containers mount this volume.
	openssl rand -base64 32 >"$out/cluster/cluster.secret"
	chmod 0444 "$out/cluster/cluster.secret"
fi

echo "certificates in $out"
