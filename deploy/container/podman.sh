#!/bin/sh
# podman with the settings this host needs: "vm" on the project's VMs, podman's own elsewhere.
#
#   deploy/container/podman.sh ARGS...     same arguments as podman
#
# SG_PODMAN_PROFILE=vm|native chooses; unset = "vm" when podman's defaults cannot work here:
# no systemd as PID 1 (the systemd cgroup manager is unusable) or a hard RLIMIT_NOFILE below the
# 1048576 podman asks for by default. "vm" means containers-vm.conf (runc, cgroupfs, host
# networking, no default ulimits; each line says why). A normal host (systemd, rootless or root
# podman, crun) takes "native": nothing is changed. build.sh and tests/integration/
# test_container.py call podman through this file so both use the same settings.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
profile=${SG_PODMAN_PROFILE:-}
if [ -z "$profile" ]; then
    hard=$(ulimit -Hn)
    if [ ! -d /run/systemd/system ] || { [ "$hard" != unlimited ] && [ "$hard" -lt 1048576 ]; }; then
        profile=vm
    else
        profile=native
    fi
fi
case "$profile" in
    vm)
        CONTAINERS_CONF="$here/containers-vm.conf"
        export CONTAINERS_CONF
        exec podman --runtime runc --cgroup-manager cgroupfs "$@"
        ;;
    native) exec podman "$@" ;;
    *) echo "podman.sh: SG_PODMAN_PROFILE must be vm or native, got '$profile'" >&2; exit 2 ;;
esac
