#!/usr/bin/env bash
# An emulated aarch64 board on this machine: a Debian bookworm arm64 userland
# (debootstrap --variant=minbase + qemu-user-static + binfmt), its OpenSSH sshd
# running chrooted inside a network namespace with its own veth pair and address
# (10.201.N.2; the host end is 10.201.N.1). See ../../../shared/notes/boards.md.
#
#   arm64.sh build           build the userland once and cache it as a gzip tarball
#                            OUTSIDE the repository ($EDGECOMPRESS_BOARD_CACHE, default
#                            ~/.cache/edgecompress/boards/arm64-bookworm.tar.gz); a no-op when cached
#   arm64.sh start [N|auto]  unpack it into a fresh state dir, add the host's CA bundle, a board
#                            user + authorized key + host key, start sshd in namespace eca64-N;
#                            prints the path of board.json (host, port, user, identity, known_hosts, ...).
#                            auto (default) claims the first free index 1..255 atomically, so
#                            concurrent test runs get separate boards; an explicit N is reset first
#   arm64.sh stop [N]        kill that board's sshd and every process chrooted in its root (by PID),
#                            unmount its proc/dev, delete the namespace and the state dir
#   arm64.sh status [N]      exit 0 when board N is up
#   arm64.sh check           exit 0 when this machine can run the board at all (root + binfmt);
#                            77 (with the reason on stderr) when it cannot
#
# Exit status 77 means "not possible on this machine" (not root, no binfmt_misc, no
# namespaces): callers (make, pytest) skip the arm64 tests then. Any other failure is an error.
#
# Environment: EDGECOMPRESS_BOARD_CACHE (tarball dir), EDGECOMPRESS_ARM64_STATE (state dirs,
# default /var/tmp/edgecompress-arm64), EDGECOMPRESS_DEBIAN_MIRROR (default: from /etc/apt),
# EDGECOMPRESS_ARM64_SETENV (more NAME=value pairs for every command on the board, e.g. GLIBC_TUNABLES=...).
#
# Commands run on the board get (sshd SetEnv) OPENBLAS_CORETYPE=ARMV8 (OpenBLAS's CPU probe under
# qemu otherwise picks kernels that print spurious RuntimeWarnings), OPENBLAS_NUM_THREADS=1 (qemu runs
# guest threads as host threads: on a small shared host a descheduled BLAS worker stalls a matmul for
# whole time slices, 20 -> 56 ms, bimodally) and EDGECOMPRESS_EMULATED=qemu-user (labels every timing).
# Timings under emulation are not device speed: numpy import ~0.7 s, a 256x256 matmul ~600x slower.
set -euo pipefail

SUITE=bookworm
INCLUDE=python3,python3-venv,python3-pip,ca-certificates,openssh-server
CACHE=${EDGECOMPRESS_BOARD_CACHE:-$HOME/.cache/edgecompress/boards}
TARBALL=$CACHE/arm64-$SUITE.tar.gz
STATE_BASE=${EDGECOMPRESS_ARM64_STATE:-/var/tmp/edgecompress-arm64}
BOARD_USER=board

say() { echo "arm64.sh: $*" >&2; }
cannot() { say "cannot run the arm64 board here: $*"; exit 77; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [ "$(id -u)" = 0 ] || cannot "needs root (debootstrap, chroot, network namespaces)"; }

apt_install() {   # apt_install PACKAGE... (apt-get update only when the first try fails)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; }
}

ensure_tools() {
    command -v apt-get >/dev/null || { command -v debootstrap >/dev/null && command -v qemu-aarch64-static >/dev/null; } \
        || cannot "no apt-get to install debootstrap/qemu-user-static"
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}" || cannot "apt-get install ${missing[*]} failed"
    fi
}

