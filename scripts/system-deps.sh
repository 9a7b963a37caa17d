#!/usr/bin/env bash
# Make sure the system programs named as arguments are installed (Debian package names
# equal the program names for ffmpeg, espeak-ng and sox). Installs them with apt-get
# when they are missing and we may; otherwise says exactly what to install.
set -euo pipefail
missing=()
for program in "$@"; do
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
    if [ "$sudo" != "none" ]; then
        echo "installing ${missing[*]} with apt-get" >&2
        $sudo apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
        exit 0
    fi
fi
echo "spkd needs these programs, which are not installed: ${missing[*]}" >&2
case "$(uname -s)" in
    Darwin) echo "install them with: brew install ${missing[*]}" >&2 ;;
    *) echo "install them with your package manager, e.g.: sudo apt-get install ${missing[*]}" >&2 ;;
esac
exit 1
