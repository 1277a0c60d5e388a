#!/usr/bin/env bash
# The arm64 profile under emulation: same model package, same clips, same token ids as on x86?
#
#   bench/arm64_emulated.sh [WORK_DIR]          # as root (debootstrap, chroot, mount); default /work/arm64-emu
#
# 1. an arm64 Debian root (debootstrap, run through qemu-user-static and binfmt_misc) with python3,
#    g++ and cmake; the checkout is copied in and pip-installed into a venv there, so the C++
#    extension is compiled natively for aarch64 and only the runtime dependencies are installed;
# 2. whisper-base model packages exported on the x86 host (int8 and fp32) into WORK_DIR/packages;
# 3. the same fixtures transcribed greedily (beam 1, temperature 0) on x86 with --profile
#    $X86_PROFILE and inside the root with --profile arm64, as jsonl with segment token ids;
# 4. bench/arm64_compare.py compares the ids clip by clip; a summary goes to WORK_DIR/summary.txt.
#
# Each step is skipped when its result is already there (the root, a venv built from the same
# source files, an exported package), so a rerun only transcribes and compares again.
# Environment: PYTHON (x86 python with qasr_edge and its export extra; default python3),
# QASR_EDGE_HOME (x86 model cache), CLIPS, PRECISIONS, X86_PROFILE, QEMU_CPU, MIRROR.
# Needs: apt-get install -y qemu-user-static binfmt-support debootstrap
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(realpath -m "${1:-/work/arm64-emu}")
ROOT=$WORK/root
PYTHON=${PYTHON:-python3}
CLIPS=${CLIPS:-"en_weather.wav fr.wav"}
PRECISIONS=${PRECISIONS:-"int8 fp32"}
X86_PROFILE=${X86_PROFILE:-x86-64-avx512}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The CPU qemu emulates: a Raspberry Pi 5's (ARMv8.2, asimd + dot product), not qemu's default
# "max" with SVE/SME kernels that no Pi has.
QEMU_CPU=${QEMU_CPU:-cortex-a76}
SUITE=bookworm
DEBS=python3,python3-venv,python3-dev,g++,make,cmake,ninja-build,ca-certificates
# One clip per batch: dynamic int8 quantizes activations with one scale per tensor, so the clips
# that share a batch change each other's int8 tokens; a comparison across machines must fix that.
DECODE=(--beam-size 1 --temperature 0 --batch-size 1 --format jsonl)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'arm64_emulated: %s\n' "$*" >&2; exit 1; }

check_host() {
    [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mount need it)"
    for tool in debootstrap qemu-aarch64-static update-binfmts chroot; do
        command -v "$tool" >/dev/null || die "$tool missing: apt-get install -y qemu-user-static binfmt-support debootstrap"
    done
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then  # let the kernel run aarch64 binaries through qemu
        mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        update-binfmts --enable qemu-aarch64
    fi
}

make_root() {
    if [ -x "$ROOT/usr/bin/g++" ] && [ ! -e "$ROOT/debootstrap" ]; then
        log "arm64 root: $ROOT (already there)"
        return
    fi
    [ ! -e "$ROOT" ] || die "$ROOT is an unfinished root (an earlier debootstrap stopped): remove it and rerun"
    log "arm64 root: debootstrap $SUITE into $ROOT (slow under emulation)"
    debootstrap --arch=arm64 --variant=minbase --include="$DEBS" "$SUITE" "$ROOT" "$MIRROR"
}

MOUNTS=()
unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" || true; done
}
mount_root() {
    trap unmount_all EXIT
    mkdir -p "$ROOT/mnt/packages" "$WORK/packages"
    mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
    mount --bind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
    # No /sys: with it, onnxruntime's cpuinfo library finds the host's CPU list, then parses the x86
    # /proc/cpuinfo as ARM and crashes (SIGSEGV at import). Without it cpuinfo gives up with a
    # warning and onnxruntime reads the CPU features from the auxiliary vector (HWCAP) instead.
    mount --bind -o ro "$WORK/packages" "$ROOT/mnt/packages" && MOUNTS+=("$ROOT/mnt/packages")
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"                 # pip inside the root needs the network
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca.crt"  # and the host's certificates
}

in_root() {
    QEMU_CPU=$QEMU_CPU chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$QEMU_CPU" HOME=/root LANG=C.UTF-8 PATH=/opt/venv/bin:/usr/bin:/bin \
        PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 QASR_EDGE_HOME=/opt/qasr-home "$@"
}

