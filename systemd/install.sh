#!/bin/sh
# Install streamguard as a systemd service. Idempotent: safe to run again to upgrade.
#
#   sudo systemd/install.sh [--prefix /opt/streamguard] [--no-venv] [--microphone]
#
# What it does (and what it never does):
#   1. creates the "streamguard" system user (sysusers.d; no supplementary groups);
#   2. unless --no-venv: creates PREFIX/.venv if missing and pip-installs this checkout into it
#      (torch comes from your pip configuration: a multi-GB download if not cached locally);
#   3. installs /etc/systemd/system/streamguard.service (rewriting the /opt/streamguard prefix),
#      and with --microphone the drop-in streamguard.service.d/microphone.conf (ALSA access and
#      the audio group, for [sources.mic]); without it, removes that drop-in;
#   4. creates the tokens the unit loads as credentials, ONLY if absent:
#      /etc/streamguard/secrets/{ingest,alerts}_token (root, 0600; random, 32 bytes base64url);
#   5. installs /etc/streamguard/streamguard.toml ONLY if absent (an edited config is never
#      overwritten; the shipped one is copied beside it as streamguard.toml.dist);
#   6. reloads systemd. It does not enable or start the service: run
#        systemctl enable --now streamguard
#      once the config is to your liking.
set -eu

PREFIX=/opt/streamguard
MAKE_VENV=1
MICROPHONE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-venv) MAKE_VENV=0; shift ;;
        --microphone) MICROPHONE=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo)" >&2
    exit 1
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)

# 1. user (earlier releases made it a member of "audio": only the microphone drop-in grants
#    that now)
install -D -m 0644 "$SRC/systemd/streamguard.sysusers" /usr/lib/sysusers.d/streamguard.conf
systemd-sysusers /usr/lib/sysusers.d/streamguard.conf
if id -nG streamguard | tr ' ' '\n' | grep -qx audio; then
    gpasswd -d streamguard audio >/dev/null
fi

# 2. code
if [ "$MAKE_VENV" -eq 1 ]; then
    if [ ! -x "$PREFIX/.venv/bin/python" ]; then
        python3 -m venv "$PREFIX/.venv"
    fi
    "$PREFIX/.venv/bin/pip" install --upgrade "$SRC"
fi
if [ ! -x "$PREFIX/.venv/bin/streamguard" ]; then
    echo "install.sh: $PREFIX/.venv/bin/streamguard is missing (use without --no-venv)" >&2
    exit 1
fi

# 3. unit
sed "s|/opt/streamguard|$PREFIX|g" "$SRC/systemd/streamguard.service" > /etc/systemd/system/streamguard.service.tmp
chmod 0644 /etc/systemd/system/streamguard.service.tmp
mv /etc/systemd/system/streamguard.service.tmp /etc/systemd/system/streamguard.service
DROPINS=/etc/systemd/system/streamguard.service.d
if [ "$MICROPHONE" -eq 1 ]; then
    install -D -m 0644 "$SRC/systemd/microphone.conf" "$DROPINS/microphone.conf"
else
    rm -f "$DROPINS/microphone.conf"
fi

# 4. tokens, as systemd credentials (root-only; the daemon gets a private copy)
install -d -m 0750 -o root -g streamguard /etc/streamguard
install -d -m 0700 -o root -g root /etc/streamguard/secrets
for name in ingest_token alerts_token; do
    if [ ! -s "/etc/streamguard/secrets/$name" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' \
            > "/etc/streamguard/secrets/$name" && echo >> "/etc/streamguard/secrets/$name")
        echo "install.sh: created /etc/streamguard/secrets/$name"
    fi
    chmod 0600 "/etc/streamguard/secrets/$name"
done

# 5. config (root:streamguard 0640: readable by the daemon, not by other users)
install -m 0640 -o root -g streamguard "$SRC/configs/streamguard.toml" /etc/streamguard/streamguard.toml.dist
if [ ! -e /etc/streamguard/streamguard.toml ]; then
    install -m 0640 -o root -g streamguard "$SRC/configs/streamguard.toml" /etc/streamguard/streamguard.toml
fi
"$PREFIX/.venv/bin/python" -c "from streamguard.config import load_config; load_config('/etc/streamguard/streamguard.toml')" \
    || { echo "install.sh: /etc/streamguard/streamguard.toml is invalid (see above)" >&2; exit 1; }

# 6. systemd
systemctl daemon-reload
echo "installed; start with: systemctl enable --now streamguard"
echo "the dashboard and /metrics need the alerts token: sudo cat /etc/streamguard/secrets/alerts_token"
