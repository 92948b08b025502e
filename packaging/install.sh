#!/usr/bin/env bash
# Install smpp-bridge on Raspberry Pi OS or Debian (bookworm or later), from this source tree.
#
#   sudo packaging/install.sh            install or upgrade, enable the service (not started)
#   sudo packaging/install.sh --start    ... and (re)start it (once bridge.yaml is ready)
#   packaging/install.sh --dry-run       print what would be done, change nothing
#   --prefix DIR                         program directory [/opt/smpp-bridge]
#   --root DIR                           install everything under DIR instead of / (a trial
#                                        or a test); systemd is left alone
#
# What it does:
#   - installs python3 and python3-venv with apt when they are missing (Python 3.11 or later)
#   - creates the system user and group `smpp-bridge` (no login, no home)
#   - creates a virtual environment in /opt/smpp-bridge/venv and installs into it exactly the
#     versions in packaging/requirements.lock (pip checks every file's hash), then this tree;
#     /usr/local/bin/smpp-bridge links to it
#   - creates /etc/smpp-bridge/bridge.yaml from bridge.yaml.example (mode 0600, owner
#     smpp-bridge: the bridge refuses inline secrets in a file others can read) and
#     /etc/smpp-bridge/secrets.env (mode 0640, root:smpp-bridge) for the *_env secrets;
#     existing files are never overwritten. The service cannot write in /etc/smpp-bridge.
#   - creates /var/lib/smpp-bridge (mode 0700, smpp-bridge): the store and the PDU logs
#   - installs the systemd unit smpp-bridge.service and enables it (when systemd runs)
#
# Re-running it upgrades the program, its dependencies (to the lock's versions) and the unit,
# and keeps the config, the secrets and the state.
set -euo pipefail

PREFIX=/opt/smpp-bridge
ROOT=
SERVICE_USER=smpp-bridge
# The system's Python (not a pyenv/conda one on root's PATH: the service user must run it).
PYTHON=${PYTHON:-/usr/bin/python3}
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
START=0