# What the root needs from the checkout: the build inputs and the fixtures (tracked or new, not ignored).
source_files() {
    (cd "$REPO" && git ls-files -co --exclude-standard -- pyproject.toml CMakeLists.txt README.md csrc qasr_edge \
        profiles tests/fixtures | while read -r f; do [ -f "$f" ] && echo "$f"; done)
}

install_project() {
    local stamp
    stamp=$(cd "$REPO" && source_files | xargs sha256sum | sha256sum | cut -c1-16)
    if [ "$(cat "$ROOT/opt/qasr_edge.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "arm64 venv: /opt/venv has this checkout (source $stamp)"
        return
    fi
    log "arm64 venv: copying the checkout and building it natively (source $stamp)"
    rm -rf "$ROOT/opt/qasr_edge-src" && mkdir -p "$ROOT/opt/qasr_edge-src"
    (cd "$REPO" && source_files | tar -cf - -T -) | tar -xf - -C "$ROOT/opt/qasr_edge-src"
    [ -x "$ROOT/opt/venv/bin/pip" ] || in_root python3 -m venv /opt/venv
    in_root pip uninstall -q -y qasr_edge 2>/dev/null || true   # same version number, new source
    in_root pip install -q /opt/qasr_edge-src   # builds _core for aarch64; runtime dependencies only
    echo "$stamp" >"$ROOT/opt/qasr_edge.stamp"
}

export_packages() {
    local precision dir
    for precision in $PRECISIONS; do
        dir=$WORK/packages/whisper-base-$precision
        if [ -f "$dir/manifest.json" ]; then log "package: $dir (already there)"; continue; fi
        log "package: exporting whisper-base $precision on x86"
        (cd /tmp && "$PYTHON" -m qasr_edge.cli export whisper-base --output "$dir" --precision "$precision" --overwrite)
    done
}

transcribe_both() {
    local precision clip x86_files=() arm_files=() start
    for clip in $CLIPS; do
        x86_files+=("$REPO/tests/fixtures/$clip")
        arm_files+=("/opt/qasr_edge-src/tests/fixtures/$clip")
    done
    mkdir -p "$WORK/out"
    for precision in $PRECISIONS; do
        log "transcribe $precision on x86 (--profile $X86_PROFILE)"
        start=$SECONDS
        (cd /tmp && "$PYTHON" -m qasr_edge.cli transcribe --model "$WORK/packages/whisper-base-$precision" \
            --profile "$X86_PROFILE" "${DECODE[@]}" "${x86_files[@]}") >"$WORK/out/x86-$precision.jsonl"
        echo "$precision x86 $((SECONDS - start))" >>"$WORK/out/times"
        log "transcribe $precision inside the arm64 root (--profile arm64, emulated)"
        start=$SECONDS
        in_root qasr-edge transcribe --model "/mnt/packages/whisper-base-$precision" \
            --profile arm64 "${DECODE[@]}" "${arm_files[@]}" >"$WORK/out/arm64-$precision.jsonl"
        echo "$precision arm64 $((SECONDS - start))" >>"$WORK/out/times"
    done
}

summarize() {
    local precision status=0 t0=$1
    {
        echo "arm64 root: uname -m = $(in_root uname -m), $(in_root python3 --version)," \
            "onnxruntime $(in_root python -c 'import onnxruntime; print(onnxruntime.__version__)')," \
            "qemu $(qemu-aarch64-static --version | head -1 | awk '{print $3}') -cpu $QEMU_CPU"
        echo "            its /proc/cpuinfo has a \"$(in_root grep -m1 -oE '^(flags|Features)' /proc/cpuinfo)\" line" \
            "(x86 says \"flags\", ARM \"Features\")"
        echo "x86 host:   uname -m = $(uname -m), onnxruntime" \
            "$(cd /tmp && "$PYTHON" -c 'import onnxruntime; print(onnxruntime.__version__)'), profile $X86_PROFILE"
        echo "decoding:   ${DECODE[*]}; clips: $CLIPS"
        for precision in $PRECISIONS; do
            (cd /tmp && "$PYTHON" "$REPO/bench/arm64_compare.py" --label "$precision" \
                --tokenizer "$WORK/packages/whisper-base-$precision/tokenizer.json" \
                "$WORK/out/x86-$precision.jsonl" "$WORK/out/arm64-$precision.jsonl") || status=1
        done
        echo "wall seconds (transcribe, process start to end):" $(sed 's/$/;/' "$WORK/out/times")
        echo "total wall time of this run: $((SECONDS - t0)) s"
    } | tee "$WORK/summary.txt"
    return $status
}

main() {
    local t0=$SECONDS
    mkdir -p "$WORK" && rm -f "$WORK/out/times"
    check_host
    make_root
    mount_root
    install_project
    export_packages
    transcribe_both
    summarize "$t0"
}

main