ensure_binfmt() {
    local bm=/proc/sys/fs/binfmt_misc
    if [ ! -e $bm/status ]; then
        mount -t binfmt_misc binfmt_misc $bm 2>/dev/null || cannot "cannot mount binfmt_misc (no privileges for it in this container?)"
    fi
    if [ ! -e $bm/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    [ -e $bm/qemu-aarch64 ] && grep -q '^enabled' $bm/qemu-aarch64 \
        || cannot "binfmt_misc has no enabled qemu-aarch64 handler (update-binfmts --enable qemu-aarch64 failed)"
}

ensure_netns() {
    local probe="eca64probe$$"
    ip netns add "$probe" 2>/dev/null || cannot "cannot create network namespaces"
    ip netns del "$probe"
}

mirror() {   # the Debian mirror of this machine's own apt sources
    if [ -n "${EDGECOMPRESS_DEBIAN_MIRROR:-}" ]; then echo "$EDGECOMPRESS_DEBIAN_MIRROR"; return; fi
    local uri
    # deb822 .sources: the URIs of a stanza whose Suites include the plain release name
    uri=$(awk -v suite="$SUITE" '
        BEGIN { RS = ""; FS = "\n" }
        { uris = ""; ok = 0
          for (i = 1; i <= NF; i++) {
              if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
              if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
          }
          if (ok && uris != "") { print uris; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then   # one-line format
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk -v suite="$SUITE" '$1 == "deb" { o = 2; if ($2 ~ /^\[/) { while ($o !~ /\]$/) o++; o++ }
                                                      if ($(o+1) == suite) { print $o; exit } }' || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

cmd_check() { need_root; ensure_tools; ensure_binfmt; ensure_netns; echo ok; }

cmd_build() {
    need_root; ensure_tools; ensure_binfmt
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.arm64.lock"; flock 9       # one build at a time
    local want="$SUITE arm64 minbase $INCLUDE"
    if [ -s "$TARBALL" ] && [ "$(cat "$TARBALL.key" 2>/dev/null)" = "$want" ]; then
        say "cached: $TARBALL ($(du -m "$TARBALL" | cut -f1) MB)"
        echo "$TARBALL"; return
    fi
    local t0 m
    t0=$(now); m=$(mirror)
    work=$(mktemp -d "$CACHE/.build.XXXXXX")   # global: the EXIT trap needs it
    trap 'umount_all "$work/root"; rm -rf --one-file-system "$work"' EXIT
    say "debootstrap $SUITE arm64 from $m (cold build, ~5-6 min)"
    local keyring=()
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    if ! debootstrap --arch=arm64 --variant=minbase "${keyring[@]}" --include="$INCLUDE" \
            "$SUITE" "$work/root" "$m" >"$work/debootstrap.log" 2>&1; then
        tail -20 "$work/debootstrap.log" >&2
        say "debootstrap failed (log above)"; exit 1
    fi
    local t_boot; t_boot=$(elapsed "$t0")
    chroot "$work/root" python3 -c 'import platform; assert platform.machine() == "aarch64", platform.machine()'
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* "$work/root/etc/ssh/ssh_host_"*
    umount_all "$work/root"
    say "packing the userland (debootstrap took ${t_boot} s)"
    tar -C "$work/root" --numeric-owner --one-file-system -czf "$work/root.tar.gz" .
    mv "$work/root.tar.gz" "$TARBALL"
    echo "$want" > "$TARBALL.key"
    printf '{"debootstrap_s": %s, "total_s": %s, "mirror": "%s", "bytes": %s, "built": "%s"}\n' \
        "$t_boot" "$(elapsed "$t0")" "$m" "$(stat -c %s "$TARBALL")" "$(date -u +%FT%TZ)" > "$TARBALL.json"
    say "cold build done in $(elapsed "$t0") s: $TARBALL ($(du -m "$TARBALL" | cut -f1) MB)"
    echo "$TARBALL"
}

umount_all() {   # every mount below $1, deepest first
    local root=$1 mp
    [ -d "$root" ] || return 0
    root=$(readlink -f "$root")
    for mp in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
}

board_vars() {
    N=${1:-0}
    [[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -le 255 ] || { say "board index must be 0..255, got $N"; exit 2; }
    NS=eca64-$N; VH=eca64h$N; VB=eca64b$N
    HOST_IP=10.201.$N.1; BOARD_IP=10.201.$N.2
    STATE=$STATE_BASE/$N; ROOT=$STATE/root
}

chroot_pids() {   # processes whose root directory is this board's root
    local root p
    root=$(readlink -f "$ROOT" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
    done
    return 0
}

cmd_stop() {
    need_root; board_vars "${1:-0}"
    local pid pids i
    if [ -f "$ROOT/run/board_sshd.pid" ]; then
        pid=$(cat "$ROOT/run/board_sshd.pid")
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    fi
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(chroot_pids)
        [ -z "$pids" ] && break
        # shellcheck disable=SC2086
        kill $([ "$i" -gt 5 ] && echo -9) $pids 2>/dev/null || true
        sleep 0.3
    done
    umount_all "$ROOT"
    ip netns del "$NS" 2>/dev/null || true
    ip link del "$VH" 2>/dev/null || true
    if [ -d "$STATE" ]; then
        if awk -v r="$(readlink -f "$STATE")" 'index($5, r) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
            say "something is still mounted below $STATE; leaving it"; exit 1
        fi
        rm -rf --one-file-system "$STATE"
    fi
    say "board $N stopped"
}

cmd_start() {
    need_root; ensure_tools; ensure_binfmt; ensure_netns
    [ -s "$TARBALL" ] || cmd_build >/dev/null
    local t0; t0=$(now)
    mkdir -p "$STATE_BASE"
    if [ "${1:-auto}" = auto ]; then
        # claim a free index: creating its state dir is atomic, so concurrent runs never share one;
        # the namespace name is global to the machine (runs with another state dir, other users),
        # so creating the namespace is part of the claim: an index whose namespace exists is taken
        local k claimed=0
        for k in $(seq 1 255); do
            board_vars "$k"
            mkdir "$STATE" 2>/dev/null || continue
            if ip netns add "$NS" 2>/dev/null; then claimed=1; break; fi
            rmdir "$STATE"
        done
        [ $claimed = 1 ] || { say "no free board index in $STATE_BASE (stop old boards with: $0 stop N)"; exit 1; }
        ip link del "$VH" 2>/dev/null || true
    else
        board_vars "$1"
        cmd_stop "$N" 2>/dev/null || true        # the caller owns index N: clear leftovers
        mkdir "$STATE"
        ip netns add "$NS"
    fi
    trap 'cmd_stop "$N" >/dev/null 2>&1' ERR
    mkdir -p "$ROOT"; chmod 755 "$STATE"
    tar -C "$ROOT" --numeric-owner -xzf "$TARBALL"
    local t_unpack; t_unpack=$(elapsed "$t0")
    local interp
    if ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        # a handler registered without fix-binary is looked up inside the chroot
        interp=$(awk '$1 == "interpreter" { print $2 }' /proc/sys/fs/binfmt_misc/qemu-aarch64)
        mkdir -p "$ROOT$(dirname "$interp")"; cp "$(readlink -f "$interp")" "$ROOT$interp"
    fi
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    fi
    # the board user (no password, but not "locked": UsePAM no refuses locked accounts)
    chroot "$ROOT" /usr/sbin/useradd -m -d /home/$BOARD_USER -s /bin/bash $BOARD_USER
    chroot "$ROOT" /usr/sbin/usermod -p '*' $BOARD_USER
    ssh-keygen -q -t ed25519 -N '' -C "arm64-board$N-host" -f "$ROOT/etc/ssh/board_host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -C "edgecompress-arm64-tests" -f "$STATE/id_ed25519"
    local uid gid
    uid=$(awk -F: -v u=$BOARD_USER '$1 == u { print $3 }' "$ROOT/etc/passwd")
    gid=$(awk -F: -v u=$BOARD_USER '$1 == u { print $4 }' "$ROOT/etc/passwd")
    install -d -m 700 -o "$uid" -g "$gid" "$ROOT/home/$BOARD_USER/.ssh"
    install -m 600 -o "$uid" -g "$gid" "$STATE/id_ed25519.pub" "$ROOT/home/$BOARD_USER/.ssh/authorized_keys"
    echo "$BOARD_IP $(cut -d' ' -f1,2 "$ROOT/etc/ssh/board_host_ed25519_key.pub")" > "$STATE/known_hosts"
    mkdir -p "$ROOT/run/sshd"; chmod 755 "$ROOT/run/sshd"
    cat > "$ROOT/etc/ssh/board_sshd_config" <<EOF
Port 22
ListenAddress $BOARD_IP
HostKey /etc/ssh/board_host_ed25519_key
PidFile /run/board_sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $BOARD_USER
Subsystem sftp internal-sftp
SetEnv OPENBLAS_CORETYPE=ARMV8 OPENBLAS_NUM_THREADS=1 EDGECOMPRESS_EMULATED=qemu-user ${EDGECOMPRESS_ARM64_SETENV:-}
ClientAliveInterval 5
ClientAliveCountMax 6
MaxSessions 32
LogLevel INFO
EOF
    mount -t proc proc "$ROOT/proc"
    mount --bind /dev "$ROOT/dev"
    # the namespace's veth pair and addresses (the namespace itself was created with the claim)
    ip link add "$VH" type veth peer name "$VB"
    ip link set "$VB" netns "$NS"
    ip addr add "$HOST_IP/24" dev "$VH"; ip link set "$VH" up
    ip -n "$NS" addr add "$BOARD_IP/24" dev "$VB"; ip -n "$NS" link set "$VB" up; ip -n "$NS" link set lo up
    chroot "$ROOT" /usr/sbin/sshd -t -f /etc/ssh/board_sshd_config
    ip netns exec "$NS" chroot "$ROOT" /usr/sbin/sshd -f /etc/ssh/board_sshd_config -E /var/log/board_sshd.log
    local i ok=0
    for i in $(seq 1 200); do
        if [ -s "$ROOT/run/board_sshd.pid" ] && timeout 2 bash -c "exec 3<>/dev/tcp/$BOARD_IP/22; head -c 4 <&3" 2>/dev/null | grep -q SSH-; then
            ok=1; break
        fi
        sleep 0.1
    done
    [ $ok = 1 ] || { say "sshd did not come up: $(tail -5 "$ROOT/var/log/board_sshd.log" 2>/dev/null)"; cmd_stop "$N"; exit 1; }
    cat > "$STATE/board.json" <<EOF
{"name": "arm64-board$N", "host": "$BOARD_IP", "port": 22, "user": "$BOARD_USER",
 "identity_file": "$STATE/id_ed25519", "known_hosts": "$STATE/known_hosts", "python": "/usr/bin/python3",
 "netns": "$NS", "root": "$ROOT", "state": "$STATE", "sshd_pid": $(cat "$ROOT/run/board_sshd.pid"),
 "emulated": true, "arch": "aarch64", "tarball": "$TARBALL", "unpack_s": $t_unpack, "start_s": $(elapsed "$t0")}
EOF
    trap - ERR
    say "board $N up at $BOARD_USER@$BOARD_IP (unpack ${t_unpack} s, start $(elapsed "$t0") s)"
    echo "$STATE/board.json"
}

cmd_status() {
    board_vars "${1:-0}"
    [ -s "$ROOT/run/board_sshd.pid" ] && kill -0 "$(cat "$ROOT/run/board_sshd.pid")" 2>/dev/null \
        && echo "up: $STATE/board.json" && return 0
    echo "down"; return 1
}

case "${1:-}" in
    build) cmd_build ;;
    start) cmd_start "${2:-auto}" ;;
    stop) cmd_stop "${2:-0}" ;;
    status) cmd_status "${2:-0}" ;;
    check) cmd_check ;;
    mirror) mirror ;;
    *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