usage() {
    sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# The value of an option that takes a directory (--prefix DIR), or a clear error.
dir_value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#-}" != "$2" ]; then
        echo "install.sh: $1 needs a directory, e.g. $1 /opt/smpp-bridge (try --help)" >&2
        exit 2
    fi
    case "$2" in
        /*) ;;
        *) echo "install.sh: $1 needs an absolute path, got '$2'" >&2; exit 2 ;;
    esac
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --start) START=1 ;;
        --prefix) dir_value "$@"; PREFIX="${2%/}"; shift ;;
        --root) dir_value "$@"; ROOT="${2%/}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

PREFIX="$ROOT$PREFIX"
CONF_DIR="$ROOT/etc/smpp-bridge"
STATE_DIR="$ROOT/var/lib/smpp-bridge"
UNIT_DIR="$ROOT/etc/systemd/system"
BIN_DIR="$ROOT/usr/local/bin"
VENV="$PREFIX/venv"

say() { printf '==> %s\n' "$*"; }

run() {
    if [ "$DRY_RUN" = 1 ]; then
        # Quoted as the shell needs it, so a printed command can be pasted as it is.
        local quoted
        quoted="$(printf '%q ' "$@")"
        printf '+ %s\n' "${quoted% }"
    else
        "$@"
    fi
}

# Write stdin to a file with mode and owner, unless the file exists.
write_new() {
    local path="$1" mode="$2" owner="$3" tmp
    if [ -e "$path" ]; then
        say "keeping existing $path"
        cat >/dev/null
        return
    fi
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ write %s (mode %s, owner %s)\n' "$path" "$mode" "$owner"
        cat >/dev/null
        return
    fi
    tmp="$(mktemp "$path.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv "$tmp" "$path"
    say "created $path"
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run it as root (sudo $0), or with --dry-run to see what it would do" >&2
    exit 1
fi
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/bridge" ]; then
    echo "install.sh: $SRC is not an smpp-bridge source tree (no pyproject.toml and bridge/)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: this script is for Debian and Raspberry Pi OS (apt-get not found)" >&2
    exit 1
fi

say "Python ($PYTHON)"
if [ ! -x "$PYTHON" ] || ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    run apt-get update
    run apt-get install -y python3 python3-venv
fi
if [ "$DRY_RUN" = 0 ] || [ -x "$PYTHON" ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "install.sh: smpp-bridge needs Python 3.11 or later; $PYTHON is $("$PYTHON" -V 2>&1)." >&2
        echo "Use Debian 12 (bookworm) / Raspberry Pi OS bookworm or later." >&2
        exit 1
    fi
fi

say "user $SERVICE_USER"
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "smpp-bridge service" "$SERVICE_USER"
fi

say "program in $VENV"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    run "$PYTHON" -m venv --clear "$VENV"
fi
# Exactly the tested versions, each file checked against its hash; then the program itself,
# built with the locked setuptools, nothing fetched (on an upgrade it replaces the old one).
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$SRC/packaging/requirements.lock"
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
    --no-build-isolation --force-reinstall "$SRC"
run install -d -m 0755 "$BIN_DIR"
run ln -sf "$VENV/bin/smpp-bridge" "$BIN_DIR/smpp-bridge"
run install -d -m 0755 "$PREFIX/share"
run install -m 0644 "$SRC/config/grafana/smpp-bridge.json" "$PREFIX/share/grafana-dashboard.json"
run install -m 0644 "$SRC/config/prometheus/prometheus.yml" "$PREFIX/share/prometheus.yml"
run install -m 0644 "$SRC/config/prometheus/alerts.yml" "$PREFIX/share/alerts.yml"
run install -m 0644 "$SRC/packaging/requirements.lock" "$PREFIX/share/requirements.lock"
run install -d -m 0755 "$PREFIX/docs"
run install -m 0644 "$SRC/README.md" "$PREFIX/docs/README.md"

say "config in $CONF_DIR"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
run install -m 0644 "$SRC/bridge.yaml.example" "$CONF_DIR/bridge.yaml.example"
write_new "$CONF_DIR/bridge.yaml" 0600 "$SERVICE_USER:$SERVICE_USER" <"$SRC/bridge.yaml.example"
write_new "$CONF_DIR/secrets.env" 0640 "root:$SERVICE_USER" <<'EOF'
# Secrets for bridge.yaml's *_env keys: one NAME=value per line. The service reads this file
# (--env-file in the unit), and so can your own commands:
#   sudo -u smpp-bridge smpp-bridge check-config --env-file /etc/smpp-bridge/secrets.env /etc/smpp-bridge/bridge.yaml
# Keep it mode 0640, owner root, group smpp-bridge.
# APP1_PASSWORD=
# GOIP1_PASSWORD=
# SMPP_BRIDGE_ADMIN_TOKEN=
EOF
# Older installs kept it root's alone (systemd read it): the service reads it itself now.
if [ -e "$CONF_DIR/secrets.env" ] && [ "$(stat -c %G "$CONF_DIR/secrets.env")" != "$SERVICE_USER" ]; then
    run chgrp "$SERVICE_USER" "$CONF_DIR/secrets.env"
    run chmod 0640 "$CONF_DIR/secrets.env"
fi

say "state in $STATE_DIR"
run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"

say "systemd unit"
run install -d -m 0755 "$UNIT_DIR"
run install -m 0644 "$SRC/packaging/smpp-bridge.service" "$UNIT_DIR/smpp-bridge.service"
if [ "$PREFIX" != /opt/smpp-bridge ]; then
    run sed -i "s#/opt/smpp-bridge#$PREFIX#g" "$UNIT_DIR/smpp-bridge.service"
fi
if [ -n "$ROOT" ]; then
    run sed -i "s# /etc/smpp-bridge/# $CONF_DIR/#g" "$UNIT_DIR/smpp-bridge.service"
fi
BY_HAND="sudo -u $SERVICE_USER $VENV/bin/smpp-bridge run --config $CONF_DIR/bridge.yaml --env-file $CONF_DIR/secrets.env"
if [ -n "$ROOT" ]; then
    say "installed under $ROOT, systemd left alone. Start it by hand (STATE_DIRECTORY: where the store goes):"
    say "  STATE_DIRECTORY=$STATE_DIR $BY_HAND"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    run systemctl daemon-reload
    run systemctl enable smpp-bridge.service
    if [ "$START" = 1 ]; then
        run systemctl restart smpp-bridge.service
    elif systemctl is-active --quiet smpp-bridge.service; then
        say "the running bridge keeps the old program until: sudo systemctl restart smpp-bridge"
    fi
else
    say "systemd is not running here (not PID 1: a container, a chroot?): the unit is installed,"
    say "not enabled. On a machine booted with systemd: sudo systemctl enable --now smpp-bridge"
    say "Here, start it by hand:"
    say "  $BY_HAND"
    if [ "$START" = 1 ]; then
        say "(--start ignored: there is no systemd to start it)"
    fi
fi

if [ "$DRY_RUN" = 1 ]; then
    echo
    echo "(dry run: nothing was changed)"
    exit 0
fi

cat <<EOF

smpp-bridge is installed. Next:
  1. Edit $CONF_DIR/bridge.yaml (ESMEs, devices, routes); put the passwords it names
     with *_env into $CONF_DIR/secrets.env.
  2. Check it:   sudo -u $SERVICE_USER smpp-bridge check-config --env-file $CONF_DIR/secrets.env $CONF_DIR/bridge.yaml
  3. Start it:   sudo systemctl start smpp-bridge && journalctl -u smpp-bridge -f
  4. Look:       sudo smpp-bridge status --config $CONF_DIR/bridge.yaml --env-file $CONF_DIR/secrets.env
  5. Monitoring: $PREFIX/share/ has the Prometheus scrape config, the alert rules and the
     Grafana dashboard; see "Operations" in $PREFIX/docs/README.md.
EOF
