-- Prosody for deploy/docker-compose.yml: the XMPP server behind the gateways, serving the
-- domain "localhost" on c2s port 5222 with STARTTLS required. Its certificate is signed by the
-- throw-away CA that the compose "certs" service generates; the gateways verify it with
-- --upstream-ca. Not a production configuration.

data_path = "/var/lib/prosody"
log = { { levels = { min = "info" }, to = "console" } }

interfaces = { "*" }
c2s_ports = { 5222 }
c2s_direct_tls_ports = { }
s2s_ports = { }
component_ports = { }
-- Clients reach this server only through the gateways: no BOSH or WebSocket of Prosody's own.
http_ports = { }
https_ports = { }

modules_enabled = {
	"tls"; "saslauth"; "disco"; "roster"; "ping"; "carbons"; "smacks";
	"blocklist"; "private"; "vcard4"; "version"; "time"; "uptime"; "mam";
}
modules_disabled = { "s2s"; "dialback"; "s2s_auth_certs" }

c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"

ssl = {
	certificate = "/certs/xmpp/localhost.crt";
	key = "/certs/xmpp/localhost.key";
}

VirtualHost "localhost"

Component "conference.localhost" "muc"
