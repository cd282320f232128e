#!/usr/bin/env bash
# Builds a stand-in for the image's base where no registry can be pulled from, and imports it into Docker.
#
# The real base is apache/beam_python3.11_sdk (Debian bookworm + Python 3.11 + Beam + the SDK boot binary) and the
# flex-template launcher comes from Google's launcher image; neither can be pulled here. The stand-in is Debian
# bookworm made by debootstrap with Debian's Python 3.11 and venv, and two STUB files where those images hold
# Google's and Beam's binaries: /opt/apache/beam/boot and /opt/google/dataflow/python_template_launcher. The stubs
# only say they are stubs (exit 70): what those binaries do is checked in the cloud, not here. Pass the stand-in as
# both BASE_IMAGE and LAUNCHER_IMAGE (`make image-local` does).
#
# Usage: deploy/image/standin-base.sh [TAG]   (root, debootstrap and a running Docker daemon; ~2-4 minutes)
set -euo pipefail
tag=${1:-dcas-standin-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
root=$(mktemp -d /tmp/dcas-standin.XXXXXX)
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >&2

stub() {  # stub PATH WHAT
    mkdir -p "$(dirname "$root$1")"
    printf '#!/bin/sh\necho "stand-in base: %s is a stub here; the real binary comes from %s" >&2\nexit 70\n' \
        "$1" "$2" > "$root$1"
    chmod 755 "$root$1"
}
stub /opt/apache/beam/boot "apache/beam_python3.11_sdk"
stub /opt/google/dataflow/python_template_launcher "gcr.io/dataflow-templates-base/python311-template-launcher-base"

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
echo "dcas stand-in base: debootstrap bookworm $(date -u +%Y-%m-%d), $(chroot "$root" python3 --version)" \
    > "$root/etc/dcas-standin"
tar -C "$root" --numeric-owner -c . \
    | "$docker" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'LABEL org.dcas.standin=true' - "$tag" >&2
echo "$tag"
