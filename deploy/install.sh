#!/usr/bin/env bash
# One-command install of pocketfleet on a Debian 12 VPS, behind Caddy with automatic HTTPS.
#
#   sudo deploy/install.sh --domain example.com [--email you@example.com]
#
# Run it from a checkout of pocketfleet. It installs Debian's python3, caddy and bubblewrap (the
# instances' sandbox), copies the checkout to /opt/pocketfleet with its own venv (readable by
# instance users), writes /etc/pocketfleet/{env,caddy.json}, and enables pocketfleet-caddy and
# pocketfleet.service (Debian's own caddy.service, which would hold ports 80/443 with its
# sample Caddyfile, is disabled). Idempotent: run it again after pulling a new version.
#
# Before or after: point DNS at this server, an A/AAAA record for DOMAIN and one for *.DOMAIN.
# Certificates come on demand from Let's Encrypt for names pocketfleet serves (the control
# plane answers Caddy's `ask`), so nothing else is needed for TLS.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/pocketfleet
ETC=/etc/pocketfleet
DOMAIN=""
EMAIL=""

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --domain) DOMAIN="${2:-}"; shift 2 ;;
    --email) EMAIL="${2:-}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage 1 ;;
  esac
done
[[ -n $DOMAIN ]] || { echo "install.sh: --domain is required" >&2; usage 1; }
[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

log() { printf 'install: %s\n' "$*"; }

log "installing Debian packages (python3, caddy, bubblewrap)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3 python3-venv ca-certificates caddy rsync bubblewrap

log "copying $SRC to $PREFIX"
# Instances run as uids of their own and read the interpreter and the venv as those uids (a
# pocketfleet-engine instance forked by its zygote imports from them after the fork): whatever
# the caller's umask, the code and the venv (nothing secret) are readable by others.
caller_umask=$(umask)
umask 022
mkdir -p "$PREFIX"
rsync -a --delete --exclude .git --exclude .venv --exclude pf_data --exclude node_modules \
  "$SRC/" "$PREFIX/"
[[ -x $PREFIX/.venv/bin/python ]] || python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet "$PREFIX"
# (a venv left by an older run under a stricter umask, or a private checkout's modes)
chmod 0755 "$PREFIX"
chmod -R go+rX,go-w "$PREFIX/.venv"
umask "$caller_umask"

log "writing $ETC"
mkdir -p "$ETC" /var/lib/pocketfleet
install -m 0644 "$PREFIX/deploy/caddy.json" "$ETC/caddy.json"
install -d -m 0700 -o caddy -g caddy /var/lib/caddy/pocketfleet
{
  echo "PF_DOMAIN=$DOMAIN"
  echo "PF_PROXY=caddy"
  echo "PF_PUBLIC_SCHEME=https"
  # Caddy's admin API: a unix socket in a 0700 folder of the caddy user (RuntimeDirectory of
  # pocketfleet-caddy.service); only Caddy and root (the control plane) can open it
  echo "PF_CADDY_ADMIN=/run/pocketfleet-caddy/admin.sock"
  echo "PF_CADDY_HTTP=:80"
  echo "PF_CADDY_HTTPS=:443"
  echo "PF_SFTP=:2222"  # tenants' SFTP (SSH keys only)
  [[ -n $EMAIL ]] && echo "PF_CADDY_ACME_EMAIL=$EMAIL"
} > "$ETC/env.new"
if [[ -f $ETC/env ]]; then  # keep settings added by hand
  grep -v -E '^(PF_DOMAIN|PF_PROXY|PF_PUBLIC_SCHEME|PF_CADDY_ADMIN|PF_CADDY_HTTP|PF_CADDY_HTTPS|PF_SFTP|PF_CADDY_ACME_EMAIL)=' \
    "$ETC/env" >> "$ETC/env.new" || true
fi
mv "$ETC/env.new" "$ETC/env"
chmod 0640 "$ETC/env"

log "enabling the services"
install -m 0644 "$PREFIX/deploy/pocketfleet-caddy.service" /etc/systemd/system/
install -m 0644 "$PREFIX/deploy/pocketfleet.service" /etc/systemd/system/
systemctl daemon-reload
systemctl disable --now caddy.service 2>/dev/null || true
systemctl enable --now pocketfleet-caddy.service
systemctl enable pocketfleet.service
systemctl restart pocketfleet.service

log "done: the dashboard and API at https://$DOMAIN, instances at https://NAME.$DOMAIN"
log "next: $PREFIX/.venv/bin/pocketfleet operator create you@example.com  (with PF_DATA_DIR=/var/lib/pocketfleet)"
